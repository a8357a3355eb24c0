//! The parts of the OCI image spec (and Docker schema 2) a puller reads: indexes,
//! manifests, the image config, platform choice and chain IDs.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::store::Descriptor;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

/// A manifest blob: either a list of platform manifests or one image.
#[derive(Debug)]
pub enum Parsed {
    Index(Vec<(Descriptor, Option<Platform>)>),
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest or index; `what` names it in errors. `media_type` is what the
/// registry said, used when the document does not say itself.
pub fn parse_manifest(bytes: &[u8], media_type: &str, what: &str) -> Result<Parsed> {
    let invalid = |m: String| Error::InvalidArgument(format!("manifest {what}: {m}"));
    if DOCKER_SCHEMA1.contains(&media_type) {
        return Err(invalid(
            "Docker schema 1 manifests are not supported; push the image again with a current client".into(),
        ));
    }
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if raw.schema_version != 2 {
        return Err(invalid(format!(
            "schemaVersion {} is not supported",
            raw.schema_version
        )));
    }
    let kind = raw.media_type.as_deref().unwrap_or(media_type);
    let is_index = kind == OCI_INDEX || kind == DOCKER_LIST || raw.manifests.is_some();
    if is_index {
        let entries = raw.manifests.unwrap_or_default();
        return Ok(Parsed::Index(
            entries
                .into_iter()
                .map(|d| (descriptor(&d), d.platform))
                .collect(),
        ));
    }
    let config = raw
        .config
        .ok_or_else(|| invalid("it has no config descriptor".into()))?;
    Ok(Parsed::Image {
        config: descriptor(&config),
        layers: raw
            .layers
            .unwrap_or_default()
            .iter()
            .map(descriptor)
            .collect(),
    })
}

fn descriptor(raw: &RawDescriptor) -> Descriptor {
    Descriptor {
        media_type: raw.media_type.clone(),
        digest: raw.digest.clone(),
        size: raw.size,
    }
}

/// The platform this berth runs containers for.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: (architecture == "arm64").then(|| "v8".to_string()),
    }
}

/// Picks the manifest for `want` from an index, as containerd's platform matcher does:
/// os and architecture must match; a variant must match when both sides name one
/// (arm64's "v8" is the same as none).
pub fn choose_platform(
    entries: &[(Descriptor, Option<Platform>)],
    want: &Platform,
    what: &str,
) -> Result<Descriptor> {
    let normal = |v: &Option<String>| match v.as_deref() {
        Some("v8") | None => None,
        Some(v) => Some(v.to_string()),
    };
    let matches = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && (want.architecture != "arm64" || normal(&p.variant) == normal(&want.variant))
    };
    if let Some((d, _)) = entries
        .iter()
        .find(|(_, p)| p.as_ref().is_some_and(matches))
    {
        return Ok(d.clone());
    }
    let offered: Vec<String> = entries
        .iter()
        .filter_map(|(_, p)| p.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    Err(Error::NotFound(format!(
        "index {what} has no manifest for {}/{} (it has: {})",
        want.os,
        want.architecture,
        if offered.is_empty() {
            "no platforms".to_string()
        } else {
            offered.join(", ")
        }
    )))
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

pub fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfig> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("image config {what}: {e}")))
}

/// Chain IDs (OCI image spec): the first is the first diff ID; each next one is
/// sha256 of "<previous chain ID> <diff ID>".
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

/// The uid or user name an image runs as, from its config's `User` ("1000",
/// "nobody", "1000:1000", "app:staff").
pub fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or("");
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(ids[1], expected);
    }

    fn entry(arch: &str, variant: Option<&str>) -> (Descriptor, Option<Platform>) {
        (
            Descriptor {
                digest: format!("sha256:{arch}"),
                ..Default::default()
            },
            Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(String::from),
            }),
        )
    }

    #[test]
    fn platform_is_chosen_from_an_index() {
        let entries = vec![entry("arm64", Some("v8")), entry("amd64", None)];
        let amd64 = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(
            choose_platform(&entries, &amd64, "x").unwrap().digest,
            "sha256:amd64"
        );
        let arm = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(
            choose_platform(&entries, &arm, "x").unwrap().digest,
            "sha256:arm64"
        );
        let err = choose_platform(&entries[..1], &amd64, "idx").unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }

    #[test]
    fn manifests_are_classified() {
        let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:1","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert!(matches!(
            parse_manifest(index, OCI_INDEX, "i").unwrap(),
            Parsed::Index(v) if v.len() == 1
        ));
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:2","size":2},"layers":[]}"#;
        assert!(matches!(
            parse_manifest(image, DOCKER_MANIFEST, "m").unwrap(),
            Parsed::Image { .. }
        ));
        assert!(parse_manifest(b"{}", OCI_MANIFEST, "m").is_err());
        assert!(parse_manifest(b"garbage", OCI_MANIFEST, "m").is_err());
        let err = parse_manifest(image, DOCKER_SCHEMA1[0], "m").unwrap_err();
        assert!(err.to_string().contains("schema 1"));
    }

    #[test]
    fn users_are_split() {
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:50"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".to_string()));
        assert_eq!(user_of(""), (None, String::new()));
    }
}
