use super::auth::parse_token;
use super::blob::content_range_start;
use super::challenge::{Challenge, parse_challenges};
use super::endpoint::usefulness;
use super::manifest::{MANIFEST_ACCEPT, manifest_media_type, sha256_digest};
use super::*;
use crate::image::hosts::Capability;
use crate::image::oci::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::stream::TryStreamExt;
use reqwest::header::{self, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: u64 = 1 << 20;

fn http_host(addr: &str, capabilities: &[Capability]) -> RegistryHost {
    RegistryHost {
        scheme: "http".into(),
        host: addr.into(),
        path: "/v2".into(),
        capabilities: capabilities.to_vec(),
        skip_verify: false,
        ca: Vec::new(),
        client: Vec::new(),
        header: Vec::new(),
        send_credentials: false,
        token_realms: Vec::new(),
    }
}

/// The stall timeout of tests that are not about it.
const STALL: Duration = Duration::from_secs(30);

/// A client for the registry that the last of `hosts` is.
fn new_client(
    hosts: Vec<RegistryHost>,
    repository: &str,
    credentials: Option<Credentials>,
) -> Result<RegistryClient, RegistryError> {
    let registry = hosts.last().map(|h| h.host.clone()).unwrap_or_default();
    RegistryClient::new(&registry, hosts, repository, credentials, STALL)
}

const ALL: [Capability; 3] = [Capability::Pull, Capability::Resolve, Capability::Push];

fn user_pass(user: &str, pass: &str) -> Option<Credentials> {
    Some(Credentials {
        username: user.into(),
        password: pass.into(),
        ..Credentials::default()
    })
}

async fn collect(blob: BlobResponse) -> Vec<u8> {
    let chunks: Vec<Bytes> = blob.stream.try_collect().await.expect("blob stream");
    chunks.concat()
}

/// A port nothing listens on (for a host that is down).
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    addr
}

// ---- WWW-Authenticate ----

