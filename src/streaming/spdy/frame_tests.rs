use super::*;

/// Encodes `frames` with one encoder and decodes them with one decoder, as the
/// two ends of a connection do.
fn round_trip(frames: &[Frame]) -> Vec<Frame> {
    let mut encoder = Encoder::default();
    let mut wire = Vec::new();
    for frame in frames {
        encoder.encode(frame, &mut wire).unwrap();
    }
    decode_all(&wire)
}

fn decode_all(mut wire: &[u8]) -> Vec<Frame> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    while !wire.is_empty() {
        let head: [u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().unwrap();
        let len = body_len(&head);
        let body = Bytes::copy_from_slice(&wire[HEADER_LEN..HEADER_LEN + len]);
        out.push(decoder.decode(&head, body).unwrap());
        wire = &wire[HEADER_LEN + len..];
    }
    out
}

fn syn(stream_id: u32, kind: &str) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new(&[("streamType", kind), ("port", "80")]),
    }
}

#[test]
fn every_frame_type_round_trips_through_one_context() {
    let frames = vec![
        syn(1, "error"),
        syn(3, "stdout"),
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::default(),
        },
        Frame::SynReply {
            stream_id: 3,
            fin: true,
            headers: Headers::new(&[("a", "1\0two")]),
        },
        Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"hello"),
        },
        Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::new(),
        },
        Frame::RstStream {
            stream_id: 5,
            status: RST_CANCEL,
        },
        Frame::Settings {
            entries: vec![(4, 100), (7, 65536)],
        },
        Frame::Ping { id: 7 },
        Frame::GoAway {
            last_good_stream_id: 3,
            status: 0,
        },
        Frame::Headers {
            stream_id: 3,
            fin: false,
            headers: Headers::new(&[("x", "y")]),
        },
        Frame::WindowUpdate {
            stream_id: 3,
            delta: 1000,
        },
    ];
    let mut expected = frames.clone();
    // Names go on the wire in lower case.
    expected[0] = Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers(vec![
            ("streamtype".into(), "error".into()),
            ("port".into(), "80".into()),
        ]),
    };
    assert_eq!(round_trip(&frames), expected);
}

#[test]
fn header_lookup_ignores_case_and_takes_the_first_value() {
    let h = Headers::new(&[("StreamType", "data\0error"), ("requestID", "0")]);
    assert_eq!(h.get("streamtype"), Some("data"));
    assert_eq!(h.get("RequestId"), Some("0"));
    assert_eq!(h.get("port"), None);
}

#[test]
fn the_dictionary_does_the_compressing() {
    // Words of the dictionary cost almost nothing, even in the first block.
    let mut encoder = Encoder::default();
    let mut wire = Vec::new();
    let headers = Headers::new(&[("content-type", "text/plain"), ("user-agent", "x")]);
    let frame = Frame::SynReply {
        stream_id: 1,
        fin: false,
        headers,
    };
    encoder.encode(&frame, &mut wire).unwrap();
    let first = wire.len();
    encoder.encode(&frame, &mut wire).unwrap();
    // zlib header with the dictionary id: 0x78 0xf9 then e3c6a7c2.
    assert_eq!(&wire[12..18], &[0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2]);
    // The second block refers back to the first: smaller, and no zlib header.
    assert!(
        wire.len() - first < first,
        "{first} then {}",
        wire.len() - first
    );
    assert_eq!(decode_all(&wire), vec![frame.clone(), frame]);
}

#[test]
fn large_data_and_header_blocks() {
    let data = Bytes::from(vec![7u8; 200_000]);
    let value = "v".repeat(MAX_HEADER_BLOCK - 100);
    let frames = vec![
        Frame::Data {
            stream_id: 9,
            fin: false,
            data,
        },
        Frame::Headers {
            stream_id: 9,
            fin: false,
            headers: Headers(vec![("big".into(), value)]),
        },
    ];
    assert_eq!(round_trip(&frames), frames);
}

#[test]
fn a_header_block_that_inflates_too_far_is_refused() {
    // 1 MiB of one byte compresses to about a kilobyte: a zlib bomb that fits
    // easily in a control frame.
    let bomb = Frame::Headers {
        stream_id: 1,
        fin: false,
        headers: Headers(vec![("bomb".into(), "b".repeat(1 << 20))]),
    };
    let mut wire = Vec::new();
    Encoder::default().encode(&bomb, &mut wire).unwrap();
    assert!(wire.len() < MAX_CONTROL_FRAME, "{}", wire.len());
    let head: [u8; HEADER_LEN] = wire[..HEADER_LEN].try_into().unwrap();
    check_control_len(&head).unwrap();
    let body = Bytes::copy_from_slice(&wire[HEADER_LEN..]);
    let refused = Decoder::default().decode(&head, body);
    assert!(
        matches!(&refused, Err(FrameError::Compression(why)) if why.contains("16384")),
        "{refused:?}"
    );
    // Just under the limit still decodes.
    let fits = Frame::Headers {
        stream_id: 1,
        fin: false,
        headers: Headers(vec![("b".into(), "b".repeat(MAX_HEADER_BLOCK - 32))]),
    };
    assert_eq!(round_trip(std::slice::from_ref(&fits)), vec![fits]);
}

