//! The parts of an image's config a container's spec needs.

use serde::Deserialize;

use super::ImageService;
use crate::domain::ImageConfigView;
use crate::error::{Error, Result};
use crate::store::ImageRecord;

/// Image configs are small; this only guards against garbage.
const MAX_IMAGE_CONFIG: u64 = 8 << 20;

impl ImageService {
    /// What a container's spec needs from `image`'s config blob.
    pub fn config_view(&self, image: &ImageRecord) -> Result<ImageConfigView> {
        let digest = &image.config.digest;
        parse(
            &self.content_store().read(digest, MAX_IMAGE_CONFIG)?,
            digest,
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Document {
    config: Option<Fields>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Fields {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    stop_signal: Option<String>,
    /// Docker writes `{"/path": {}}`; the values mean nothing.
    volumes: Option<std::collections::BTreeMap<String, serde::de::IgnoredAny>>,
}

/// Reads an image config blob (`application/vnd.oci.image.config.v1+json`).
pub fn parse(bytes: &[u8], digest: &str) -> Result<ImageConfigView> {
    let doc: Document = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("image config {digest}: {e}")))?;
    let f = doc.config.unwrap_or_default();
    Ok(ImageConfigView {
        entrypoint: f.entrypoint.unwrap_or_default(),
        cmd: f.cmd.unwrap_or_default(),
        env: f.env.unwrap_or_default(),
        working_dir: f.working_dir.unwrap_or_default(),
        user: f.user.unwrap_or_default(),
        stop_signal: f.stop_signal.unwrap_or_default(),
        volumes: f.volumes.unwrap_or_default().into_keys().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_missing_fields_are_empty() {
        let view = parse(
            br#"{"config":{"Entrypoint":null,"Cmd":["sh"],"Env":["A=1"],"User":"1000","StopSignal":"SIGQUIT"}}"#,
            "d",
        )
        .unwrap();
        assert_eq!(view.cmd, vec!["sh"]);
        assert!(view.entrypoint.is_empty());
        assert_eq!(view.stop_signal, "SIGQUIT");
        assert_eq!(parse(b"{}", "d").unwrap(), ImageConfigView::default());
        assert!(parse(b"nope", "d").is_err());
    }
}
