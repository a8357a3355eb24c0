//! Exec, Attach and PortForward against a real berthd, the berth shim, runc and a
//! pod: the URLs the calls return and the sessions behind them, driven with a
//! SPDY client on berth's own frame codec the way client-go (the kubelet,
//! crictl, critest) drives them — output, input to its end, a terminal and its
//! resizes, exit codes, stdin_once, connections into the pod's network
//! namespace and the host's — and, when crictl is installed, through crictl
//! with both its transports, SPDY and WebSocket.

mod common;

use std::process::Stdio;
use std::time::Duration;

use berth::streaming::spdy::{Frame, Headers};
use common::image::Image;
use common::spdy::{self, Client};
use common::world::{APPLETS, GROUP, PASSWD, World, busybox_layer};
use k8s_cri::v1 as cri;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// busybox with what the sessions below run.
fn streaming_image() -> Image {
    let mut applets = APPLETS.to_vec();
    applets.extend(["stty", "tty", "nc", "wc"]);
    Image::oci()
        .layer(busybox_layer(&applets, PASSWD, GROUP).gzip())
        .env("PATH=/bin")
        .cmd(&["sh"])
        .build()
}

struct Bed {
    w: World,
    image: String,
}

impl Bed {
    async fn start() -> Option<Bed> {
        let w = World::start().await?;
        let image = w.add_image(&streaming_image(), "streaming").await;
        Some(Bed { w, image })
    }

    fn config(&self, name: &str, command: &[&str]) -> cri::ContainerConfig {
        let mut config = self.w.container_config(name, "");
        config.image = Some(cri::ImageSpec {
            image: self.image.clone(),
            ..Default::default()
        });
        config.command = command.iter().map(|s| s.to_string()).collect();
        config
    }

    async fn run(
        &self,
        pod: &(String, cri::PodSandboxConfig),
        config: cri::ContainerConfig,
    ) -> String {
        let id = self.w.create(pod, config).await.expect("CreateContainer");
        self.w.start_container(&id).await;
        id
    }

    async fn exec(&self, request: cri::ExecRequest) -> Result<String, tonic::Status> {
        Ok(self
            .w
            .cri
            .runtime_client()
            .exec(request)
            .await?
            .into_inner()
            .url)
    }

    async fn attach(&self, request: cri::AttachRequest) -> Result<String, tonic::Status> {
        Ok(self
            .w
            .cri
            .runtime_client()
            .attach(request)
            .await?
            .into_inner()
            .url)
    }

    async fn port_forward(&self, pod: &str) -> Result<String, tonic::Status> {
        let request = cri::PortForwardRequest {
            pod_sandbox_id: pod.to_string(),
            port: vec![],
        };
        Ok(self
            .w
            .cri
            .runtime_client()
            .port_forward(request)
            .await?
            .into_inner()
            .url)
    }
}

