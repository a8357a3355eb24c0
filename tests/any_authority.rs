//! Any gRPC client can call berthd (issue 13 item 1): clients that dial the unix
//! socket with grpc-go's or gRPC core's defaults send the socket path (grpc-go
//! and gRPC core percent-encoded) as the HTTP/2 `:authority`, which `h2` alone
//! answers with RST_STREAM PROTOCOL_ERROR.
//!
//! - a raw HTTP/2 client (frames written by hand, HPACK from fluke-hpack) sends
//!   the authorities real clients send and gets a Version reply;
//! - Python `grpcio` with no channel options gets a Version reply;
//! - random authorities and random header blocks never take berthd down.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use common::TestBed;
use common::daemon::Cri;
use common::rng::{Rng, seed};
use fluke_hpack::{Decoder, Encoder};
use k8s_cri::v1::VersionResponse;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// One call's answer must come well within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const VERSION_PATH: &[u8] = b"/runtime.v1.RuntimeService/Version";

/// An HTTP/2 client that writes its own frames, so it can send any `:authority`
/// (the `h2` client crate only sends what parses as a URI authority).
struct RawH2 {
    conn: UnixStream,
    encoder: Encoder<'static>,
    decoder: Decoder<'static>,
    next_stream: u32,
    read: BytesMut,
}

impl RawH2 {
    async fn connect(socket: &Path) -> RawH2 {
        let mut conn = UnixStream::connect(socket).await.expect("connect");
        let mut hello = BytesMut::from(PREFACE);
        put_frame(&mut hello, SETTINGS, 0, 0, &[]);
        conn.write_all(&hello).await.unwrap();
        RawH2 {
            conn,
            encoder: Encoder::new(),
            decoder: Decoder::new(),
            next_stream: 1,
            read: BytesMut::new(),
        }
    }

    /// A gRPC Version call with this `:authority`: the reply, or what went wrong.
    async fn version(&mut self, authority: &[u8]) -> Result<VersionResponse, String> {
        let block = self.encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", VERSION_PATH),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]);
        self.send_block(&block).await
    }

    /// Sends a header block as is (the caller encoded it) and an empty request.
    async fn send_block(&mut self, block: &[u8]) -> Result<VersionResponse, String> {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut out = BytesMut::new();
        put_frame(&mut out, HEADERS, END_HEADERS, id, block);
        // An empty VersionRequest: uncompressed, length 0.
        put_frame(&mut out, DATA, END_STREAM, id, &[0, 0, 0, 0, 0]);
        self.conn.write_all(&out).await.map_err(|e| e.to_string())?;
        tokio::time::timeout(CALL_TIMEOUT, self.answer(id))
            .await
            .map_err(|_| "no answer in time".to_string())?
    }

    async fn answer(&mut self, id: u32) -> Result<VersionResponse, String> {
        let mut body = Vec::new();
        let mut block = Vec::new();
        loop {
            let (frame_type, flags, stream, payload) = self.frame().await?;
            match frame_type {
                SETTINGS if flags & ACK == 0 => {
                    let mut ack = BytesMut::new();
                    put_frame(&mut ack, SETTINGS, ACK, 0, &[]);
                    self.conn.write_all(&ack).await.map_err(|e| e.to_string())?;
                }
                GOAWAY => return Err(format!("GOAWAY {payload:?}")),
                RST_STREAM if stream == id => {
                    return Err(format!(
                        "RST_STREAM code {}",
                        u32::from_be_bytes(payload[..4].try_into().unwrap())
                    ));
                }
                DATA if stream == id => body.extend_from_slice(&payload),
                HEADERS | CONTINUATION => {
                    block.extend_from_slice(&payload);
                    if flags & END_HEADERS == 0 {
                        continue;
                    }
                    let headers = self.decoder.decode(&block).map_err(|e| format!("{e:?}"))?;
                    block.clear();
                    if stream == id
                        && (flags & END_STREAM != 0
                            || headers.iter().any(|h| h.0 == b"grpc-status"))
                    {
                        return grpc_reply(&headers, &body);
                    }
                }
                _ => {}
            }
        }
    }

    async fn frame(&mut self) -> Result<(u8, u8, u32, Vec<u8>), String> {
        loop {
            if self.read.len() >= 9 {
                let len = (usize::from(self.read[0]) << 16)
                    | (usize::from(self.read[1]) << 8)
                    | usize::from(self.read[2]);
                if self.read.len() >= 9 + len {
                    let head = self.read.split_to(9);
                    let payload = self.read.split_to(len).to_vec();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                    return Ok((head[3], head[4], stream, payload));
                }
            }
            let mut buf = [0u8; 16384];
            let n = self.conn.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.read.extend_from_slice(&buf[..n]);
        }
    }
}

