//! Which hosts may receive a pull's credentials. The rules, in order:
//!
//! 1. **Credentials are bound to one registry**: `AuthConfig.server_address`
//!    when it is set, normalised (scheme, path and trailing `/` dropped,
//!    lowercased, Docker Hub's aliases `index.docker.io`,
//!    `registry-1.docker.io` and `registry.hub.docker.com` read as
//!    `docker.io`), else the image's registry.
//! 2. **A host gets them only if it stands for that registry**: the upstream
//!    (`server` of hosts.toml, or the default) when the binding names the
//!    image's registry or the upstream's own host; a mirror only when its
//!    `[host."..."]` table says `send_credentials = true` *and* the binding
//!    names the image's registry or the mirror's own host. Every other host
//!    is asked anonymously.
//! 3. **Never in the clear to another host**: over plain `http://` the
//!    credentials go only to the host they are bound to, or to loopback
//!    (hosts.toml refuses `send_credentials` and `token_realms` on plain-http
//!    hosts elsewhere).
//! 4. **Token servers**: a Bearer challenge whose realm is on the same origin
//!    as the registry host gets the Basic credentials (or the identity token);
//!    a realm elsewhere gets them only when the host lists it in
//!    `token_realms` (Docker Hub's `auth.docker.io` is known), and is
//!    otherwise asked for an anonymous token.
//! 5. **Redirects** (blobs are often served from object storage) drop
//!    `Authorization` when the host or port changes: reqwest's redirect
//!    policy, the same rule as Go's net/http that containerd relies on.
//!
//! containerd differs in 2 and 4: without `server_address` it sends the
//! credentials to every host, mirrors included, and to any token realm.

use reqwest::Url;

use super::RegistryError;
use crate::image::hosts::{DOCKER_HUB_HOST, RegistryHost, is_loopback, origin_of};

/// The names a `server_address` may give Docker Hub (docker's config keys it
/// as `https://index.docker.io/v1/`).
const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    DOCKER_HUB_HOST,
    "registry.hub.docker.com",
];
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's token server, on another host than its registry.
const DOCKER_HUB_TOKEN_ORIGIN: &str = "https://auth.docker.io:443";

/// The registry a pull's credentials are for.
#[derive(Debug, Clone)]
pub(super) struct Binding {
    /// The image's registry, normalised ("docker.io", "127.0.0.1:5000").
    registry: String,
    /// The registry the credentials are for, normalised.
    bound: String,
}

impl Binding {
    /// `server_address` is the credentials' (empty: the image's registry).
    pub(super) fn new(registry: &str, server_address: &str) -> Result<Binding, RegistryError> {
        let registry = normalise_host(registry);
        let bound = if server_address.is_empty() {
            registry.clone()
        } else {
            normalise_server_address(server_address)?
        };
        Ok(Binding { registry, bound })
    }

    /// The registry the credentials are for, for messages.
    pub(super) fn bound(&self) -> &str {
        &self.bound
    }

    /// Whether `host` may receive the credentials (rules 2 and 3).
    pub(super) fn admits(&self, host: &RegistryHost, is_upstream: bool) -> bool {
        if !is_upstream && !host.send_credentials {
            return false;
        }
        let name = normalise_host(&host.host);
        let stands_for_it = self.bound == self.registry || self.bound == name;
        let private_channel =
            host.scheme == "https" || is_loopback(&host.host) || name == self.bound;
        stands_for_it && private_channel
    }
}

/// Whether the token server at `realm` may receive the credentials of
/// `host`, whose origin is `host_origin` (rule 4).
pub(super) fn realm_admits(host: &RegistryHost, host_origin: &str, realm: &Url) -> bool {
    let Some(realm_origin) = origin_of(realm) else {
        return false;
    };
    realm_origin == host_origin
        || (host.host == DOCKER_HUB_HOST && realm_origin == DOCKER_HUB_TOKEN_ORIGIN)
        || host.token_realms.contains(&realm_origin)
}

/// "https://Index.Docker.io/v1/" → "docker.io"; "127.0.0.1:5000" stays.
pub(super) fn normalise_server_address(address: &str) -> Result<String, RegistryError> {
    let invalid = |message: String| RegistryError::Invalid {
        what: "auth.server_address".into(),
        message,
    };
    let trimmed = address.trim();
    let rest = match trimmed.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(invalid(format!(
                "{address:?}: scheme {scheme:?} is not http or https"
            )));
        }
        None => trimmed,
    };
    let host = rest.split('/').next().unwrap_or_default();
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || "@?#\\".contains(c);
    if host.is_empty() || host.contains(bad_char) {
        return Err(invalid(format!("{address:?} names no registry host")));
    }
    Ok(normalise_host(host))
}

