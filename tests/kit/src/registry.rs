//! A throwaway `docker-registry` (Debian's distribution v2.8) on 127.0.0.1.
//!
//! Its stdout is the access log, one Apache "combined" line per request,
//! written when the response is finished:
//!
//! ```text
//! 127.0.0.1 - - [23/Nov/2026:04:26:35 +0000] "GET /v2/t/r/blobs/sha256:0b45… HTTP/1.1" 206 99000 "" "curl/7.88.1"
//! ```
//!
//! (the user field is the htpasswd user when one authenticated). Range requests
//! show up as status 206; the byte count is what was actually written, so an
//! interrupted download shows a short count. There is no Range header in any log.
//! Its stderr is the application log (logrus text), kept in `registry.log`.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{REGISTRY_BIN, hex_of, tail};

#[derive(Default, Clone, Copy)]
pub struct RegistryOpts<'a> {
    /// Require HTTP basic auth with this user and password (htpasswd, bcrypt).
    /// Distribution v2.8 accepts htpasswd auth over plain http.
    pub htpasswd: Option<(&'a str, &'a str)>,
}

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    credentials: Option<(String, String)>,
    http: reqwest::Client,
    settle_seq: AtomicUsize,
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    pub user: String,
    pub method: String,
    /// Path and query, as requested.
    pub uri: String,
    pub status: u16,
    /// Body bytes written.
    pub bytes: u64,
}

impl AccessLogEntry {
    fn parse(line: &str) -> Option<AccessLogEntry> {
        // host ident user [date] "METHOD URI PROTO" status bytes "referer" "ua"
        let mut head = line.splitn(4, ' ');
        let _host = head.next()?;
        let _ident = head.next()?;
        let user = head.next()?.to_string();
        let rest = head.next()?;
        let request_start = rest.find('"')? + 1;
        let request_len = rest[request_start..].find('"')?;
        let request = &rest[request_start..request_start + request_len];
        let mut request_parts = request.split(' ');
        let method = request_parts.next()?.to_string();
        let uri = request_parts.next()?.to_string();
        let mut tail = rest[request_start + request_len + 1..].split_whitespace();
        let status = tail.next()?.parse().ok()?;
        let bytes = tail.next()?.parse().unwrap_or(0);
        Some(AccessLogEntry {
            user,
            method,
            uri,
            status,
            bytes,
        })
    }

    /// Whether this is a request for blob `digest` (any repository).
    pub fn is_blob(&self, digest: &str) -> bool {
        let path = self.uri.split('?').next().unwrap_or("");
        path.starts_with("/v2/") && path.ends_with(&format!("/blobs/{digest}"))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Registry {
    /// Starts a registry with empty storage on a free loopback port and waits
    /// until `GET /v2/` answers. Its storage is in a fresh temporary directory.
    pub async fn start(opts: RegistryOpts<'_>) -> Registry {
        Self::launch(&std::env::temp_dir(), opts).await
    }

    /// Like [`Registry::start`], with its directory (storage, logs) made in
    /// `parent`: the benchmark keeps its big images off a tmpfs `/tmp`.
    pub async fn start_in(parent: &Path, opts: RegistryOpts<'_>) -> Registry {
        Self::launch(parent, opts).await
    }

    async fn launch(parent: &Path, opts: RegistryOpts<'_>) -> Registry {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Self::try_start(parent, opts).await {
                Ok(registry) => return registry,
                // Another test may have grabbed the port between our probe and the bind.
                Err(e) if e.contains("address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("docker-registry did not start: {last_error}");
    }

    async fn try_start(parent: &Path, opts: RegistryOpts<'_>) -> Result<Registry, String> {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir_in(parent)
            .map_err(|e| format!("registry directory in {}: {e}", parent.display()))?;
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).unwrap();

        let mut auth = String::new();
        if let Some((user, password)) = opts.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed: {out:?}");
            let htpasswd = dir.path().join("htpasswd");
            fs::write(&htpasswd, &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: berth-test-secret\n\
             {auth}",
            storage = storage.display(),
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();

        let access_log = fs::File::create(dir.path().join("access.log")).unwrap();
        let app_log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(access_log)
            .stderr(app_log)
            .spawn()
            .expect("spawn docker-registry");

        let mut registry = Registry {
            child,
            dir,
            addr,
            credentials: opts.htpasswd.map(|(u, p)| (u.to_string(), p.to_string())),
            http: reqwest::Client::new(),
            settle_seq: AtomicUsize::new(0),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(format!(
                    "docker-registry exited with {status}: {}",
                    registry.app_log()
                ));
            }
            // 200 without auth, 401 with: either way it is serving.
            let probe = registry.http.get(format!("{}/v2/", registry.url()));
            if let Ok(resp) = probe.send().await
                && (resp.status().is_success() || resp.status() == 401)
            {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "docker-registry not ready after 10 s: {}",
                    registry.app_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the host part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// `127.0.0.1:PORT/<repo>@<digest>`
    pub fn digest_reference(&self, repo: &str, digest: &str) -> String {
        format!("{}/{repo}@{digest}", self.addr)
    }

    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the bytes of a blob.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = hex_of(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn app_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The access log as it is now. Requests still in flight are not in it yet;
    /// prefer [`Registry::settled_access_log`].
    pub fn access_log_now(&self) -> Vec<AccessLogEntry> {
        fs::read_to_string(self.access_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(AccessLogEntry::parse)
            .collect()
    }

    /// The access log after a marker request of ours has been logged, so that
    /// requests whose responses were already complete are in it.
    pub async fn settled_access_log(&self) -> Vec<AccessLogEntry> {
        let n = self.settle_seq.fetch_add(1, Ordering::SeqCst);
        let marker = format!("/v2/?berth-test-settle={n}");
        let _ = self
            .http
            .get(format!("{}{marker}", self.url()))
            .send()
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.access_log_now();
            if log.iter().any(|e| e.uri == marker) || Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every logged request (any method, any status) for blob `digest`.
    pub async fn blob_requests(&self, digest: &str) -> Vec<AccessLogEntry> {
        self.settled_access_log()
            .await
            .into_iter()
            .filter(|e| e.is_blob(digest))
            .collect()
    }

    /// How many successful (2xx) GETs of blob `digest` the registry served,
    /// complete or interrupted. HEADs and 401s are not counted.
    pub async fn blob_gets(&self, digest: &str) -> usize {
        self.blob_requests(digest)
            .await
            .iter()
            .filter(|e| e.method == "GET" && e.is_success())
            .count()
    }

    /// Prints the tail of both logs to stderr (for failing tests).
    pub fn dump_logs(&self) {
        let app_log = self.app_log();
        let problems: Vec<&str> = app_log
            .lines()
            .filter(|l| l.contains("level=error") || l.contains("level=warning"))
            .collect();
        eprintln!(
            "---- docker-registry {} errors and warnings (tail) ----",
            self.addr
        );
        eprintln!("{}", tail(&problems.join("\n"), 20));
        // Without our own log-settling requests, which are noise here.
        let access = fs::read_to_string(self.access_log_path()).unwrap_or_default();
        let access: Vec<&str> = access
            .lines()
            .filter(|l| !l.contains("berth-test-settle"))
            .collect();
        eprintln!("---- docker-registry {} access log (tail) ----", self.addr);
        eprintln!("{}", tail(&access.join("\n"), 60));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