fn exec_request(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

const RESIZE_100X30: &[u8] = b"{\"Width\":100,\"Height\":30}\n";

/// Shell that waits (up to 20 s) for the terminal to be 100x30 before it reads a
/// line, so the resize and the input may arrive in either order; a resize that
/// never arrives shows as the wrong `stty size`.
macro_rules! after_resize {
    ($rest:literal) => {
        concat!(
            "i=0; until case \"$(stty size)\" in '30 100') true;; *) false;; esac; do ",
            "i=$((i+1)); case $i in 400) break;; esac; sleep 0.05; done; ",
            $rest
        )
    };
}
const AFTER_RESIZE: &str = after_resize!("read line; stty size; tty; echo got:$line");

#[tokio::test(flavor = "multi_thread")]
async fn exec_carries_output_input_terminal_and_exit_codes() {
    let Some(bed) = Bed::start().await else {
        return;
    };
    let pod = bed.w.run_pod("exec").await;
    let id = bed.run(&pod, bed.config("app", &["sleep", "1000"])).await;

    // Both outputs, then a failure's exit code in a v4 status.
    let script = ["sh", "-c", "echo out; echo err >&2; exit 3"];
    let url = bed
        .exec(exec_request(&id, &script, false, false))
        .await
        .unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
        "{url}"
    );
    let mut c = Client::connect(&url, spdy::REMOTECOMMAND).await.unwrap();
    assert_eq!(c.protocol, "v4.channel.k8s.io");
    let error = c.open(&[("streamType", "error")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let stderr = c.open(&[("streamType", "stderr")]).await;
    assert_eq!(c.read_to_end(stdout).await, b"out\n");
    assert_eq!(c.read_to_end(stderr).await, b"err\n");
    let status = spdy::status(&c.read_to_end(error).await);
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    c.wait_closed().await;

    // Input to its end: cat sees end-of-file and exits 0.
    let url = bed
        .exec(exec_request(&id, &["cat"], true, false))
        .await
        .unwrap();
    let mut c = Client::connect(&url, spdy::REMOTECOMMAND).await.unwrap();
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let stderr = c.open(&[("streamType", "stderr")]).await;
    let big = common::noise(300_000, 7);
    c.send(stdin, b"hello ", false).await;
    c.send(stdin, &big, false).await;
    c.send(stdin, b"world", true).await;
    let out = c.read_to_end(stdout).await;
    assert_eq!(out.len(), 6 + big.len() + 5);
    assert!(out.starts_with(b"hello ") && out.ends_with(b"world") && out[6..6 + big.len()] == big);
    assert_eq!(c.read_to_end(stderr).await, b"");
    let status = spdy::status(&c.read_to_end(error).await);
    assert_eq!(status["status"], "Success", "{status}");
    c.wait_closed().await;

    // A terminal: one output, the size the client sets, input through the line
    // discipline.
    let script = ["sh", "-c", AFTER_RESIZE];
    let url = bed
        .exec(exec_request(&id, &script, true, true))
        .await
        .unwrap();
    let mut c = Client::connect(&url, spdy::REMOTECOMMAND).await.unwrap();
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let resize = c.open(&[("streamType", "resize")]).await;
    c.send(resize, RESIZE_100X30, false).await;
    c.send(stdin, b"x\n", false).await;
    let out = String::from_utf8(c.read_to_end(stdout).await).unwrap();
    assert!(out.contains("30 100\r\n"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("got:x\r\n"), "{out:?}");
    let status = spdy::status(&c.read_to_end(error).await);
    assert_eq!(status["status"], "Success", "{status}");
    c.wait_closed().await;

    // URLs are single-use.
    let (head, _) =
        spdy::request(&url, &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // An older client gets the protocol it speaks, and text errors.
    let url = bed
        .exec(exec_request(&id, &["sh", "-c", "exit 2"], false, false))
        .await
        .unwrap();
    let mut c = Client::connect(&url, &["v2.channel.k8s.io"]).await.unwrap();
    assert_eq!(c.protocol, "v2.channel.k8s.io");
    let error = c.open(&[("streamType", "error")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let _stderr = c.open(&[("streamType", "stderr")]).await;
    c.read_to_end(stdout).await;
    let message = String::from_utf8(c.read_to_end(error).await).unwrap();
    assert_eq!(message, "command terminated with non-zero exit code: 2");

    // What the server refuses before any session.
    let url = bed
        .exec(exec_request(&id, &["true"], false, false))
        .await
        .unwrap();
    let refused = Client::connect(&url, &["v9.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.head);
    assert!(
        refused
            .head
            .to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{}",
        refused.head
    );
    let url = bed
        .exec(exec_request(&id, &["true"], false, false))
        .await
        .unwrap();
    let (head, _) = spdy::request(&url, &[]).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let base = &url[..url.find("/exec/").unwrap()];
    let (head, _) = spdy::request(&format!("{base}/exec/bogus"), &[]).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // And what the calls refuse.
    let code = |r: Result<String, tonic::Status>| r.unwrap_err().code();
    let mut tty_and_stderr = exec_request(&id, &["true"], false, true);
    tty_and_stderr.stderr = true;
    assert_eq!(
        code(bed.exec(tty_and_stderr).await),
        tonic::Code::InvalidArgument
    );
    let mut no_stdio = exec_request(&id, &["true"], false, false);
    no_stdio.stdout = false;
    no_stdio.stderr = false;
    assert_eq!(code(bed.exec(no_stdio).await), tonic::Code::InvalidArgument);
    assert_eq!(
        code(bed.exec(exec_request(&id, &[], false, false)).await),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            bed.exec(exec_request("nonexistent", &["true"], false, false))
                .await
        ),
        tonic::Code::NotFound
    );
    assert_eq!(
        code(bed.port_forward("nonexistent").await),
        tonic::Code::NotFound
    );
    bed.w.stop(&id, 0).await;
    assert_eq!(
        code(bed.exec(exec_request(&id, &["true"], false, false)).await),
        tonic::Code::FailedPrecondition
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_follows_output_and_feeds_stdin() {
    let Some(bed) = Bed::start().await else {
        return;
    };
    let pod = bed.w.run_pod("attach").await;

    // A shell reading its commands from a stdin_once stdin, as critest's.
    let mut config = bed.config("shell", &["sh"]);
    config.stdin = true;
    config.stdin_once = true;
    let shell = bed.run(&pod, config).await;
    let attach = cri::AttachRequest {
        container_id: shell.clone(),
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
    };
    let url = bed.attach(attach.clone()).await.unwrap();
    assert!(url.contains("/attach/"), "{url}");
    let mut c = Client::connect(&url, spdy::REMOTECOMMAND).await.unwrap();
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let stderr = c.open(&[("streamType", "stderr")]).await;
    c.send(stdin, b"echo hi; echo oops >&2\n", false).await;
    c.read_until(stdout, "hi\n").await;
    c.read_until(stderr, "oops\n").await;
    // The end of the client's input closes the container's stdin: sh exits.
    c.send(stdin, b"echo -n last\n", true).await;
    assert_eq!(c.read_to_end(stdout).await, b"hi\nlast");
    let status = spdy::status(&c.read_to_end(error).await);
    assert_eq!(status["status"], "Success", "{status}");
    c.wait_closed().await;
    assert_eq!(bed.w.wait_exited(&shell).await.exit_code, 0);
    // The log has it all too.
    bed.w.wait_log("attach", "shell", "hi").await;
    bed.w.wait_log("attach", "shell", "last").await;
    bed.w.wait_log("attach", "shell", "oops").await;

    // A terminal container: one output, the size the client sets.
    let mut config = bed.config(
        "term",
        &[
            "sh",
            "-c",
            after_resize!("read line; stty size; echo got:$line"),
        ],
    );
    config.stdin = true;
    config.tty = true;
    let term = bed.run(&pod, config).await;
    let url = bed
        .attach(cri::AttachRequest {
            container_id: term.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap();
    let mut c = Client::connect(&url, spdy::REMOTECOMMAND).await.unwrap();
    let error = c.open(&[("streamType", "error")]).await;
    let stdin = c.open(&[("streamType", "stdin")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    let resize = c.open(&[("streamType", "resize")]).await;
    c.send(resize, RESIZE_100X30, false).await;
    c.send(stdin, b"y\n", false).await;
    let out = String::from_utf8(c.read_to_end(stdout).await).unwrap();
    assert!(
        out.contains("30 100\r\n") && out.contains("got:y\r\n"),
        "{out:?}"
    );
    let status = spdy::status(&c.read_to_end(error).await);
    assert_eq!(status["status"], "Success", "{status}");

    // Without stdin: output only, from the moment of attaching; a client that
    // leaves takes nothing with it.
    let config = bed.config(
        "ticker",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let ticker = bed.run(&pod, config).await;
    for _ in 0..2 {
        let url = bed
            .attach(cri::AttachRequest {
                container_id: ticker.clone(),
                stdin: false,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap();
        let mut c = Client::connect(&url, spdy::REMOTECOMMAND).await.unwrap();
        c.open(&[("streamType", "error")]).await;
        let stdout = c.open(&[("streamType", "stdout")]).await;
        c.open(&[("streamType", "stderr")]).await;
        c.read_until(stdout, "\ntick").await;
        drop(c);
    }
    assert_eq!(bed.w.status(&ticker).await.state, common::world::RUNNING);

    // Attaching needs a running container.
    bed.w.stop(&ticker, 0).await;
    let err = bed
        .attach(cri::AttachRequest {
            container_id: ticker,
            ..attach
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

/// Forwards one connection to `port` on a port-forward session: `payload` out,
/// its echo back, then the end of input; returns the error stream's text.
async fn forward_echo(c: &mut Client, request: &str, port: u16, payload: &[u8]) -> String {
    let port = port.to_string();
    let headers = |kind| {
        [
            ("streamType", kind),
            ("port", port.as_str()),
            ("requestID", request),
        ]
    };
    // As client-go: the error stream first, closed at once from this side.
    let error = c.open(&headers("error")).await;
    c.send(error, b"", true).await;
    let data = c.open(&headers("data")).await;
    if !payload.is_empty() {
        c.send(data, payload, false).await;
        c.wait("the echo", |c| c.streams[&data].data.len() >= payload.len())
            .await;
        assert_eq!(c.streams[&data].data, payload);
    }
    c.send(data, b"", true).await;
    c.read_to_end(data).await;
    String::from_utf8(c.read_to_end(error).await).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_the_pod_loopback() {
    let Some(bed) = Bed::start().await else {
        return;
    };
    let pod = bed.w.run_pod("forward").await;
    // An echo server on every address of the pod, loopback included.
    bed.run(
        &pod,
        bed.config("echo", &["nc", "-ll", "-p", "8080", "-e", "cat"]),
    )
    .await;
    let url = bed.port_forward(&pod.0).await.unwrap();
    assert!(url.contains("/portforward/"), "{url}");
    // Port forwarding is not remotecommand, and a refused URL is spent.
    let refused = Client::connect(&url, spdy::REMOTECOMMAND)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.head);
    let refused = Client::connect(&url, spdy::PORTFORWARD)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 404, "{}", refused.head);
    let url = bed.port_forward(&pod.0).await.unwrap();
    let mut c = Client::connect(&url, spdy::PORTFORWARD).await.unwrap();
    assert_eq!(c.protocol, "portforward.k8s.io");
    let mut payload = b"ping\n".to_vec();
    payload.extend(common::noise(100_000, 3));
    // The server may not listen yet.
    common::wait_for("the pod's echo server", Duration::from_secs(10), || async {
        let url = bed.port_forward(&pod.0).await.unwrap();
        let mut probe = Client::connect(&url, spdy::PORTFORWARD).await.unwrap();
        forward_echo(&mut probe, "0", 8080, b"")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(forward_echo(&mut c, "0", 8080, &payload).await, "");
    // More connections on the same session, one to a closed port.
    assert_eq!(forward_echo(&mut c, "1", 8080, b"again").await, "");
    let failed = forward_echo(&mut c, "2", 8081, b"").await;
    assert!(
        failed.contains("8081") && failed.contains("refused"),
        "{failed}"
    );
    let invalid = forward_echo(&mut c, "3", 0, b"").await;
    assert!(invalid.contains("invalid port"), "{invalid}");

    // A host-network pod: the host's loopback.
    let host_pod = bed
        .w
        .run_pod_with(common::pod::host_network(bed.w.pod_config("forward-host")))
        .await;
    let port = 20000 + rand::random::<u16>() % 20000;
    let port_text = port.to_string();
    bed.run(
        &host_pod,
        bed.config("echo", &["nc", "-ll", "-p", &port_text, "-e", "cat"]),
    )
    .await;
    common::wait_for("the host echo server", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let url = bed.port_forward(&host_pod.0).await.unwrap();
    let mut c = Client::connect(&url, spdy::PORTFORWARD).await.unwrap();
    assert_eq!(forward_echo(&mut c, "0", port, b"host\n").await, "");
}

/// berthd's anonymous resident memory (what a leak grows), in MiB.
fn rss_mib(pid: u32) -> u64 {
    common::anon_rss_kib(pid) / 1024
}

/// Runs `echo ok` in container `id` over SPDY and checks its output and status:
/// the proof that exec still works for everyone else.
async fn exec_works(bed: &Bed, id: &str) {
    let url = bed
        .exec(exec_request(id, &["echo", "ok"], false, false))
        .await
        .expect("Exec for another pod");
    let mut c = Client::connect(&url, spdy::REMOTECOMMAND).await.unwrap();
    let error = c.open(&[("streamType", "error")]).await;
    let stdout = c.open(&[("streamType", "stdout")]).await;
    c.open(&[("streamType", "stderr")]).await;
    assert_eq!(c.read_to_end(stdout).await, b"ok\n");
    let status = spdy::status(&c.read_to_end(error).await);
    assert_eq!(status["status"], "Success", "{status}");
}

/// Upgrades `url` with `headers` and hands back the raw socket, for a client
/// that misbehaves.
async fn upgraded(url: &str, headers: &[(&str, &str)]) -> tokio::net::TcpStream {
    let (head, tcp) = spdy::request(url, headers).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

async fn raw_spdy(url: &str, protocol: &str) -> tokio::net::TcpStream {
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", protocol),
    ];
    upgraded(url, &headers).await
}

/// Whether the server closes `tcp` within a few seconds, reading (and
/// dropping) what it sends meanwhile.
async fn closed_soon(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .is_ok()
}

fn encode(encoder: &mut berth::streaming::spdy::Encoder, frame: &Frame) -> Vec<u8> {
    let mut wire = Vec::new();
    encoder.encode(frame, &mut wire).unwrap();
    wire
}

fn syn_stream(stream_id: u32, headers: &[(&str, &str)]) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(headers),
    }
}

/// A masked client WebSocket frame header announcing `len` bytes (mask zero,
/// so the payload goes as is).
fn ws_head(opcode: u8, len: u64) -> Vec<u8> {
    let mut head = vec![0x80 | opcode, 0x80 | 127];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[0; 4]);
    head
}

/// The opcodes of the server's WebSocket frames until it closes the socket.
async fn ws_opcodes(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut opcodes = Vec::new();
    let read = async {
        loop {
            let mut head = [0u8; 2];
            if tcp.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = match head[1] & 0x7f {
                126 => u64::from(tcp.read_u16().await.unwrap()),
                127 => tcp.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            opcodes.push(head[0] & 0x0f);
            let mut payload = (&mut *tcp).take(len);
            if tokio::io::copy(&mut payload, &mut tokio::io::sink())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server closes the WebSocket");
    opcodes
}

/// Floods of hostile frames, streams and calls from one pod's streaming
/// sessions: each is cut off at its bound, berthd's memory stays put, and exec
/// into another pod works throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_streaming_client_gains_nothing() {
    let Some(bed) = Bed::start().await else {
        return;
    };
    let victim_pod = bed.w.run_pod("victim").await;
    let victim = bed
        .run(&victim_pod, bed.config("app", &["sleep", "1000"]))
        .await;
    let hostile_pod = bed.w.run_pod("hostile").await;
    let hostile = bed
        .run(&hostile_pod, bed.config("app", &["sleep", "1000"]))
        .await;
    exec_works(&bed, &victim).await;
    let pid = bed.w.berthd.pid();
    let rss_before = rss_mib(pid);

    // A control frame announcing 16 MiB: refused from its header, not read.
    let url = bed.port_forward(&hostile_pod.0).await.unwrap();
    let mut tcp = raw_spdy(&url, "portforward.k8s.io").await;
    let mut huge = vec![0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff];
    huge.extend(vec![0u8; 64 * 1024]);
    let _ = tcp.write_all(&huge).await;
    assert!(closed_soon(&mut tcp).await, "a 16 MiB control frame");

    // A header block of a few hundred bytes that inflates to 512 KiB.
    let url = bed.port_forward(&hostile_pod.0).await.unwrap();
    let mut tcp = raw_spdy(&url, "portforward.k8s.io").await;
    let mut encoder = berth::streaming::spdy::Encoder::default();
    let bomb = "b".repeat(512 * 1024);
    let wire = encode(&mut encoder, &syn_stream(1, &[("streamtype", &bomb)]));
    assert!(wire.len() < 4096, "{}", wire.len());
    let _ = tcp.write_all(&wire).await;
    assert!(closed_soon(&mut tcp).await, "a zlib bomb");

    // Thousands of port-forward streams never paired, each carrying 32 KiB:
    // past the bounds they are refused and their data dropped; what is kept
    // waits within the connection's budget, and the connection stalls.
    let url = bed.port_forward(&hostile_pod.0).await.unwrap();
    let tcp = raw_spdy(&url, "portforward.k8s.io").await;
    let (mut rd, mut wr) = tcp.into_split();
    let drain = tokio::spawn(async move { tokio::io::copy(&mut rd, &mut tokio::io::sink()).await });
    let flood = tokio::spawn(async move {
        let mut encoder = berth::streaming::spdy::Encoder::default();
        let data = bytes::Bytes::from(vec![b'x'; 32 * 1024]);
        for i in 0..4000u32 {
            let id = 2 * i + 1;
            let request = i.to_string();
            let headers = [
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", request.as_str()),
            ];
            let mut wire = encode(&mut encoder, &syn_stream(id, &headers));
            let frame = Frame::Data {
                stream_id: id,
                fin: false,
                data: data.clone(),
            };
            wire.extend(encode(&mut encoder, &frame));
            if wr.write_all(&wire).await.is_err() {
                break;
            }
        }
        wr
    });
    // The flood goes on while another pod's exec works.
    let flooding = tokio::time::timeout(Duration::from_secs(3), flood);
    exec_works(&bed, &victim).await;
    let flooded = flooding.await;

    // A WebSocket ping of a megabyte is not echoed: it ends the connection.
    let url = bed
        .exec(exec_request(&hostile, &["sleep", "2"], false, false))
        .await
        .unwrap();
    let ws_headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ];
    let mut tcp = upgraded(&url, &ws_headers).await;
    let mut ping = ws_head(0x9, 1 << 20);
    ping.extend(vec![b'p'; 1 << 20]);
    let _ = tcp.write_all(&ping).await;
    let opcodes = ws_opcodes(&mut tcp).await;
    assert!(!opcodes.contains(&0xa), "a pong: {opcodes:?}");

    let rss_after = rss_mib(pid);
    assert!(
        rss_after < rss_before + 48,
        "berthd grew from {rss_before} MiB to {rss_after} MiB"
    );
    drop((flooded, drain));
    exec_works(&bed, &victim).await;

    // A flood of Exec calls on one container is refused at that container's
    // own bound, naming it, and everyone else's exec goes on.
    let mut issued = 0;
    let refused = loop {
        match bed
            .exec(exec_request(&hostile, &["true"], false, false))
            .await
        {
            Ok(_) => issued += 1,
            Err(status) => break status,
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains(&hostile) && refused.message().contains("limit"),
        "{refused:?}"
    );
    assert!(issued < 100, "{issued} tokens for one container");
    exec_works(&bed, &victim).await;
}

/// crictl from PATH, or why the test is skipped (crictl is not a Debian package,
/// so CI has none: the tests above cover the protocol without it).
fn crictl() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("crictl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED: crictl is not installed");
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn crictl_exec_attach_and_port_forward() {
    let Some(crictl) = crictl() else {
        return;
    };
    let Some(bed) = Bed::start().await else {
        return;
    };
    let endpoint = format!("unix://{}", bed.w.env.socket.display());
    let command = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&crictl);
        cmd.args(["--runtime-endpoint", &endpoint, "--timeout", "30s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };
    let run = |args: &[&str], input: &'static [u8]| {
        let mut child = command(args).spawn().expect("run crictl");
        async move {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input).await.unwrap();
            drop(stdin);
            tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("crictl finishes")
                .unwrap()
        }
    };
    let pod = bed.w.run_pod("crictl").await;
    let id = bed
        .run(
            &pod,
            bed.config("app", &["nc", "-ll", "-p", "8080", "-e", "cat"]),
        )
        .await;

    // Both transports crictl has: SPDY (its default) and WebSocket.
    for transport in ["spdy", "websocket"] {
        fn exec<'a>(transport: &'a str, args: &[&'a str]) -> Vec<&'a str> {
            [&["exec", "--transport", transport][..], args].concat()
        }
        let out = run(&exec(transport, &["-i", &id, "wc", "-c"]), b"twelve bytes").await;
        assert!(out.status.success(), "{transport}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12");
        let script = ["sh", "-c", "echo out; echo err >&2; exit 4"];
        let out = run(
            &exec(transport, &[&[id.as_str()][..], &script].concat()),
            b"",
        )
        .await;
        assert!(!out.status.success());
        assert_eq!(out.stdout, b"out\n", "{transport}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("\nerr\n") || stderr.starts_with("err\n"),
            "{transport}: {stderr}"
        );
        assert!(stderr.contains("exit code 4"), "{transport}: {stderr}");

        let mut config = bed.config(&format!("shell-{transport}"), &["sh"]);
        config.stdin = true;
        config.stdin_once = true;
        let shell = bed.run(&pod, config).await;
        let attach = ["attach", "--transport", transport, "-i", &shell];
        let out = run(&attach, b"echo -n attached\n").await;
        assert!(out.status.success(), "{transport}: {out:?}");
        assert_eq!(out.stdout, b"attached", "{transport}");

        let local = 30000 + rand::random::<u16>() % 20000;
        let mapping = format!("{local}:8080");
        let mut forward = command(&["port-forward", "--transport", transport, &pod.0, &mapping])
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(forward.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_default();
        assert!(line.starts_with("Forwarding from"), "{transport}: {line}");
        common::wait_for(
            "an echo through crictl port-forward",
            Duration::from_secs(20),
            || async {
                let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", local))
                    .await
                    .ok()?;
                tcp.write_all(b"through crictl\n").await.ok()?;
                let mut buf = [0u8; 15];
                tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                (&buf == b"through crictl\n").then_some(())
            },
        )
        .await;
        forward.kill().await.unwrap();
    }
}
