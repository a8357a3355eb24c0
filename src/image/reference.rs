//! Image references, normalised the way containerd's `ParseDockerRef` (and so
//! the kubelet) does: `busybox` means `docker.io/library/busybox:latest`.
//!
//! Grammar (distribution/reference):
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ domain "/" ] path-component [ "/" path-component ]*
//! domain    := host [ ":" port ]          host: DNS-ish name, IPv4 or "[" IPv6 "]"
//! ```

use std::fmt;

const DEFAULT_REGISTRY: &str = "docker.io";
/// The Docker Hub's historical name; references using it mean `docker.io`.
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// Maximum length of `registry/repository` (distribution's NameTotalLengthMax).
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

/// A reference that does not parse is the request's fault.
impl From<ReferenceError> for crate::error::Error {
    fn from(e: ReferenceError) -> Self {
        crate::error::Error::InvalidArgument(e.to_string())
    }
}

impl Reference {
    /// Parses and normalises `s`. A reference with both a tag and a digest
    /// keeps only the digest (the digest is what gets pulled); one with
    /// neither gets the tag `latest`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        parse_reference(s).map_err(|reason| ReferenceError {
            reference: s.to_string(),
            reason,
        })
    }

    /// The repository name including the registry: "docker.io/library/busybox".
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag or digest to fetch: the digest if present, else the tag.
    pub fn object(&self) -> &str {
        // `parse` always sets one of the two; the fields are public, though,
        // so fall back to the tag a reference without either would mean.
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.digest, &self.tag) {
            (Some(digest), _) => write!(f, "@{digest}"),
            (None, Some(tag)) => write!(f, ":{tag}"),
            (None, None) => Ok(()),
        }
    }
}

fn parse_reference(s: &str) -> Result<Reference, String> {
    if s.is_empty() {
        return Err("empty reference".into());
    }
    if looks_like_image_id(s) {
        return Err("looks like an image id".into());
    }
    // Neither a name nor a tag may contain '@', so the first one starts the digest.
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((name, digest)) => (name, Some(validate_digest(digest)?)),
        None => (s, None),
    };
    let (registry, remainder) = split_registry(name_and_tag);
    // The registry is split off already, so a ':' left can only start the tag.
    let (repository, tag) = match remainder.split_once(':') {
        Some((repository, tag)) => (repository, Some(validate_tag(tag)?)),
        None => (remainder.as_str(), None),
    };
    validate_registry(&registry)?;
    validate_repository(repository)?;
    if registry.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "name is longer than {NAME_TOTAL_LENGTH_MAX} characters"
        ));
    }
    // containerd's ParseDockerRef: a digest pins the content, so a tag next
    // to it is dropped; neither means "latest".
    let tag = match (&digest, tag) {
        (Some(_), _) => None,
        (None, Some(tag)) => Some(tag.to_string()),
        (None, None) => Some(DEFAULT_TAG.to_string()),
    };
    Ok(Reference {
        registry,
        repository: repository.to_string(),
        tag,
        digest: digest.map(str::to_string),
    })
}

/// A bare 64-hex id or `sha256:<64 hex>`: the CRI caller treats these as
/// image ids, and distribution refuses the first as a repository name too.
fn looks_like_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    hex.len() == 64 && hex.bytes().all(is_lower_hex)
}

/// Splits `name[:tag]` into the registry and the rest, normalising the
/// registry and Docker Hub's `library/` namespace (distribution's
/// splitDockerDomain).
fn split_registry(name: &str) -> (String, String) {
    let (registry, remainder) = match name.split_once('/') {
        // A single component ("busybox:1.36") is always a Docker Hub name,
        // even "localhost" or "example.com".
        None => (DEFAULT_REGISTRY, name),
        Some((first, rest)) if is_registry_component(first) => {
            if first == LEGACY_DEFAULT_REGISTRY {
                (DEFAULT_REGISTRY, rest)
            } else {
                (first, rest)
            }
        }
        Some(_) => (DEFAULT_REGISTRY, name),
    };
    let remainder = if registry == DEFAULT_REGISTRY && !remainder.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remainder}")
    } else {
        remainder.to_string()
    };
    (registry.to_string(), remainder)
}

