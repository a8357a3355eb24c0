use super::parse::api_root;
use super::*;
use std::fs;

fn write_hosts(root: &Path, dir: &str, text: &str) {
    let dir = root.join(dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("hosts.toml"), text).unwrap();
}

fn hosts(root: &Path, registry: &str) -> Vec<RegistryHost> {
    match hosts_for(root, registry) {
        Ok(hosts) => hosts,
        Err(e) => panic!("hosts_for({registry}): {e}"),
    }
}

fn error(root: &Path, registry: &str) -> HostsError {
    match hosts_for(root, registry) {
        Ok(hosts) => panic!("expected an error, got {hosts:?}"),
        Err(e) => e,
    }
}

fn urls(hosts: &[RegistryHost]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| format!("{}://{}{}", h.scheme, h.host, h.path))
        .collect()
}

#[test]
fn defaults_without_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("does-not-exist");
    let cases = [
        ("docker.io", "https://registry-1.docker.io/v2"),
        ("quay.io", "https://quay.io/v2"),
        ("registry.example:5000", "https://registry.example:5000/v2"),
        ("localhost", "http://localhost/v2"),
        ("localhost:5000", "http://localhost:5000/v2"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000/v2"),
        ("127.9.8.7", "http://127.9.8.7/v2"),
        ("[::1]:5000", "http://[::1]:5000/v2"),
        ("[::2]:5000", "https://[::2]:5000/v2"),
        ("128.0.0.1:5000", "https://128.0.0.1:5000/v2"),
    ];
    for (registry, want) in cases {
        for root in [tmp.path(), missing.as_path()] {
            let got = hosts(root, registry);
            assert_eq!(urls(&got), [want], "{registry}");
            assert_eq!(got[0].capabilities, ALL_CAPABILITIES);
            assert!(!got[0].skip_verify && got[0].ca.is_empty() && got[0].header.is_empty());
        }
    }
}

#[test]
fn mirrors_in_file_order_then_server() {
    let tmp = tempfile::tempdir().unwrap();
    write_hosts(
        tmp.path(),
        "docker.io",
        r#"
server = "https://registry-1.docker.io"

[host."https://zz-mirror.example"]
  capabilities = ["pull", "resolve"]

[host."http://10.0.0.1:5000"]
  capabilities = ["pull"]
  skip_verify = true

[host."mm-mirror.example/base/"]
"#,
    );
    let got = hosts(tmp.path(), "docker.io");
    assert_eq!(
        urls(&got),
        [
            "https://zz-mirror.example/v2",
            "http://10.0.0.1:5000/v2",
            "https://mm-mirror.example/base/v2",
            "https://registry-1.docker.io/v2",
        ]
    );
    assert_eq!(got[0].capabilities, [Capability::Pull, Capability::Resolve]);
    assert_eq!(got[1].capabilities, [Capability::Pull]);
    assert!(got[1].skip_verify);
    assert!(got[0].has(Capability::Resolve) && !got[1].has(Capability::Resolve));
    assert_eq!(got[2].capabilities, ALL_CAPABILITIES);
    assert_eq!(got[3].capabilities, ALL_CAPABILITIES);
}

#[test]
fn host_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry.example");
    write_hosts(
        tmp.path(),
        "registry.example",
        r#"
server = "https://registry.example"
ca = "upstream-ca.pem"
skip_verify = true
[header]
  x-upstream = "u"

[host."https://mirror.example:8443/artifactory/api/v2/"]
  override_path = true
  ca = ["/etc/ssl/a.pem", "b.pem"]
  client = [["c.pem", "c.key"], "both.pem"]
  [host."https://mirror.example:8443/artifactory/api/v2/".header]
    x-one = "1"
    x-many = ["a", "b"]

[host."https://other.example"]
  client = "combined.pem"
"#,
    );
    let got = hosts(tmp.path(), "registry.example");
    assert_eq!(got.len(), 3);
    let mirror = &got[0];
    assert_eq!(mirror.host, "mirror.example:8443");
    assert_eq!(mirror.path, "/artifactory/api/v2");
    assert_eq!(
        mirror.ca,
        [PathBuf::from("/etc/ssl/a.pem"), dir.join("b.pem")]
    );
    assert_eq!(
        mirror.client,
        [
            (dir.join("c.pem"), Some(dir.join("c.key"))),
            (dir.join("both.pem"), None)
        ]
    );
    let mut header = mirror.header.clone();
    header.sort();
    assert_eq!(
        header,
        [
            ("x-many".into(), "a".into()),
            ("x-many".into(), "b".into()),
            ("x-one".into(), "1".into())
        ]
    );
    assert!(!mirror.skip_verify);
    assert_eq!(got[1].client, [(dir.join("combined.pem"), None)]);

    let upstream = &got[2];
    assert_eq!(urls(&got[2..]), ["https://registry.example/v2"]);
    assert!(upstream.skip_verify);
    assert_eq!(upstream.ca, [dir.join("upstream-ca.pem")]);
    assert_eq!(
        upstream.header,
        [("x-upstream".to_string(), "u".to_string())]
    );
}

