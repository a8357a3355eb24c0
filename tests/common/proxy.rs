//! A loopback TCP proxy that forwards to an upstream address and throttles the
//! upstream→client direction, so a pull can be caught (and killed) mid-blob.
//! Point a hosts.toml mirror at [`ThrottleProxy::url`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub struct ThrottleProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ThrottleProxy {
    /// Listens on a free loopback port; every connection is forwarded to
    /// `upstream`, with responses limited to `bytes_per_sec` per connection.
    pub async fn start(upstream: SocketAddr, bytes_per_sec: u64) -> ThrottleProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Dropping the JoinSet (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        connections.spawn(forward(client, upstream, bytes_per_sec));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        ThrottleProxy { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, bytes_per_sec: u64) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let responses = async {
        // Send in slices of ~1/20 s worth of bytes, pacing against a start time.
        let chunk = (bytes_per_sec / 20).clamp(1024, 64 * 1024) as usize;
        let mut buf = vec![0u8; chunk];
        let start = Instant::now();
        let mut sent: u64 = 0;
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n as u64;
            let due = start + Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
            tokio::time::sleep_until(due).await;
        }
        let _ = client_write.shutdown().await;
    };
    // When either side goes away (say berthd is killed), drop both connections
    // so the registry sees the client gone and logs the interrupted request.
    tokio::select! {
        _ = requests => {}
        _ = responses => {}
    }
}