/// Whether the first `/`-separated component names a registry rather than
/// a Docker Hub namespace. Uppercase counts too: namespaces must be
/// lowercase, so distribution takes such a component for a host name.
fn is_registry_component(first: &str) -> bool {
    first == "localhost"
        || first.contains(['.', ':'])
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn validate_digest(digest: &str) -> Result<&str, String> {
    let malformed = || format!("digest {digest:?} is malformed (want sha256:<64 hex digits>)");
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(malformed)?;
    if algorithm != "sha256" {
        if !is_digest_algorithm(algorithm) {
            return Err(malformed());
        }
        return Err(format!(
            "unsupported digest algorithm {algorithm:?} (only sha256 is supported)"
        ));
    }
    if encoded.len() != 64 || !encoded.bytes().all(is_lower_hex) {
        return Err(format!(
            "digest {digest:?} is not sha256 followed by 64 lowercase hex digits"
        ));
    }
    Ok(digest)
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*`, loosely: enough to
/// tell "an algorithm we do not support" from garbage.
fn is_digest_algorithm(algorithm: &str) -> bool {
    algorithm
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_+.".contains(&b))
}

/// Tags: `[\w][\w.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<&str, String> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = match tag.as_bytes() {
        [first, rest @ ..] => {
            is_word(*first)
                && tag.len() <= TAG_LENGTH_MAX
                && rest.iter().all(|&b| is_word(b) || b == b'.' || b == b'-')
        }
        [] => false,
    };
    if valid {
        Ok(tag)
    } else {
        Err(format!(
            "tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ))
    }
}

/// `host[:port]`, host being a DNS-like name, a dotted IPv4 address or a
/// bracketed IPv6 address.
fn validate_registry(registry: &str) -> Result<(), String> {
    let invalid = || format!("registry {registry:?} is not a valid host[:port]");
    let (host, port) = split_host_port(registry).ok_or_else(invalid)?;
    let host_ok = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').is_some_and(is_ipv6_text),
        None => host.split('.').all(is_domain_component),
    };
    if !host_ok {
        return Err(invalid());
    }
    match port {
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) || p.is_empty() => Err(invalid()),
        // A TCP port: what does not fit in 1..=65535 names no registry (it
        // reached the dialer before, and came back as Unavailable).
        Some(p) if !p.parse::<u16>().is_ok_and(|n| n > 0) => Err(format!(
            "registry {registry:?}: port {p} is not a TCP port (1-65535)"
        )),
        _ => Ok(()),
    }
}

/// Splits `host[:port]`; `None` when a bracketed IPv6 host is not closed.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if s.starts_with('[') {
        let end = s.find(']')? + 1;
        let (host, rest) = s.split_at(end);
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    Some(match s.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    })
}

fn is_ipv6_text(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        }
        _ => false,
    }
}

fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name {repository:?} must be lowercase"));
    }
    match repository.split('/').find(|c| !is_path_component(c)) {
        Some(bad) => Err(format!(
            "repository path component {bad:?} must match [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
        )),
        None => Ok(()),
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`: runs of lowercase letters and
/// digits joined by one '.', one or two '_', or any number of '-'.
fn is_path_component(c: &str) -> bool {
    let is_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut rest = c.as_bytes();
    loop {
        let alnum_len = rest.iter().take_while(|b| is_alnum(b)).count();
        if alnum_len == 0 {
            return false;
        }
        rest = &rest[alnum_len..];
        let sep_len = rest.iter().take_while(|b| !is_alnum(b)).count();
        if sep_len == 0 {
            return true;
        }
        let separator_ok = match &rest[..sep_len] {
            b"." | b"_" | b"__" => true,
            sep => sep.iter().all(|&b| b == b'-'),
        };
        if !separator_ok {
            return false;
        }
        rest = &rest[sep_len..];
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

    fn parsed(s: &str) -> Reference {
        match Reference::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn reason(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => panic!("{s:?} should not parse, got {r:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn normalises_like_containerd() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("index.docker.io/foo/bar", "docker.io/foo/bar:latest"),
            ("dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest"),
            ("dmcgowan/myapp/sub", "docker.io/dmcgowan/myapp/sub:latest"),
            ("quay.io/a/b/c:t", "quay.io/a/b/c:t"),
            ("quay.io/single", "quay.io/single:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost:5000/x:v1", "localhost:5000/x:v1"),
            ("example:5000/x", "example:5000/x:latest"),
            ("[::1]:5000/x:t", "[::1]:5000/x:t"),
            ("[2001:db8::1]/x", "[2001:db8::1]/x:latest"),
            ("Example.COM/x", "Example.COM/x:latest"),
            // A single component is a Docker Hub name even if it looks like a host.
            ("localhost", "docker.io/library/localhost:latest"),
            ("localhost:5000", "docker.io/library/localhost:5000"),
            ("x/a-b--c.d__e_f", "docker.io/x/a-b--c.d__e_f:latest"),
            (
                "busybox:Latest_1.0-rc",
                "docker.io/library/busybox:Latest_1.0-rc",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parsed(input).to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn digest_references() {
        let r = parsed(&format!("127.0.0.1:5000/x@{DIGEST}"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "x");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        assert_eq!(r.object(), DIGEST);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/x@{DIGEST}"));

        // Tag and digest: only the digest is kept.
        let r = parsed(&format!("x:t@{DIGEST}"));
        assert_eq!(r.name(), "docker.io/library/x");
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("docker.io/library/x@{DIGEST}"));
    }

    #[test]
    fn fields_and_accessors() {
        let r = parsed("quay.io/a/b/c:t");
        assert_eq!(
            r,
            Reference {
                registry: "quay.io".into(),
                repository: "a/b/c".into(),
                tag: Some("t".into()),
                digest: None,
            }
        );
        assert_eq!(r.name(), "quay.io/a/b/c");
        assert_eq!(r.object(), "t");
    }

    #[test]
    fn rejects_invalid_references() {
        let cases = [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("docker.io/Busybox", "lowercase"),
            ("quay.io/A/b", "lowercase"),
            ("a:b:c", "tag"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox@", "malformed"),
            ("busybox@sha512:abcd", "unsupported digest algorithm"),
            ("busybox@sha256:abcd", "64 lowercase hex"),
            (
                "busybox@sha256:7CC4B5AEFD1D0CADF8D97D4350462BA51C694EBCA145B08D7D41B41ACC8DB5AA",
                "64",
            ),
            ("busybox@@sha256:x", "malformed"),
            ("/busybox", "path component"),
            ("busybox/", "path component"),
            ("a//b", "path component"),
            ("a/b_-c", "path component"),
            ("a/b...c", "path component"),
            ("a/b___c", "path component"),
            ("a/.b", "path component"),
            ("a/b.", "path component"),
            ("-a.com/b", "registry"),
            ("a-.com/b", "registry"),
            ("a..com/b", "registry"),
            ("a.com:/b", "registry"),
            ("a.com:50x/b", "registry"),
            ("127.0.0.1:99999/b", "port 99999 is not a TCP port"),
            ("a.com:0/b", "port 0"),
            ("localhost:65536/b", "port 65536"),
            ("[::1/b", "registry"),
            ("[::1]x/b", "registry"),
            ("[]:5000/b", "registry"),
            ("a.com:1:2/b", "registry"),
            ("a b", "path component"),
        ];
        for (input, want) in cases {
            let got = reason(input);
            assert!(
                got.contains(want),
                "{input:?}: reason {got:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn rejects_image_ids() {
        let hex = &DIGEST["sha256:".len()..];
        assert_eq!(reason(hex), "looks like an image id");
        assert_eq!(reason(DIGEST), "looks like an image id");
        // 63 or 65 hex digits are names (and a tag) like any other.
        assert_eq!(
            parsed(&hex[1..]).to_string(),
            format!("docker.io/library/{}:latest", &hex[1..])
        );
    }

    #[test]
    fn length_limits() {
        let long = format!("quay.io/{}", "a".repeat(255 - "quay.io/".len()));
        assert!(Reference::parse(&long).is_ok());
        assert!(reason(&format!("{long}a")).contains("longer than 255"));
        // The implicit "docker.io/library/" counts.
        let hub = "a".repeat(255 - "docker.io/library/".len());
        assert!(Reference::parse(&hub).is_ok());
        assert!(reason(&format!("{hub}b")).contains("longer than 255"));

        let tag = "t".repeat(128);
        assert!(Reference::parse(&format!("x:{tag}")).is_ok());
        assert!(reason(&format!("x:{tag}t")).contains("tag"));
    }

    #[test]
    fn error_display_names_the_reference() {
        let err = match Reference::parse("a:b:c") {
            Err(e) => e,
            Ok(r) => panic!("parsed {r:?}"),
        };
        assert!(
            err.to_string()
                .starts_with("invalid image reference \"a:b:c\": ")
        );
    }

    #[test]
    fn object_defaults_to_latest_for_hand_built_references() {
        let r = Reference {
            registry: "docker.io".into(),
            repository: "library/x".into(),
            tag: None,
            digest: None,
        };
        assert_eq!(r.object(), "latest");
        assert_eq!(r.to_string(), "docker.io/library/x");
    }
}
