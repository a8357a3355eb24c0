//! An HTTP/1.1 server on loopback that records the head of every request
//! (to see which `Authorization` and `Range` headers berthd sends where) and
//! answers each as a handler says: a canned reply, forwarded to an upstream
//! such as a [`super::Registry`], or a fault (a reset or a stall after some
//! bytes of the upstream's response, no answer at all, a body with no
//! declared length). One request per connection (`Connection: close`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Bound on a request head; berthd's are far smaller.
const MAX_HEAD: usize = 64 * 1024;
/// Wait between the last byte passed on and a reset: ample for a client on
/// loopback to read what it was sent.
const RESET_GRACE: Duration = Duration::from_millis(200);

/// The head of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

/// What to do with a request.
pub enum Answer {
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Pass the request on to this address and its response back.
    Forward(SocketAddr),
    /// Forward, but pass on only the first `after` bytes of the response
    /// (head included), then `fault`.
    ForwardCut {
        upstream: SocketAddr,
        after: usize,
        fault: Fault,
    },
    /// Read the request and never answer (until the recorder is dropped).
    Stall,
    /// A 200 whose body is `body` with no length declared: it ends when the
    /// connection closes.
    Unsized(Vec<u8>),
}

/// What becomes of a connection cut short.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Closed with a TCP reset.
    Reset,
    /// Kept open, sending nothing more.
    Stall,
}

impl Answer {
    pub fn reply(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        Answer::Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Answer + Send + Sync>;

pub struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Recorder {
    pub async fn start(handler: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            // Dropping the JoinSet (when this task is aborted) ends every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        connections.spawn(answer(stream, handler.clone(), recorded.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Recorder {
            addr,
            requests,
            task,
        }
    }

    /// A recording proxy in front of `upstream`.
    pub async fn forwarding(upstream: SocketAddr) -> Recorder {
        Self::start(move |_| Answer::Forward(upstream)).await
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests that carried an `Authorization` header.
    pub fn authorized(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.authorization().is_some())
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, handler: Handler, requests: Arc<Mutex<Vec<Recorded>>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if data.len() > MAX_HEAD {
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let request = Recorded {
        method: request_line.first().unwrap_or(&"").to_string(),
        target: request_line.get(1).unwrap_or(&"").to_string(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
    };
    let answer = handler(&request);
    requests.lock().unwrap().push(request.clone());
    match answer {
        Answer::Reply {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            let mut bytes = out.into_bytes();
            bytes.extend(body);
            let _ = stream.write_all(&bytes).await;
        }
        Answer::Forward(upstream) => {
            forward(&mut stream, upstream, &request, &data[head_end + 4..], None).await;
        }
        Answer::ForwardCut {
            upstream,
            after,
            fault,
        } => {
            let body = &data[head_end + 4..];
            forward(&mut stream, upstream, &request, body, Some(after)).await;
            match fault {
                Fault::Reset => {
                    // A reset makes the client's kernel drop what it has not read
                    // yet: give it time to, so that exactly `after` bytes arrive.
                    tokio::time::sleep(RESET_GRACE).await;
                    // SO_LINGER 0: close sends RST, not FIN. Deprecated in tokio
                    // because a non-zero linger blocks on drop; zero never does.
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    return;
                }
                Fault::Stall => std::future::pending::<()>().await,
            }
        }
        Answer::Stall => std::future::pending::<()>().await,
        Answer::Unsized(body) => {
            let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        }
    }
    let _ = stream.shutdown().await;
}

/// Sends `request` (with `body`, what was read past its head) to `upstream`
/// and its response back: all of it, or its first `limit` bytes.
async fn forward(
    stream: &mut TcpStream,
    upstream: SocketAddr,
    request: &Recorded,
    body: &[u8],
    limit: Option<usize>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    // The same request, asking the upstream to close after answering so
    // that its response ends with the connection.
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (name, value) in request.headers.iter().filter(|(n, _)| n != "connection") {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    if server.write_all(&bytes).await.is_err() {
        return;
    }
    let Some(limit) = limit else {
        let _ = tokio::io::copy(&mut server, stream).await;
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0;
    while sent < limit {
        let n = match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n.min(limit - sent),
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
        sent += n;
    }
    let _ = stream.flush().await;
}