/// Lowercased, with Docker Hub's aliases folded into "docker.io".
fn normalise_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_string()
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(url: &str, send_credentials: bool, token_realms: &[&str]) -> RegistryHost {
        let (scheme, host) = url.split_once("://").expect("scheme");
        RegistryHost {
            scheme: scheme.into(),
            host: host.into(),
            path: "/v2".into(),
            capabilities: Vec::new(),
            skip_verify: false,
            ca: Vec::new(),
            client: Vec::new(),
            header: Vec::new(),
            send_credentials,
            token_realms: token_realms.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn binding(registry: &str, server_address: &str) -> Binding {
        Binding::new(registry, server_address).expect("binding")
    }

    #[test]
    fn server_addresses_are_normalised() {
        for (given, want) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("Docker.IO", "docker.io"),
            ("http://127.0.0.1:5000", "127.0.0.1:5000"),
            ("quay.io/some/path", "quay.io"),
            (" registry.example:443/ ", "registry.example:443"),
        ] {
            assert_eq!(normalise_server_address(given).expect(given), want);
        }
        for bad in ["", "https://", "ftp://x", "a b", "user@host", "/path"] {
            match normalise_server_address(bad) {
                Err(RegistryError::Invalid { what, .. }) => assert_eq!(what, "auth.server_address"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_upstream_gets_credentials_bound_to_its_registry() {
        let upstream = host(&format!("https://{DOCKER_HUB_HOST}"), false, &[]);
        assert!(binding("docker.io", "").admits(&upstream, true));
        assert!(binding("docker.io", "https://index.docker.io/v1/").admits(&upstream, true));
        assert!(!binding("docker.io", "quay.io").admits(&upstream, true));
        // A configured server stands for the registry it is configured for.
        let server = host("https://proxy.internal", false, &[]);
        assert!(binding("docker.io", "docker.io").admits(&server, true));
        assert!(binding("docker.io", "proxy.internal").admits(&server, true));
        assert!(!binding("docker.io", "other.internal").admits(&server, true));
    }

    #[test]
    fn mirrors_get_credentials_only_when_they_opt_in() {
        let mirror = host("https://mirror.example", false, &[]);
        assert!(!binding("docker.io", "").admits(&mirror, false));
        assert!(!binding("docker.io", "mirror.example").admits(&mirror, false));
        let opted_in = host("https://mirror.example", true, &[]);
        assert!(binding("docker.io", "").admits(&opted_in, false));
        assert!(binding("docker.io", "mirror.example").admits(&opted_in, false));
        assert!(!binding("docker.io", "quay.io").admits(&opted_in, false));
    }

    #[test]
    fn plain_http_only_to_the_bound_host_or_loopback() {
        let same = host("http://10.0.0.5:5000", false, &[]);
        assert!(binding("10.0.0.5:5000", "").admits(&same, true));
        let other = host("http://proxy.internal:5000", false, &[]);
        assert!(!binding("10.0.0.5:5000", "").admits(&other, true));
        let local = host("http://127.0.0.1:5001", true, &[]);
        assert!(binding("10.0.0.5:5000", "").admits(&local, false));
    }

    #[test]
    fn token_realms_on_other_hosts_need_configuring() {
        let url = |s: &str| Url::parse(s).expect("url");
        let registry = host("https://registry.example", false, &[]);
        let origin = "https://registry.example:443";
        assert!(realm_admits(
            &registry,
            origin,
            &url("https://registry.example/token")
        ));
        assert!(realm_admits(
            &registry,
            origin,
            &url("https://REGISTRY.example:443/t")
        ));
        assert!(!realm_admits(
            &registry,
            origin,
            &url("https://auth.example/token")
        ));
        assert!(!realm_admits(
            &registry,
            origin,
            &url("https://registry.example:8443/t")
        ));
        assert!(!realm_admits(
            &registry,
            origin,
            &url("http://registry.example/token")
        ));
        let trusting = host(
            "https://registry.example",
            false,
            &["https://auth.example:443"],
        );
        assert!(realm_admits(
            &trusting,
            origin,
            &url("https://auth.example/token")
        ));
        let hub = host(&format!("https://{DOCKER_HUB_HOST}"), false, &[]);
        let hub_origin = format!("https://{DOCKER_HUB_HOST}:443");
        assert!(realm_admits(
            &hub,
            &hub_origin,
            &url("https://auth.docker.io/token")
        ));
        assert!(!realm_admits(
            &hub,
            &hub_origin,
            &url("http://auth.docker.io/token")
        ));
    }
}
