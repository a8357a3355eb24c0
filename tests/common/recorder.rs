//! An HTTP/1.1 server on loopback that records the head of every request
//! (to see which `Authorization` headers berthd sends where) and answers each
//! as a handler says: a canned reply, or forwarded to an upstream such as a
//! [`super::Registry`]. One request per connection (`Connection: close`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Bound on a request head; berthd's are far smaller.
const MAX_HEAD: usize = 64 * 1024;

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
            bytes.extend_from_slice(&data[head_end + 4..]);
            if server.write_all(&bytes).await.is_err() {
                return;
            }
            let _ = tokio::io::copy(&mut server, &mut stream).await;
        }
    }
    let _ = stream.shutdown().await;
}