fn put_frame(out: &mut BytesMut, frame_type: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(frame_type);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// The reply of a finished call: its status must be OK and its body a VersionResponse.
fn grpc_reply(headers: &[(Vec<u8>, Vec<u8>)], body: &[u8]) -> Result<VersionResponse, String> {
    let status = headers
        .iter()
        .find(|h| h.0 == b"grpc-status")
        .map(|h| String::from_utf8_lossy(&h.1).into_owned());
    if status.as_deref() != Some("0") {
        return Err(format!("grpc-status {status:?}, headers {headers:?}"));
    }
    let mut body = body;
    if body.len() < 5 {
        return Err(format!("short gRPC message {body:?}"));
    }
    body.advance(5);
    VersionResponse::decode(body).map_err(|e| e.to_string())
}

fn assert_berth(reply: &VersionResponse) {
    assert_eq!(reply.runtime_name, "berth", "{reply:?}");
}

/// What grpc-go, gRPC core and grpc-java put in `:authority` for this socket.
fn client_authorities(socket: &Path) -> Vec<Vec<u8>> {
    let path = socket.to_str().unwrap();
    vec![
        path.replace('/', "%2F").into_bytes(),
        path.as_bytes().to_vec(),
        format!("unix:{path}").into_bytes(),
        format!("unix://{path}").into_bytes(),
        Vec::new(),
        b"localhost".to_vec(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_path_authorities_get_a_version_reply() {
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let env = &bed.env;
    let mut client = RawH2::connect(&env.socket).await;
    for authority in client_authorities(&env.socket) {
        let reply = client
            .version(&authority)
            .await
            .unwrap_or_else(|e| panic!("authority {:?}: {e}", String::from_utf8_lossy(&authority)));
        assert_berth(&reply);
    }
}

const PYTHON_CLIENT: &str = r#"
import sys, grpc
# No channel options: the authority is whatever gRPC core derives from the target.
with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
    version = channel.unary_unary("/runtime.v1.RuntimeService/Version")
    print(version(b"", timeout=10).hex())
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_grpcio_with_defaults_gets_a_version_reply() {
    if !common::prerequisites_met() {
        return;
    }
    let has_grpcio = Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_grpcio {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 grpcio missing under CI (make deps installs it)"
        );
        eprintln!("SKIPPED: python3 grpcio is not installed");
        return;
    }
    let Some(bed) = TestBed::start().await else {
        return;
    };
    let socket = bed.env.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(["-c", PYTHON_CLIENT])
            .arg(&socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8(out.stdout).unwrap();
    let reply = VersionResponse::decode(&*hex::decode(hex.trim()).unwrap()).unwrap();
    assert_berth(&reply);
}

/// Octets that trip URI parsers, over-represented.
const NASTY: &[u8] = b"%/:@[]?#\\ \t\r\n\0\x7f\xff\xc3";

fn random_authority(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => rng.below(8),
        1 => rng.below(64),
        2 => rng.below(512),
        _ => rng.below(6000),
    };
    (0..len)
        .map(|_| match rng.below(3) {
            0 => NASTY[rng.below(NASTY.len())],
            1 => b'a' + rng.below(26) as u8,
            _ => rng.next() as u8,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn random_authorities_and_header_blocks_never_crash_berthd() {
    let Some(mut bed) = TestBed::start().await else {
        return;
    };
    let mut rng = Rng(seed("BERTH_AUTHORITY_SEED"));
    let TestBed { berthd, env, .. } = &mut bed;
    for _ in 0..4 {
        let mut client = RawH2::connect(&env.socket).await;
        for _ in 0..100 {
            let authority = random_authority(&mut rng);
            let reply = client.version(&authority).await.unwrap_or_else(|e| {
                panic!("authority {:?}: {e}", String::from_utf8_lossy(&authority))
            });
            assert_berth(&reply);
        }
    }
    // Header blocks of random octets: the connection may be closed, the stream
    // reset or the call answered; berthd stays up for everyone else.
    for _ in 0..50 {
        let mut client = RawH2::connect(&env.socket).await;
        let block: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        let _ = client.send_block(&block).await;
    }
    assert!(berthd.is_running(), "berthd died; log:\n{}", berthd.log());
    let cri = Cri::connect(&env.socket).await.unwrap();
    assert_berth(&cri.version().await);
    assert!(!berthd.log().contains("panicked"), "berthd panicked");
}
