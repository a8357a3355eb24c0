//! A minimal registry that serves fixed manifests over HTTP/1.1, for what
//! docker-registry will not serve: it refuses to store or read manifests over
//! 4 MiB ("http: request body too large" / "storage: read exceeds limit").
//!
//! Answers `GET|HEAD /v2/` with 200, `GET|HEAD /v2/<repo>/manifests/<tag or
//! digest>` for the manifests it was given, and 404 for anything else. One
//! request per connection (`Connection: close`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::image::Blob;

pub struct StaticRegistry {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StaticRegistry {
    /// Serves each `(repo, tag, manifest)` under its tag and its digest.
    pub async fn start(manifests: &[(&str, &str, &Blob)]) -> StaticRegistry {
        let mut routes = HashMap::new();
        for (repo, tag, blob) in manifests {
            routes.insert(format!("/v2/{repo}/manifests/{tag}"), (*blob).clone());
            routes.insert(
                format!("/v2/{repo}/manifests/{}", blob.digest),
                (*blob).clone(),
            );
        }
        let routes = Arc::new(routes);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        connections.spawn(serve(stream, routes.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        StaticRegistry { addr, task }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `127.0.0.1:PORT/<repo>:<tag>`
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }
}

impl Drop for StaticRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, routes: Arc<HashMap<String, Blob>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 64 * 1024 {
            return;
        }
    }
    let request = String::from_utf8_lossy(&request);
    let mut parts = request.lines().next().unwrap_or("").split(' ');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, content_type, digest, body): (&str, &str, Option<&str>, &[u8]) =
        if path == "/v2/" || path == "/v2" {
            ("200 OK", "application/json", None, b"{}")
        } else if let Some(blob) = routes.get(path) {
            ("200 OK", &blob.media_type, Some(&blob.digest), &blob.data)
        } else {
            (
                "404 Not Found",
                "application/json",
                None,
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
        };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(digest) = digest {
        head.push_str(&format!("Docker-Content-Digest: {digest}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if method != "HEAD" {
        let _ = stream.write_all(body).await;
    }
    let _ = stream.shutdown().await;
}