fn challenge(scheme: &str, params: &[(&str, &str)]) -> Challenge {
    Challenge {
        scheme: scheme.into(),
        params: params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn parses_docker_hub_bearer_challenge() {
    let got = parse_challenges(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
    );
    assert_eq!(
        got,
        [challenge(
            "Bearer",
            &[
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/busybox:pull"),
            ]
        )]
    );
    assert_eq!(got[0].param("service"), Some("registry.docker.io"));
    assert!(got[0].is("bearer"));
}

#[test]
fn parses_challenge_variants() {
    assert_eq!(
        parse_challenges(r#"Basic realm="test""#),
        [challenge("Basic", &[("realm", "test")])]
    );
    // Several challenges, unquoted values, odd spacing and case, commas in quotes.
    assert_eq!(
        parse_challenges(
            r#"Basic realm="a" ,  bearer Realm = "https://x/t" , service=svc,scope="repository:a:pull,push""#
        ),
        [
            challenge("Basic", &[("realm", "a")]),
            challenge(
                "bearer",
                &[
                    ("realm", "https://x/t"),
                    ("service", "svc"),
                    ("scope", "repository:a:pull,push")
                ]
            ),
        ]
    );
    assert_eq!(
        parse_challenges(r#"Bearer realm="a\"b\\c",x="""#),
        [challenge("Bearer", &[("realm", "a\"b\\c"), ("x", "")])]
    );
    assert_eq!(parse_challenges("Bearer"), [challenge("Bearer", &[])]);
    assert_eq!(
        parse_challenges(r#"Bearer realm="unterminated"#),
        [challenge("Bearer", &[("realm", "unterminated")])]
    );
    assert_eq!(parse_challenges(""), []);
    assert_eq!(parse_challenges(" , "), []);
    // token68 forms and junk must not panic; the scheme still parses.
    assert_eq!(parse_challenges("Negotiate abc==")[0].scheme, "Negotiate");
    assert_eq!(parse_challenges("=== \"")[..], []);
}

// ---- credentials ----

fn from_cri(
    username: &str,
    password: &str,
    auth: &str,
    identity: &str,
    token: &str,
) -> Option<Credentials> {
    Credentials::from_cri(username, password, auth, identity, token, "").expect("valid credentials")
}

#[test]
fn credentials_from_cri() {
    assert!(from_cri("", "", "", "", "").is_none());

    let c = from_cri("user", "pass", &STANDARD.encode("other:x"), "", "").expect("some");
    assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pass"));

    let c = from_cri("", "", &STANDARD.encode("user:pa:ss"), "", "").expect("some");
    assert_eq!(
        (c.username.as_str(), c.password.as_str()),
        ("user", "pa:ss")
    );

    // Missing padding and NULs left by credential helpers are tolerated.
    let unpadded = STANDARD.encode("ab:c").trim_end_matches('=').to_string();
    assert_ne!(unpadded, STANDARD.encode("ab:c"));
    let c = from_cri("", "", &unpadded, "", "").expect("some");
    assert_eq!((c.username.as_str(), c.password.as_str()), ("ab", "c"));
    let c = from_cri("", "", &STANDARD.encode("u:p\0\0"), "", "").expect("some");
    assert_eq!(c.password, "p");

    let c = from_cri("", "", "", "refresh", "").expect("some");
    assert_eq!(c.identity_token, "refresh");
    assert!(c.basic().is_none());
    let c = from_cri("", "", "", "", "bearer").expect("some");
    assert_eq!(c.registry_token, "bearer");
}

#[test]
fn bad_auth_is_an_error_that_does_not_leak_it() {
    for auth in ["not base64!!", &STANDARD.encode("no-colon-secret")] {
        match Credentials::from_cri("", "", auth, "", "", "") {
            Err(e @ RegistryError::Invalid { .. }) => {
                let message = e.to_string();
                assert!(
                    !message.contains(auth) && !message.contains("secret"),
                    "{message}"
                );
            }
            other => panic!("{auth}: {other:?}"),
        }
    }
}

#[test]
fn credentials_debug_is_redacted() {
    let c = Credentials {
        username: "user".into(),
        password: "hunter2".into(),
        identity_token: "id-secret".into(),
        registry_token: String::new(),
        server_address: String::new(),
    };
    let debug = format!("{c:?}");
    assert!(
        debug.contains("user") && !debug.contains("hunter2") && !debug.contains("id-secret"),
        "{debug}"
    );
}

#[test]
fn token_responses() {
    assert_eq!(
        parse_token(br#"{"token":"a","access_token":"b"}"#).as_deref(),
        Some("a")
    );
    assert_eq!(
        parse_token(br#"{"access_token":"b","expires_in":300}"#).as_deref(),
        Some("b")
    );
    assert_eq!(parse_token(br#"{"token":""}"#), None);
    assert_eq!(parse_token(b"nope"), None);
}

// ---- manifests ----

#[test]
fn manifest_accept_header() {
    let accepted: Vec<&str> = MANIFEST_ACCEPT.split(',').map(str::trim).collect();
    assert_eq!(
        accepted,
        [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST]
    );
    assert!(HeaderValue::from_str(MANIFEST_ACCEPT).is_ok());
}

#[test]
fn manifest_media_type_sources() {
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{}}"#;
    assert_eq!(manifest_media_type(Some(OCI_INDEX), body), OCI_INDEX);
    assert_eq!(
        manifest_media_type(Some("application/json"), body),
        DOCKER_MANIFEST
    );
    assert_eq!(
        manifest_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
        OCI_INDEX
    );
    assert_eq!(
        manifest_media_type(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
        OCI_MANIFEST
    );
    assert_eq!(
        manifest_media_type(Some("text/plain"), b"junk"),
        "text/plain"
    );
    assert_eq!(manifest_media_type(None, b"junk"), "");
}

#[test]
fn objects_and_repositories_are_checked() {
    let digest = format!("sha256:{}", "a".repeat(64));
    assert!(check_object("m", &digest, true).is_ok());
    assert!(check_object("m", "latest", false).is_ok());
    for (object, by_digest) in [
        ("sha256:abc", true),
        ("sha512:abc", true),
        ("../x", false),
        ("", false),
        ("a/b", false),
    ] {
        assert!(check_object("m", object, by_digest).is_err(), "{object}");
    }
    assert!(is_repository_name("library/busybox"));
    assert!(is_repository_name("a/b-c/d_e.f"));
    for bad in ["", "a//b", "../x", "A", "a?b", "a b"] {
        assert!(!is_repository_name(bad), "{bad}");
    }
    let host = http_host("127.0.0.1:1", &ALL);
    assert!(new_client(vec![host], "../etc", None).is_err());
    assert!(new_client(Vec::new(), "a", None).is_err());
}

#[test]
fn content_ranges_and_error_ranking() {
    assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
    assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
    assert_eq!(content_range_start("items 1-2/3"), None);

    let not_found = RegistryError::NotFound { what: "m".into() };
    let transport = RegistryError::Transport {
        url: "u".into(),
        message: "m".into(),
    };
    assert!(usefulness(&not_found, true) > usefulness(&transport, false));
    assert!(usefulness(&transport, true) > usefulness(&not_found, false));
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let client = new_client(vec![http_host("127.0.0.1:1", &ALL)], "a", None).expect("client");
    assert_send(&client.fetch_manifest("latest", 1));
    assert_send(&client.fetch_blob("sha256:00", 0));
}

#[tokio::test]
async fn hosts_without_the_capability_are_not_asked() {
    let pull_only = http_host(&closed_port(), &[Capability::Pull]);
    let client = new_client(vec![pull_only], "a", None).expect("client");
    match client.fetch_manifest("latest", LIMIT).await {
        Err(RegistryError::Invalid { what, message }) => {
            assert!(what.contains("a:latest"), "{what}");
            assert!(message.contains("resolve"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

// ---- a real registry: Debian's docker-registry (distribution 2.8) ----

/// A `docker-registry` on a loopback port, killed on drop.
struct TestRegistry {
    child: Child,
    addr: String,
    credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

struct TestImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRegistry {
    async fn start() -> TestRegistry {
        Self::start_with(None).await
    }

    async fn start_with_htpasswd(user: &str, pass: &str) -> TestRegistry {
        Self::start_with(Some((user.into(), pass.into()))).await
    }

    async fn start_with(credentials: Option<(String, String)>) -> TestRegistry {
        // The port is picked before the registry binds it, so another
        // process may take it meanwhile: try a few.
        let mut last_log = String::new();
        for _ in 0..5 {
            match Self::try_start(credentials.clone()).await {
                Ok(registry) => return registry,
                Err(log) => last_log = log,
            }
        }
        panic!("docker-registry did not start:\n{last_log}");
    }

    async fn try_start(credentials: Option<(String, String)>) -> Result<TestRegistry, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = closed_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = &credentials {
            let htpasswd = dir.path().join("htpasswd");
            let output = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("run htpasswd");
            assert!(output.status.success(), "htpasswd failed");
            std::fs::write(&htpasswd, output.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = TestRegistry {
            child,
            addr,
            credentials,
            dir,
        };
        registry.wait_ready().await?;
        Ok(registry)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break; // exited: most likely the port was taken
            }
            if TcpStream::connect(&self.addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default())
    }

    fn host(&self) -> RegistryHost {
        http_host(&self.addr, &ALL)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    /// The two-step monolithic upload: POST for a session, PUT with the digest.
    async fn push_blob(&self, repository: &str, data: &[u8]) -> String {
        let http = reqwest::Client::new();
        let digest = sha256_digest(data);
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base());
        let started = self
            .authed(http.post(url))
            .send()
            .await
            .expect("start upload");
        assert_eq!(started.status(), StatusCode::ACCEPTED, "start upload");
        let location = started.headers()[header::LOCATION]
            .to_str()
            .expect("location");
        let mut url = reqwest::Url::parse(&self.base())
            .and_then(|b| b.join(location))
            .expect("upload url");
        url.query_pairs_mut().append_pair("digest", &digest);
        let put = self
            .authed(http.put(url))
            .header(header::CONTENT_TYPE, "application/octet-stream");
        let finished = put.body(data.to_vec()).send().await.expect("finish upload");
        assert_eq!(finished.status(), StatusCode::CREATED, "finish upload");
        digest
    }

    async fn push_manifest(&self, repository: &str, reference: &str, manifest: &[u8]) {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base());
        let request = self
            .authed(reqwest::Client::new().put(url))
            .header(header::CONTENT_TYPE, OCI_MANIFEST);
        let response = request
            .body(manifest.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(response.status(), StatusCode::CREATED, "put manifest");
    }

    /// Pushes a one-layer OCI image whose layer is `seed`-dependent bytes.
    async fn push_image(&self, repository: &str, tag: &str, seed: u8) -> TestImage {
        let layer: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8 ^ seed).collect();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.push_blob(repository, config).await;
        let layer_digest = self.push_blob(repository, &layer).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        });
        let manifest = serde_json::to_vec(&manifest).expect("json");
        self.push_manifest(repository, tag, &manifest).await;
        TestImage {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            layer,
            layer_digest,
        }
    }
}

#[tokio::test]
async fn pulls_manifests_and_blobs_from_a_registry() {
    let registry = TestRegistry::start().await;
    let image = registry.push_image("test/image", "v1", 0).await;
    let client = new_client(vec![registry.host()], "test/image", None).expect("client");

    let by_tag = client
        .fetch_manifest("v1", LIMIT)
        .await
        .expect("manifest by tag");
    assert_eq!(by_tag.bytes, image.manifest);
    assert_eq!(by_tag.digest, image.manifest_digest);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);

    let by_digest = client
        .fetch_manifest(&image.manifest_digest, LIMIT)
        .await
        .expect("manifest by digest");
    assert_eq!(by_digest.bytes, image.manifest);
    assert_eq!(by_digest.digest, image.manifest_digest);

    let whole = client
        .fetch_blob(&image.layer_digest, 0)
        .await
        .expect("blob");
    assert_eq!(whole.offset, 0);
    assert_eq!(collect(whole).await, image.layer);

    let rest = client
        .fetch_blob(&image.layer_digest, 100)
        .await
        .expect("blob range");
    assert_eq!(rest.offset, 100);
    assert_eq!(collect(rest).await, image.layer[100..]);

    // A clone shares the hosts and works the same.
    let clone = client.clone();
    assert_eq!(
        clone
            .fetch_manifest("v1", LIMIT)
            .await
            .expect("clone")
            .digest,
        image.manifest_digest
    );
}

#[tokio::test]
async fn missing_content_is_not_found() {
    let registry = TestRegistry::start().await;
    let image = registry.push_image("test/image", "v1", 0).await;
    let client = new_client(vec![registry.host()], "test/image", None).expect("client");
    let absent_digest = sha256_digest(b"absent");
    let expect_not_found = |result: Result<_, RegistryError>, want: &str| match result {
        Err(RegistryError::NotFound { what }) => assert_eq!(what, want),
        Err(other) => panic!("{want}: {other}"),
        Ok(_) => panic!("{want}: found"),
    };
    let name = format!("{}/test/image", registry.addr);
    expect_not_found(
        client.fetch_manifest("v2", LIMIT).await.map(drop),
        &format!("manifest {name}:v2"),
    );
    expect_not_found(
        client.fetch_manifest(&absent_digest, LIMIT).await.map(drop),
        &format!("manifest {name}@{absent_digest}"),
    );
    expect_not_found(
        client.fetch_blob(&absent_digest, 0).await.map(drop),
        &format!("blob {name}@{absent_digest}"),
    );

    let other = new_client(vec![registry.host()], "test/other", None).expect("client");
    assert!(matches!(
        other.fetch_manifest("v1", LIMIT).await,
        Err(RegistryError::NotFound { .. })
    ));
    assert!(matches!(
        other.fetch_blob(&image.layer_digest, 0).await,
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test]
async fn manifests_over_the_limit_are_refused() {
    let registry = TestRegistry::start().await;
    let image = registry.push_image("test/image", "v1", 0).await;
    let client = new_client(vec![registry.host()], "test/image", None).expect("client");
    let size = image.manifest.len() as u64;
    match client.fetch_manifest("v1", size - 1).await {
        Err(RegistryError::TooLarge { what, limit }) => {
            assert!(what.contains("test/image:v1"), "{what}");
            assert_eq!(limit, size - 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(client.fetch_manifest("v1", size).await.is_ok());
}

#[tokio::test]
async fn htpasswd_basic_auth() {
    let registry = TestRegistry::start_with_htpasswd("user", "pass").await;
    let image = registry.push_image("test/image", "v1", 0).await;

    let client = new_client(
        vec![registry.host()],
        "test/image",
        user_pass("user", "pass"),
    )
    .expect("client");
    let manifest = client
        .fetch_manifest("v1", LIMIT)
        .await
        .expect("manifest with the right password");
    assert_eq!(manifest.digest, image.manifest_digest);
    // Now with the cached Authorization header.
    let blob = client
        .fetch_blob(&image.layer_digest, 0)
        .await
        .expect("blob");
    assert_eq!(collect(blob).await, image.layer);

    let wrong = new_client(
        vec![registry.host()],
        "test/image",
        user_pass("user", "nope"),
    )
    .expect("client");
    match wrong.fetch_manifest("v1", LIMIT).await {
        Err(RegistryError::Unauthorized {
            registry: host,
            message,
        }) => {
            assert_eq!(host, registry.addr);
            assert!(message.contains("authentication required"), "{message}");
            assert!(message.contains("check the credentials"), "{message}");
            assert!(message.contains("test/image:v1"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let anonymous = new_client(vec![registry.host()], "test/image", None).expect("client");
    match anonymous.fetch_manifest("v1", LIMIT).await {
        Err(RegistryError::Unauthorized { message, .. }) => {
            assert!(
                message.contains("requires authentication and no credentials"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_down_mirror_is_skipped() {
    let registry = TestRegistry::start().await;
    let image = registry.push_image("test/image", "v1", 0).await;
    let down = http_host(&closed_port(), &ALL);
    let client =
        new_client(vec![down.clone(), registry.host()], "test/image", None).expect("client");
    assert_eq!(
        client
            .fetch_manifest("v1", LIMIT)
            .await
            .expect("manifest")
            .digest,
        image.manifest_digest
    );
    let blob = client
        .fetch_blob(&image.layer_digest, 0)
        .await
        .expect("blob");
    assert_eq!(collect(blob).await, image.layer);

    // Nothing up at all: the transport error says where it tried.
    let client = new_client(vec![down.clone()], "test/image", None).expect("client");
    match client.fetch_manifest("v1", LIMIT).await {
        Err(RegistryError::Transport { url, message }) => {
            assert_eq!(
                url,
                format!("http://{}/v2/test/image/manifests/v1", down.host)
            );
            assert!(message.to_lowercase().contains("connect"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn mirrors_fall_back_to_the_upstream() {
    let upstream = TestRegistry::start().await;
    let mirror = TestRegistry::start().await;
    let image = upstream.push_image("test/image", "v1", 0).await;
    let client =
        new_client(vec![mirror.host(), upstream.host()], "test/image", None).expect("client");
    // 404 from the mirror: the upstream has it.
    assert_eq!(
        client
            .fetch_manifest("v1", LIMIT)
            .await
            .expect("manifest")
            .digest,
        image.manifest_digest
    );
    assert!(client.fetch_blob(&image.layer_digest, 0).await.is_ok());
    // 404 everywhere: the upstream's NotFound.
    assert!(matches!(
        client.fetch_manifest("v9", LIMIT).await,
        Err(RegistryError::NotFound { .. })
    ));

    // A mirror without "resolve" is not asked for tags, only by digest.
    let mirror_image = mirror.push_image("test/image", "v1", 7).await;
    let pull_only = http_host(&mirror.addr, &[Capability::Pull]);
    let client = new_client(vec![pull_only, upstream.host()], "test/image", None).expect("client");
    assert_eq!(
        client
            .fetch_manifest("v1", LIMIT)
            .await
            .expect("by tag")
            .digest,
        image.manifest_digest
    );
    let by_digest = client
        .fetch_manifest(&mirror_image.manifest_digest, LIMIT)
        .await
        .expect("by digest");
    assert_eq!(by_digest.bytes, mirror_image.manifest);
}

// ---- a scripted HTTP server, for token auth and redirects ----

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn reply(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> Reply {
    Reply {
        status,
        headers: headers.iter().map(|(n, v)| (*n, v.to_string())).collect(),
        body: body.to_vec(),
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct FakeServer {
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Answers each request with `handler`, one request per connection.
fn serve(
    listener: TcpListener,
    handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> FakeServer {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let recorded = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, handler.clone(), recorded.clone()));
        }
    });
    FakeServer { requests, task }
}

async fn answer(mut stream: TcpStream, handler: Handler, requests: Arc<Mutex<Vec<Recorded>>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let request = Recorded {
        method: request_line.first().unwrap_or(&"").to_string(),
        target: request_line.get(1).unwrap_or(&"").to_string(),
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    };
    let reply = handler(&request);
    requests.lock().expect("lock").push(request);
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend(reply.body);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

const MANIFEST_BODY: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;

/// A registry at /v2/r that wants `Bearer good-token`, and a token
/// endpoint at /token answering with `token_reply`.
async fn token_registry(
    token_reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> (FakeServer, String) {
    let (listener, addr) = bind().await;
    let challenge = format!(
        r#"Bearer realm="http://{addr}/token",service="fake-registry",scope="repository:r:pull""#
    );
    let server = serve(listener, move |request| {
        if request.target.starts_with("/token") {
            return token_reply(request);
        }
        if request.header("authorization") == Some("Bearer good-token") {
            reply(200, &[("Content-Type", OCI_MANIFEST)], MANIFEST_BODY)
        } else {
            let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}"#;
            reply(401, &[("WWW-Authenticate", &challenge)], body)
        }
    });
    (server, addr.to_string())
}

fn token_json(key: &str) -> Reply {
    reply(
        200,
        &[("Content-Type", "application/json")],
        format!(r#"{{"{key}":"good-token"}}"#).as_bytes(),
    )
}

#[tokio::test]
async fn bearer_token_with_basic_credentials() {
    let expected_basic = format!("Basic {}", STANDARD.encode("user:pass"));
    let (server, addr) = token_registry(move |request| {
        if request.header("authorization") == Some(expected_basic.as_str()) {
            token_json("token")
        } else {
            reply(401, &[], br#"{"details":"bad"}"#)
        }
    })
    .await;
    let client =
        new_client(vec![http_host(&addr, &ALL)], "r", user_pass("user", "pass")).expect("client");
    let manifest = client.fetch_manifest("t", LIMIT).await.expect("manifest");
    assert_eq!(manifest.bytes, MANIFEST_BODY);
    // The token is cached: the second fetch goes straight through.
    client
        .fetch_manifest("t", LIMIT)
        .await
        .expect("manifest again");

    let requests = server.requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets.len(), 4, "{targets:?}");
    assert_eq!(targets[0], "/v2/r/manifests/t");
    assert!(targets[1].starts_with("/token?"), "{targets:?}");
    assert!(
        targets[1].contains("scope=repository%3Ar%3Apull")
            && targets[1].contains("service=fake-registry")
    );
    assert_eq!(&targets[2..], ["/v2/r/manifests/t", "/v2/r/manifests/t"]);
    assert!(requests[0].header("authorization").is_none());
    assert!(
        requests[0]
            .header("accept")
            .is_some_and(|a| a.contains(DOCKER_LIST))
    );
    assert_eq!(
        requests[3].header("authorization"),
        Some("Bearer good-token")
    );

    // Wrong password: the token server refuses.
    let client =
        new_client(vec![http_host(&addr, &ALL)], "r", user_pass("user", "nope")).expect("client");
    match client.fetch_manifest("t", LIMIT).await {
        Err(RegistryError::Unauthorized { message, .. }) => {
            assert!(
                message.contains("token server") && message.contains("check the credentials"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn anonymous_bearer_token() {
    let (server, addr) = token_registry(|request| {
        assert!(request.header("authorization").is_none());
        token_json("token")
    })
    .await;
    let client = new_client(vec![http_host(&addr, &ALL)], "r", None).expect("client");
    client.fetch_manifest("t", LIMIT).await.expect("manifest");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn identity_token_is_exchanged_with_a_post() {
    let (server, addr) = token_registry(|request| {
        if request.method == "POST" && request.body.contains("refresh_token=refresh-me") {
            token_json("access_token")
        } else {
            reply(400, &[], b"")
        }
    })
    .await;
    let credentials = Credentials::from_cri("", "", "", "refresh-me", "", "").expect("credentials");
    let client = new_client(vec![http_host(&addr, &ALL)], "r", credentials).expect("client");
    client.fetch_manifest("t", LIMIT).await.expect("manifest");
    let token_request = server
        .requests()
        .into_iter()
        .find(|r| r.target.starts_with("/token"))
        .expect("token request");
    let form = &token_request.body;
    for part in [
        "grant_type=refresh_token",
        "client_id=berth",
        "service=fake-registry",
        "scope=repository%3Ar%3Apull",
    ] {
        assert!(form.contains(part), "{form}");
    }
    assert_eq!(
        token_request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn registry_token_is_used_as_is() {
    let (server, addr) = token_registry(|_| panic!("the token endpoint must not be asked")).await;
    let credentials = Credentials::from_cri("", "", "", "", "good-token", "").expect("credentials");
    let client = new_client(vec![http_host(&addr, &ALL)], "r", credentials).expect("client");
    client.fetch_manifest("t", LIMIT).await.expect("manifest");
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.target.starts_with("/token"))
    );
}

#[tokio::test]
async fn digest_mismatch_is_detected() {
    let (listener, addr) = bind().await;
    let _server = serve(listener, |_| {
        reply(200, &[("Content-Type", OCI_MANIFEST)], MANIFEST_BODY)
    });
    let client = new_client(vec![http_host(&addr.to_string(), &ALL)], "r", None).expect("client");
    let wanted = sha256_digest(b"something else");
    match client.fetch_manifest(&wanted, LIMIT).await {
        Err(RegistryError::DigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, wanted);
            assert_eq!(actual, sha256_digest(MANIFEST_BODY));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_carry_the_registry_message() {
    let (listener, addr) = bind().await;
    let server = serve(listener, |_| {
        reply(
            500,
            &[("Retry-After", "0")],
            br#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#,
        )
    });
    let client = new_client(vec![http_host(&addr.to_string(), &ALL)], "r", None).expect("client");
    match client.fetch_manifest("t", LIMIT).await {
        Err(RegistryError::Http {
            url,
            status,
            message,
        }) => {
            assert_eq!(url, format!("http://{addr}/v2/r/manifests/t"));
            assert_eq!(
                (status, message.as_str()),
                (500, "disk on fire (after 4 attempts)")
            );
        }
        other => panic!("{other:?}"),
    }
    // Retried, but a bounded number of times.
    assert_eq!(server.requests().len(), super::retry::MAX_ATTEMPTS as usize);

    // Not retried: the request itself is wrong.
    let (listener, addr) = bind().await;
    let server = serve(listener, |_| reply(400, &[], b""));
    let client = new_client(vec![http_host(&addr.to_string(), &ALL)], "r", None).expect("client");
    assert!(client.fetch_manifest("t", LIMIT).await.is_err());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn busy_registries_are_retried_after_the_wait_they_ask_for() {
    let blob = b"0123456789";
    let digest = sha256_digest(blob);
    let (listener, addr) = bind().await;
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let server = serve(listener, move |_| {
        match count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => reply(429, &[("Retry-After", "1")], b"slow down"),
            1 => reply(
                503,
                &[("Retry-After", "Thu, 01 Jan 1970 00:00:00 GMT")],
                b"",
            ),
            _ => reply(200, &[], blob),
        }
    });
    let client = new_client(vec![http_host(&addr.to_string(), &ALL)], "r", None).expect("client");
    let started = std::time::Instant::now();
    let response = client
        .fetch_blob(&digest, 0)
        .await
        .expect("blob after retries");
    assert_eq!(collect(response).await, blob);
    assert_eq!(server.requests().len(), 3);
    // One second asked for by the 429 was waited (a lower bound holds on any
    // machine; how much longer a loaded one takes says nothing).
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
}

#[tokio::test]
async fn a_failing_mirror_is_asked_last_for_the_rest_of_the_pull() {
    let blob = b"0123456789";
    let digest = sha256_digest(blob);
    let (listener, mirror_addr) = bind().await;
    let mirror = serve(listener, |_| reply(502, &[("Retry-After", "0")], b""));
    let (listener, addr) = bind().await;
    let _upstream = serve(listener, move |_| reply(200, &[], blob));
    let hosts = vec![
        http_host(&mirror_addr.to_string(), &ALL),
        http_host(&addr.to_string(), &ALL),
    ];
    let client = new_client(hosts, "r", None).expect("client");
    for _ in 0..3 {
        let response = client
            .fetch_blob(&digest, 0)
            .await
            .expect("from the upstream");
        assert_eq!(collect(response).await, blob);
    }
    // Retried on the first blob, then left alone.
    assert_eq!(mirror.requests().len(), super::retry::MAX_ATTEMPTS as usize);
}

#[tokio::test]
async fn a_redirect_loop_is_refused_naming_it() {
    let (listener, addr) = bind().await;
    let to_b = format!("http://{addr}/b");
    let to_a = format!("http://{addr}/v2/r/blobs/{}", sha256_digest(b"x"));
    let server = serve(listener, move |request| {
        let location = if request.target == "/b" { &to_a } else { &to_b };
        reply(302, &[("Location", location)], b"")
    });
    let client = new_client(vec![http_host(&addr.to_string(), &ALL)], "r", None).expect("client");
    match client.fetch_blob(&sha256_digest(b"x"), 0).await {
        Err(error @ RegistryError::Redirect { .. }) => {
            let message = error.to_string();
            assert!(message.contains("redirect loop"), "{message}");
            assert!(message.contains("/v2/r/blobs/sha256:"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Stopped as soon as it came round, not after ten redirects.
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn blob_redirects_do_not_carry_credentials() {
    let blob = b"0123456789";
    let digest = sha256_digest(blob);
    let (storage_listener, storage_addr) = bind().await;
    let storage = serve(storage_listener, move |request| {
        match request.header("range") {
            Some("bytes=3-") => reply(206, &[("Content-Range", "bytes 3-9/10")], &blob[3..]),
            _ => reply(200, &[], blob),
        }
    });
    let (listener, addr) = bind().await;
    let location = format!("http://{storage_addr}/storage/blob?signed=1");
    let registry = serve(listener, move |request| {
        if request.header("authorization").is_some() {
            reply(307, &[("Location", &location)], b"")
        } else {
            reply(401, &[("WWW-Authenticate", r#"Basic realm="fake""#)], b"")
        }
    });
    let client = new_client(
        vec![http_host(&addr.to_string(), &ALL)],
        "r",
        user_pass("user", "pass"),
    )
    .expect("client");

    let response = client.fetch_blob(&digest, 3).await.expect("blob");
    assert_eq!(response.offset, 3);
    assert_eq!(collect(response).await, &blob[3..]);
    let response = client.fetch_blob(&digest, 0).await.expect("blob");
    assert_eq!(response.offset, 0);
    assert_eq!(collect(response).await, blob);

    let registry_requests = registry.requests();
    assert!(
        registry_requests[1]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    );
    let storage_requests = storage.requests();
    assert_eq!(storage_requests.len(), 2);
    assert!(
        storage_requests
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "{storage_requests:?}"
    );
    assert_eq!(storage_requests[0].header("range"), Some("bytes=3-"));
    assert_eq!(storage_requests[0].target, "/storage/blob?signed=1");
}

#[tokio::test]
async fn a_range_from_the_wrong_offset_is_refused() {
    let (listener, addr) = bind().await;
    let _server = serve(listener, |_| {
        reply(206, &[("Content-Range", "bytes 0-9/10")], b"0123456789")
    });
    let client = new_client(vec![http_host(&addr.to_string(), &ALL)], "r", None).expect("client");
    let digest = sha256_digest(b"x");
    assert!(matches!(
        client.fetch_blob(&digest, 5).await,
        Err(RegistryError::Invalid { .. })
    ));
}

// ---- where credentials go (binding.rs) ----

/// A registry that wants `Basic user:pass` for its manifest.
fn basic_registry(listener: TcpListener) -> FakeServer {
    let expected = format!("Basic {}", STANDARD.encode("user:pass"));
    serve(listener, move |request| {
        if request.header("authorization") == Some(expected.as_str()) {
            reply(200, &[("Content-Type", OCI_MANIFEST)], MANIFEST_BODY)
        } else {
            reply(401, &[("WWW-Authenticate", r#"Basic realm="fake""#)], b"")
        }
    })
}

fn authorizations(server: &FakeServer) -> Vec<Option<String>> {
    server
        .requests()
        .iter()
        .map(|r| r.header("authorization").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn mirrors_get_credentials_only_when_configured_to() {
    let (mirror_listener, mirror_addr) = bind().await;
    let mirror = basic_registry(mirror_listener);
    let (upstream_listener, upstream_addr) = bind().await;
    let upstream = basic_registry(upstream_listener);
    let hosts = |send_credentials: bool| {
        let mut mirror = http_host(&mirror_addr.to_string(), &ALL);
        mirror.send_credentials = send_credentials;
        vec![mirror, http_host(&upstream_addr.to_string(), &ALL)]
    };

    let client = new_client(hosts(false), "r", user_pass("user", "pass")).expect("client");
    client
        .fetch_manifest("t", LIMIT)
        .await
        .expect("from the upstream");
    assert_eq!(authorizations(&mirror), [None]);
    assert_eq!(authorizations(&upstream).len(), 2);

    let client = new_client(hosts(true), "r", user_pass("user", "pass")).expect("client");
    client
        .fetch_manifest("t", LIMIT)
        .await
        .expect("from the mirror");
    assert!(
        authorizations(&mirror)[2].is_some(),
        "{:?}",
        mirror.requests()
    );
    assert_eq!(authorizations(&upstream).len(), 2, "the mirror served it");

    // Bound to another registry by server_address: nobody gets them, and the
    // refusal says why.
    let elsewhere = Credentials {
        server_address: "quay.io".into(),
        ..user_pass("user", "pass").expect("some")
    };
    let client = new_client(hosts(true), "r", Some(elsewhere)).expect("client");
    match client.fetch_manifest("t", LIMIT).await {
        Err(RegistryError::Unauthorized { message, .. }) => {
            assert!(message.contains("are for quay.io"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        authorizations(&upstream)
            .iter()
            .skip(2)
            .all(Option::is_none)
    );
}

#[tokio::test]
async fn token_realms_on_other_hosts_get_no_basic_unless_listed() {
    let (token_listener, token_addr) = bind().await;
    let token_server = serve(token_listener, |_| token_json("token"));
    let (listener, addr) = bind().await;
    let challenge = format!(r#"Bearer realm="http://{token_addr}/token",service="s""#);
    let _registry = serve(listener, move |request| {
        if request.header("authorization") == Some("Bearer good-token") {
            reply(200, &[("Content-Type", OCI_MANIFEST)], MANIFEST_BODY)
        } else {
            reply(401, &[("WWW-Authenticate", &challenge)], b"")
        }
    });
    let host = |token_realms: Vec<String>| {
        let mut host = http_host(&addr.to_string(), &ALL);
        host.token_realms = token_realms;
        vec![host]
    };
    let client = new_client(host(Vec::new()), "r", user_pass("user", "pass")).expect("client");
    client
        .fetch_manifest("t", LIMIT)
        .await
        .expect("anonymous token");
    assert_eq!(authorizations(&token_server), [None]);

    let listed = vec![format!("http://{token_addr}")];
    let client = new_client(host(listed), "r", user_pass("user", "pass")).expect("client");
    client.fetch_manifest("t", LIMIT).await.expect("token");
    assert!(
        authorizations(&token_server)[1]
            .as_deref()
            .is_some_and(|a| a.starts_with("Basic ")),
        "{:?}",
        token_server.requests()
    );
}

#[tokio::test]
async fn a_stalled_registry_fails_naming_the_url() {
    let (listener, addr) = bind().await;
    // Accepts, reads the request, never answers.
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let stall = Duration::from_millis(500);
    let hosts = vec![http_host(&addr.to_string(), &ALL)];
    let client = RegistryClient::new("r.example", hosts, "r", None, stall).expect("client");
    // A hang guard, not a speed check: a client that never gives up fails
    // here instead of hanging the suite.
    let fetched = tokio::time::timeout(Duration::from_secs(30), client.fetch_manifest("t", LIMIT));
    match fetched.await.expect("the stalled fetch never gave up") {
        Err(error @ RegistryError::Stalled { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&format!("http://{addr}/v2/r/manifests/t")),
                "{message}"
            );
            assert!(message.contains("stall_timeout_seconds"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // A blob whose body stops halfway: the stream fails the same way.
    let (listener, addr) = bind().await;
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234";
            let _ = stream.write_all(head.as_bytes()).await;
            held.push(stream);
        }
    });
    let hosts = vec![http_host(&addr.to_string(), &ALL)];
    let client = RegistryClient::new("r.example", hosts, "r", None, stall).expect("client");
    let blob = client
        .fetch_blob(&sha256_digest(b"0123456789"), 0)
        .await
        .expect("headers arrive");
    let read: Result<Vec<Bytes>, _> = blob.stream.try_collect().await;
    match read {
        Err(RegistryError::Stalled { url, .. }) => assert!(url.contains("/v2/r/blobs/"), "{url}"),
        other => panic!("{other:?}"),
    }
}