#[test]
fn api_root_rules() {
    assert_eq!(api_root("", false), "/v2");
    assert_eq!(api_root("/", false), "/v2");
    assert_eq!(api_root("/v2", false), "/v2");
    assert_eq!(api_root("/v2/", false), "/v2");
    assert_eq!(api_root("/proxy", false), "/proxy/v2");
    assert_eq!(api_root("/proxy/", true), "/proxy");
    assert_eq!(api_root("", true), "");
}

#[test]
fn server_without_scheme_is_https_and_missing_server_is_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    write_hosts(
        tmp.path(),
        "localhost:5000",
        "server = \"localhost:5000\"\n",
    );
    assert_eq!(
        urls(&hosts(tmp.path(), "localhost:5000")),
        ["https://localhost:5000/v2"]
    );

    write_hosts(
        tmp.path(),
        "127.0.0.1:5000",
        "[host.\"https://m.example\"]\n",
    );
    assert_eq!(
        urls(&hosts(tmp.path(), "127.0.0.1:5000")),
        ["https://m.example/v2", "http://127.0.0.1:5000/v2"]
    );
}

#[test]
fn directory_lookup_order() {
    let tmp = tempfile::tempdir().unwrap();
    write_hosts(
        tmp.path(),
        "_default",
        "[host.\"https://default-mirror\"]\n",
    );
    // No directory of its own: _default applies, with the registry's own upstream.
    assert_eq!(
        urls(&hosts(tmp.path(), "quay.io")),
        ["https://default-mirror/v2", "https://quay.io/v2"]
    );
    assert_eq!(
        urls(&hosts(tmp.path(), "docker.io")),
        [
            "https://default-mirror/v2",
            "https://registry-1.docker.io/v2"
        ]
    );

    // The literal host:port directory.
    write_hosts(tmp.path(), "10.1.1.1:5000", "[host.\"https://literal\"]\n");
    assert_eq!(
        urls(&hosts(tmp.path(), "10.1.1.1:5000")),
        ["https://literal/v2", "https://10.1.1.1:5000/v2"]
    );
    // containerd's host_port_ spelling wins over the literal one.
    write_hosts(
        tmp.path(),
        "10.1.1.1_5000_",
        "[host.\"https://underscored\"]\n",
    );
    assert_eq!(
        urls(&hosts(tmp.path(), "10.1.1.1:5000")),
        ["https://underscored/v2", "https://10.1.1.1:5000/v2"]
    );
}

#[test]
fn directory_without_hosts_toml_uses_docker_cert_files() {
    let tmp = tempfile::tempdir().unwrap();
    write_hosts(
        tmp.path(),
        "_default",
        "[host.\"https://default-mirror\"]\n",
    );
    let dir = tmp.path().join("quay.io");
    fs::create_dir_all(&dir).unwrap();
    for name in ["ca.crt", "client.cert", "client.key", "lone.cert", "README"] {
        fs::write(dir.join(name), "x").unwrap();
    }
    // As in containerd, the registry's own directory shadows _default.
    let got = hosts(tmp.path(), "quay.io");
    assert_eq!(urls(&got), ["https://quay.io/v2"]);
    assert_eq!(got[0].ca, [dir.join("ca.crt")]);
    assert_eq!(
        got[0].client,
        [
            (dir.join("client.cert"), Some(dir.join("client.key"))),
            (dir.join("lone.cert"), None)
        ]
    );
}

