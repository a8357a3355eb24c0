//! The bench's registry: Debian's `docker-registry` (distribution v2.8) on a free
//! loopback port with storage of its own, and a monolithic push over the
//! distribution API. Both runtimes and the pull floor fetch from it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Result;
use super::images::{Blob, ImageBlobs};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub host: String,
    http: reqwest::Client,
}

impl Registry {
    pub async fn start(dir: &Path) -> Result<Registry> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let host = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(dir.join("storage")).map_err(|e| e.to_string())?;
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {host}\n  secret: berth-bench\n",
            dir.join("storage").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            // Its own process group: a ^C reaches the bench, which stops it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("{REGISTRY_BIN}: {e}"))?;
        let mut registry = Registry {
            child,
            host,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(format!("docker-registry exited with {status}"));
            }
            if let Ok(r) = registry.http.get(registry.url("/v2/")).send().await
                && r.status().is_success()
            {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                return Err("docker-registry not ready after 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Pushes the image's blobs (those the registry lacks) and its manifest as
    /// `repo:tag`.
    pub async fn push(&self, repo: &str, tag: &str, image: &ImageBlobs) -> Result<()> {
        for blob in image.layers.iter().map(|l| &l.blob).chain([&image.config]) {
            self.push_blob(repo, blob).await?;
        }
        let url = self.url(&format!("/v2/{repo}/manifests/{tag}"));
        let response = self
            .http
            .put(&url)
            .header("Content-Type", &image.manifest.media_type)
            .body(image.manifest.data.clone())
            .send()
            .await
            .map_err(|e| format!("PUT {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("PUT {url}: {}", response.status()));
        }
        Ok(())
    }

    async fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let head = self.url(&format!("/v2/{repo}/blobs/{}", blob.digest));
        if let Ok(r) = self.http.head(&head).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let response = self
            .http
            .post(&start)
            .send()
            .await
            .map_err(|e| format!("POST {start}: {e}"))?;
        let location = response
            .headers()
            .get("Location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| format!("POST {start}: {} and no Location", response.status()))?;
        let location = if location.starts_with("http") {
            location.to_string()
        } else {
            self.url(location)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest={}", blob.digest);
        let response = self
            .http
            .put(&put)
            .header("Content-Type", "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await
            .map_err(|e| format!("PUT blob {}: {e}", blob.digest))?;
        if !response.status().is_success() {
            return Err(format!("PUT blob {}: {}", blob.digest, response.status()));
        }
        Ok(())
    }

    /// `<dir>/<host>/hosts.toml` saying the registry speaks plain http, in
    /// containerd's format, which berth reads too.
    pub fn write_hosts_toml(&self, certs_d: &Path) -> Result<PathBuf> {
        let dir = certs_d.join(&self.host);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let toml = format!(
            "server = \"http://{0}\"\n\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            self.host
        );
        std::fs::write(dir.join("hosts.toml"), toml).map_err(|e| e.to_string())?;
        Ok(certs_d.to_path_buf())
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