#[test]
fn control_frames_are_bounded_before_they_are_read() {
    // A SYN_STREAM announcing the largest length SPDY can carry.
    let mut head = [0u8; HEADER_LEN];
    head[..2].copy_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    head[2..4].copy_from_slice(&SYN_STREAM.to_be_bytes());
    head[5..].copy_from_slice(&(MAX_BODY as u32).to_be_bytes()[1..]);
    assert_eq!(
        check_control_len(&head),
        Err(FrameError::TooLarge {
            kind: SYN_STREAM,
            len: MAX_BODY
        })
    );
    let body = Bytes::from(vec![0u8; MAX_CONTROL_FRAME + 1]);
    head[5..].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    assert!(matches!(
        Decoder::default().decode(&head, body),
        Err(FrameError::TooLarge { .. })
    ));
    // Data frames may announce any length: they are read in pieces.
    let mut data = [0u8; HEADER_LEN];
    data[3] = 1;
    data[5..].copy_from_slice(&(MAX_BODY as u32).to_be_bytes()[1..]);
    assert!(is_data(&data) && check_control_len(&data).is_ok());
}

#[test]
fn bad_frames_are_errors_not_panics() {
    let mut decoder = Decoder::default();
    let control = |kind: u16, body: &[u8]| {
        let mut head = [0u8; HEADER_LEN];
        head[..2].copy_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
        head[2..4].copy_from_slice(&kind.to_be_bytes());
        head[5..].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        (head, Bytes::copy_from_slice(body))
    };
    let (mut head, body) = control(SYN_STREAM, &[0; 12]);
    head[1] = 2;
    assert_eq!(decoder.decode(&head, body), Err(FrameError::Version(2)));
    for (kind, body) in [
        (SYN_STREAM, &[0u8; 3][..]),
        (RST_STREAM, &[0; 4][..]),
        (PING, &[][..]),
        (SETTINGS, &[0, 0, 0, 9][..]),
    ] {
        let (head, body) = control(kind, body);
        assert!(
            matches!(
                decoder.decode(&head, body),
                Err(FrameError::Malformed { .. })
            ),
            "type {kind}"
        );
    }
    // Garbage where a zlib stream should be.
    let (head, body) = control(SYN_REPLY, &[0, 0, 0, 1, 1, 2, 3, 4]);
    assert!(matches!(
        Decoder::default().decode(&head, body),
        Err(FrameError::Compression(_))
    ));
    // An unknown control type is skipped.
    let (head, body) = control(42, &[1, 2]);
    assert_eq!(decoder.decode(&head, body), Ok(Frame::Unknown { kind: 42 }));
}

fn unhex(lines: &[&str]) -> Vec<u8> {
    let hex: String = lines.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn streamtype(headers: &Headers) -> &str {
    headers.get("streamtype").unwrap()
}

/// What crictl 1.32 (client-go's SPDY executor over moby/spdystream) sent for
/// `echo -n hi | crictl exec -i <id> cat`, recorded with strace: four streams,
/// then "hi" on stdin and its end.
#[test]
fn decodes_a_recorded_go_exec_session() {
    let wire = unhex(&[
        "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000",
        "ffff800300010000001700000003000000000000c22e555c92929907000000ffff80030001000000190000000500000000",
        "0000c22ac5565c92925f5a02000000ffff800300010000001500000007000000000000c229975a5404000000ffff00000003",
        "0000000268690000000301000000",
    ]);
    let frames = decode_all(&wire);
    let kinds: Vec<(u32, &str)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::SynStream {
                stream_id, headers, ..
            } => Some((*stream_id, streamtype(headers))),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]
    );
    assert_eq!(
        frames[4..],
        [
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"hi")
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new()
            },
        ]
    );
}

/// crictl port-forward handling one HTTP request: an error stream closed at
/// once, a data stream with the request, then the stream's reset, the client's
/// ping and its GOAWAY at exit.
#[test]
fn decodes_a_recorded_go_port_forward_session() {
    let wire = unhex(&[
        "800300010000003d0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45a024cc",
        "6461c0c0c0c0590489c44c50e2663400000000ffff0000000101000000800300010000001800000003000000000000c2",
        "aa15540a2512d209000000ffff0000000300000077474554202f20485454502f312e310d0a4163636570742d456e636f",
        "64696e673a206964656e746974790d0a486f73743a203132372e302e302e313a31383039300d0a557365722d4167656e",
        "743a20507974686f6e2d75726c6c69622f332e31310d0a436f6e6e656374696f6e3a20636c6f73650d0a0d0a80030003",
        "00000008000000030000000580030006000000040000000180030007000000080000000000000000",
    ]);
    let frames = decode_all(&wire);
    assert_eq!(frames.len(), 7, "{frames:?}");
    let Frame::SynStream { headers, .. } = &frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(
        (
            streamtype(headers),
            headers.get("port"),
            headers.get("requestID")
        ),
        ("error", Some("80"), Some("0"))
    );
    assert!(
        matches!(frames[1], Frame::Data { stream_id: 1, fin: true, ref data } if data.is_empty())
    );
    let Frame::SynStream {
        stream_id: 3,
        headers,
        ..
    } = &frames[2]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(
        (streamtype(headers), headers.get("port")),
        ("data", Some("80"))
    );
    assert!(
        matches!(&frames[3], Frame::Data { stream_id: 3, fin: false, data } if data.starts_with(b"GET / HTTP/1.1\r\n"))
    );
    assert_eq!(
        frames[4..],
        [
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 0,
                status: 0
            },
        ]
    );
}