#[test]
fn unknown_keys_are_errors_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.example/hosts.toml");
    write_hosts(tmp.path(), "a.example", "servr = \"https://x\"\n");
    match error(tmp.path(), "a.example") {
        HostsError::UnknownKey { path, key } => {
            assert_eq!(path, file);
            assert_eq!(key, "servr");
        }
        e => panic!("wrong error {e}"),
    }
    write_hosts(
        tmp.path(),
        "a.example",
        "[host.\"https://m\"]\nskip_verfy = true\n",
    );
    let e = error(tmp.path(), "a.example");
    assert!(
        matches!(&e, HostsError::UnknownKey { key, .. } if key == "host.\"https://m\".skip_verfy"),
        "{e}"
    );
    let message = e.to_string();
    assert!(
        message.contains("hosts.toml") && message.contains("skip_verfy"),
        "{message}"
    );
}

#[test]
fn invalid_values_are_errors_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("skip_verify = \"yes\"", "skip_verify"),
        ("capabilities = [\"pull\", \"fly\"]", "capabilities"),
        ("capabilities = \"pull\"", "capabilities"),
        ("ca = 3", "ca"),
        ("client = [[\"a\", \"b\", \"c\"]]", "client"),
        ("server = \"ftp://x\"", "server"),
        ("server = \"https://\"", "server"),
        ("server = \"https://user@host\"", "server"),
        ("host = 1", "host"),
        ("[header]\n\"bad header\" = \"x\"", "header.bad header"),
        ("[header]\nx = 1", "header.x"),
        (
            "[host.\"https://m\"]\noverride_path = 1",
            "host.\"https://m\".override_path",
        ),
        ("send_credentials = true", "send_credentials"),
        (
            "[host.\"http://10.0.0.9:5000\"]\nsend_credentials = true",
            "host.\"http://10.0.0.9:5000\".send_credentials",
        ),
        ("token_realms = [\"http://auth.example\"]", "token_realms"),
        (
            "token_realms = [\"https://auth.example/token\"]",
            "token_realms",
        ),
        ("token_realms = [\"ftp://auth.example\"]", "token_realms"),
        (
            "token_realms = [\"https://u:p@auth.example\"]",
            "token_realms",
        ),
        ("token_realms = 1", "token_realms"),
    ];
    for (text, want_key) in cases {
        write_hosts(tmp.path(), "b.example", text);
        match error(tmp.path(), "b.example") {
            HostsError::InvalidValue { path, key, message } => {
                assert!(path.ends_with("b.example/hosts.toml"));
                assert_eq!(key, want_key, "{text}: {message}");
            }
            e => panic!("{text}: wrong error {e}"),
        }
    }
}

#[test]
fn credential_keys() {
    let tmp = tempfile::tempdir().unwrap();
    write_hosts(
        tmp.path(),
        "e.example",
        r#"
token_realms = ["auth.example", "http://127.0.0.1:8080/"]

[host."https://trusted"]
  send_credentials = true
  token_realms = "https://Auth.Example:8443"

[host."http://localhost:5001"]
  send_credentials = true

[host."http://10.0.0.9:5000"]
"#,
    );
    let got = hosts(tmp.path(), "e.example");
    let keys: Vec<_> = got
        .iter()
        .map(|h| (h.send_credentials, h.token_realms.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (true, vec!["https://auth.example:8443".to_string()]),
            (true, vec![]),
            (false, vec![]),
            (
                false,
                vec![
                    "https://auth.example:443".to_string(),
                    "http://127.0.0.1:8080".to_string()
                ]
            ),
        ]
    );
}

#[test]
fn syntax_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_hosts(tmp.path(), "c.example", "server = \n");
    let e = error(tmp.path(), "c.example");
    assert!(matches!(e, HostsError::Syntax { .. }), "{e}");
    assert!(e.to_string().contains("c.example/hosts.toml"), "{e}");
}

#[test]
fn dial_timeout_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    write_hosts(
        tmp.path(),
        "d.example",
        "[host.\"https://m\"]\ndial_timeout = \"3s\"\n",
    );
    assert_eq!(hosts(tmp.path(), "d.example").len(), 2);
}

#[test]
fn registry_names_cannot_escape_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    for registry in ["", "..", "../etc", "a/b", ".hidden"] {
        assert!(
            matches!(
                error(tmp.path(), registry),
                HostsError::InvalidRegistry { .. }
            ),
            "{registry:?}"
        );
    }
}
