//! What a pull trusts a registry with, against a real berthd: credentials go only
//! to the registry they are for (mirrors and token servers elsewhere only when
//! hosts.toml says so, redirects never carry them), a stalled registry fails the
//! pull in time, and abandoned partial downloads do not pile up.
//!
//! Recording servers ([`common::recorder`]) stand in front of a real
//! docker-registry and show which `Authorization` headers reached them.

mod common;

use std::time::{Duration, Instant, SystemTime};

use k8s_cri::v1::AuthConfig;
use tonic::Code;

use common::recorder::{Answer, Recorder};
use common::*;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

fn auth(server_address: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        server_address: server_address.into(),
        ..Default::default()
    })
}

fn small_image(marker: &str) -> Image {
    Image::oci()
        .layer(
            Layer::new()
                .file(&format!("{marker}.marker"), marker)
                .gzip(),
        )
        .build()
}

/// Writes `certs.d/<registry>/hosts.toml`.
fn write_hosts_toml(env: &TestEnv, registry: &str, text: &str) {
    let dir = env.certs_d.join(registry);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts.toml"), text).unwrap();
}

fn requests_for(recorder: &Recorder, path_part: &str) -> Vec<common::recorder::Recorded> {
    recorder
        .requests()
        .into_iter()
        .filter(|r| r.target.contains(path_part))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_gets_credentials_only_when_its_hosts_toml_says_so() {
    let Some(bed) = TestBed::start_with(RegistryOpts {
        htpasswd: Some((USER, PASSWORD)),
    })
    .await
    else {
        return;
    };
    let mirror = Recorder::forwarding(bed.registry.addr()).await;
    let registry = bed.registry.host();
    let first = small_image("mirror-a");
    let first_ref = bed.push(&first, "test/mirror-a", "v1").await;
    let second = small_image("mirror-b");
    let second_ref = bed.push(&second, "test/mirror-b", "v1").await;

    // A mirror like any other: asked first, anonymously; the upstream gets them.
    write_hosts_toml(
        &bed.env,
        &registry,
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            bed.registry.url(),
            mirror.url()
        ),
    );
    assert_eq!(
        bed.cri
            .pull_with_auth(&first_ref, auth(""))
            .await
            .expect("pull"),
        first.id()
    );
    assert!(!mirror.requests().is_empty(), "the mirror was not asked");
    assert!(
        mirror.authorized().is_empty(),
        "credentials reached a mirror that did not opt in: {:?}",
        mirror.authorized()
    );
    // The registry wants the password: the pull succeeding means the upstream got it.
    let log = bed.registry.settled_access_log().await;
    assert!(
        log.iter()
            .any(|e| e.is_success() && e.uri == "/v2/test/mirror-a/manifests/v1"),
        "the upstream did not serve the manifest"
    );

    // Opted in: the mirror gets them (and serves the pull).
    write_hosts_toml(
        &bed.env,
        &registry,
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  \
             send_credentials = true\n",
            bed.registry.url(),
            mirror.url()
        ),
    );
    assert_eq!(
        bed.cri
            .pull_with_auth(&second_ref, auth(""))
            .await
            .expect("pull"),
        second.id()
    );
    let authorized = requests_for(&mirror, "mirror-b");
    assert!(
        authorized
            .iter()
            .any(|r| r.authorization().is_some_and(|a| a.starts_with("Basic "))),
        "{authorized:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_go_only_to_the_server_address_host() {
    let Some(bed) = TestBed::start_with(RegistryOpts {
        htpasswd: Some((USER, PASSWORD)),
    })
    .await
    else {
        return;
    };
    // The registry is reached through a recording proxy configured as its server.
    let upstream = Recorder::forwarding(bed.registry.addr()).await;
    let registry = bed.registry.host();
    write_hosts_toml(
        &bed.env,
        &registry,
        &format!("server = \"{}\"\n", upstream.url()),
    );
    let image = small_image("bound");
    let reference = bed.push(&image, "test/bound", "v1").await;

    // Credentials for another registry: not sent, and the error says so.
    for elsewhere in ["registry.example.com", "https://index.docker.io/v1/"] {
        let error = bed
            .cri
            .pull_with_auth(&reference, auth(elsewhere))
            .await
            .expect_err("credentials for another registry");
        assert_error(&error, Code::Unauthenticated, &["are not sent to"]);
    }
    assert!(!upstream.requests().is_empty());
    assert!(
        upstream.authorized().is_empty(),
        "credentials for another registry were sent: {:?}",
        upstream.authorized()
    );

    // Named by server_address (with scheme and path, as docker config keys are).
    let named = format!("http://{registry}/v2/");
    assert_eq!(
        bed.cri
            .pull_with_auth(&reference, auth(&named))
            .await
            .expect("pull with server_address"),
        image.id()
    );
    assert!(!upstream.authorized().is_empty());

    let error = bed
        .cri
        .pull_with_auth(&reference, auth("ftp://x"))
        .await
        .expect_err("bad server_address");
    assert_error(&error, Code::InvalidArgument, &["auth.server_address"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_to_another_host_carry_no_authorization() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let image = small_image("redirected");
    bed.push(&image, "test/redirected", "v1").await;
    // Blob storage on another host (port), serving what the registry has.
    let storage = Recorder::forwarding(bed.registry.addr()).await;
    let storage_url = storage.url();
    let upstream = bed.registry.addr();
    // A registry that wants Basic credentials and redirects blob downloads.
    let front = Recorder::start(move |request| {
        if request.authorization().is_none() {
            Answer::reply(401, &[("WWW-Authenticate", r#"Basic realm="front""#)], b"")
        } else if request.target.contains("/blobs/") {
            let location = format!("{storage_url}{}", request.target);
            Answer::reply(307, &[("Location", &location)], b"")
        } else {
            Answer::Forward(upstream)
        }
    })
    .await;
    let reference = format!("{}/test/redirected:v1", front.host());
    assert_eq!(
        bed.cri
            .pull_with_auth(&reference, auth(""))
            .await
            .expect("pull"),
        image.id()
    );
    let redirected = requests_for(&front, "/blobs/");
    assert!(
        redirected.iter().any(|r| r.authorization().is_some()),
        "{redirected:?}"
    );
    let fetched = requests_for(&storage, "/blobs/");
    assert_eq!(
        fetched.len(),
        image.layer_digests().len() + 1,
        "{fetched:?}"
    );
    assert!(
        storage.authorized().is_empty(),
        "credentials followed a redirect to another host: {:?}",
        storage.authorized()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_server_on_another_host_gets_no_basic_credentials_unless_listed() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let first = small_image("token-a");
    bed.push(&first, "test/token-a", "v1").await;
    let second = small_image("token-b");
    bed.push(&second, "test/token-b", "v1").await;
    // Hands anyone a token, recording what it was sent.
    let token_server = Recorder::start(|_| {
        Answer::reply(
            200,
            &[("Content-Type", "application/json")],
            br#"{"token":"tok"}"#,
        )
    })
    .await;
    let challenge = format!(
        r#"Bearer realm="{}/token",service="front""#,
        token_server.url()
    );
    let upstream = bed.registry.addr();
    let front = Recorder::start(move |request| {
        if request.authorization() == Some("Bearer tok") {
            Answer::Forward(upstream)
        } else {
            Answer::reply(401, &[("WWW-Authenticate", &challenge)], b"")
        }
    })
    .await;

    let reference = format!("{}/test/token-a:v1", front.host());
    assert_eq!(
        bed.cri
            .pull_with_auth(&reference, auth(""))
            .await
            .expect("pull with an anonymous token"),
        first.id()
    );
    assert!(!token_server.requests().is_empty());
    assert!(
        token_server.authorized().is_empty(),
        "credentials went to a token server on another host: {:?}",
        token_server.authorized()
    );

    // Listed in the registry's hosts.toml: it gets them.
    write_hosts_toml(
        &bed.env,
        &front.host(),
        &format!(
            "server = \"{}\"\ntoken_realms = [\"{}\"]\n",
            front.url(),
            token_server.url()
        ),
    );
    let reference = format!("{}/test/token-b:v1", front.host());
    assert_eq!(
        bed.cri
            .pull_with_auth(&reference, auth(""))
            .await
            .expect("pull with a token for the credentials"),
        second.id()
    );
    assert!(
        token_server
            .authorized()
            .iter()
            .any(|r| r.authorization().is_some_and(|a| a.starts_with("Basic "))),
        "{:?}",
        token_server.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_registry_fails_the_pull_within_the_stall_timeout() {
    let short_stall_timeout = |env: &TestEnv| {
        let config = std::fs::read_to_string(&env.config).unwrap();
        std::fs::write(&env.config, format!("{config}stall_timeout_seconds = 2\n")).unwrap();
    };
    let Some(bed) = TestBed::start_configured(short_stall_timeout).await else {
        return;
    };
    let cri = &bed.cri;
    // Accepts connections and reads requests, never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _stalled = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });

    let started = Instant::now();
    let error = cri
        .pull(&format!("{addr}/test/stalled:v1"))
        .await
        .expect_err("a stalled registry");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_error(
        &error,
        Code::Unavailable,
        &[
            &format!("http://{addr}/v2/test/stalled/manifests/v1"),
            "sent nothing for 2 s",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_partial_downloads_are_removed_at_start() {
    let Some(mut bed) = TestBed::start().await else {
        return;
    };
    let ingest = bed.env.ingest_dir();
    let stale = ingest.join(hex_of(&sha256_digest(b"abandoned")));
    let fresh = ingest.join(hex_of(&sha256_digest(b"resumable")));
    std::fs::write(&stale, b"half a blob").unwrap();
    std::fs::write(&fresh, b"half a blob").unwrap();
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();

    bed.restart_berthd().await;
    assert!(!stale.exists(), "a two-day-old partial download survived");
    assert!(fresh.exists(), "a fresh partial download was removed");
}
