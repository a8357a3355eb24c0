use bytes::{BufMut, BytesMut};
use fluke_hpack::{Decoder, Encoder};

use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
type Headers = Vec<(Vec<u8>, Vec<u8>)>;

fn request(authority: &[u8]) -> Headers {
    [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/runtime.v1.RuntimeService/Version"),
        (b":authority", authority),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.to_vec(), v.to_vec()))
    .collect()
}

fn frame(out: &mut BytesMut, frame_type: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(frame_type);
    out.put_u8(flags);
    out.put_u32(stream);
    out.put_slice(payload);
}

/// Appends a request's HEADERS frame (END_HEADERS) on `stream`, encoded by
/// the connection's client `encoder`.
fn push_request(encoder: &mut Encoder, input: &mut BytesMut, stream: u32, authority: &[u8]) {
    let block = encoder.encode(request(authority).iter().map(|(n, v)| (&n[..], &v[..])));
    frame(input, TYPE_HEADERS, FLAG_END_HEADERS, stream, &block);
}

/// Parses frames back: (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// Runs `input` through a rewriter in pieces of `step` octets.
fn rewrite(input: &[u8], step: usize) -> Result<BytesMut, RewriteError> {
    let mut rewriter = Rewriter::default();
    let mut raw = BytesMut::new();
    let mut out = BytesMut::new();
    for piece in input.chunks(step) {
        raw.extend_from_slice(piece);
        rewriter.feed(&mut raw, &mut out)?;
    }
    assert!(raw.is_empty(), "{} octets left unconsumed", raw.len());
    Ok(out)
}

/// The header lists `h2` would decode from the rewritten output, one per block.
fn decoded_blocks(out: &[u8]) -> Vec<(u32, u8, Headers)> {
    assert!(out.starts_with(PREFACE));
    let mut decoder = Decoder::new();
    let mut blocks = Vec::new();
    let mut open: Option<(u32, u8, Vec<u8>)> = None;
    for (frame_type, flags, stream, payload) in frames(&out[PREFACE.len()..]) {
        match frame_type {
            TYPE_HEADERS => {
                assert_eq!(flags & FLAG_PADDED, 0, "we never write padding");
                let skip = if flags & FLAG_PRIORITY != 0 {
                    PRIORITY_LEN
                } else {
                    0
                };
                assert!(payload.len() <= OUT_FRAME_PAYLOAD);
                open = Some((stream, flags, payload[skip..].to_vec()));
            }
            TYPE_CONTINUATION => open.as_mut().unwrap().2.extend_from_slice(&payload),
            _ => continue,
        }
        if flags & FLAG_END_HEADERS != 0 {
            let (stream, flags, block) = open.take().unwrap();
            blocks.push((stream, flags, decoder.decode(&block).unwrap()));
        }
    }
    blocks
}

fn authority(headers: &Headers) -> Vec<u8> {
    headers
        .iter()
        .find(|(n, _)| n == b":authority")
        .unwrap()
        .1
        .clone()
}

#[test]
fn bad_authorities_become_localhost_and_good_ones_stay() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"%2Frun%2Fberth%2Fberth.sock", b"localhost"),
        (b"/run/berth/berth.sock", b"localhost"),
        (b"unix:/run/berth/berth.sock", b"localhost"),
        (b"", b"localhost"),
        (b"\xff\x00bad", b"localhost"),
        (b"localhost", b"localhost"),
        (b"berth.example:1234", b"berth.example:1234"),
    ];
    let mut encoder = Encoder::new();
    let mut input = BytesMut::from(PREFACE);
    for (i, (sent, _)) in cases.iter().enumerate() {
        push_request(&mut encoder, &mut input, 2 * i as u32 + 1, sent);
        frame(
            &mut input,
            0x0,
            FLAG_END_STREAM,
            2 * i as u32 + 1,
            &[0, 0, 0, 0, 0],
        );
    }
    for step in [1, 7, 4096] {
        let out = rewrite(&input, step).unwrap();
        let blocks = decoded_blocks(&out);
        assert_eq!(blocks.len(), cases.len());
        for ((_, _, headers), (sent, want)) in blocks.iter().zip(cases) {
            assert_eq!(
                authority(headers),
                *want,
                "sent {:?}",
                String::from_utf8_lossy(sent)
            );
            let mut expected = request(want);
            expected.sort();
            let mut got = headers.clone();
            got.sort();
            assert_eq!(got, expected, "every other header is kept");
        }
        let data: Vec<_> = frames(&out[PREFACE.len()..])
            .into_iter()
            .filter(|f| f.0 == 0x0)
            .collect();
        assert_eq!(data.len(), cases.len(), "DATA frames pass through");
        assert!(
            data.iter()
                .all(|f| f.3 == [0, 0, 0, 0, 0] && f.1 == FLAG_END_STREAM)
        );
    }
}

#[test]
fn padding_priority_and_continuation_are_handled() {
    let mut encoder = Encoder::new();
    let mut headers = request(b"%2Ftmp%2Fx.sock");
    // Big enough to need CONTINUATION frames on the way out as well.
    headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
    let mut input = BytesMut::from(PREFACE);
    let priority = [0x80, 0, 0, 3, 200];
    let (first, rest) = block.split_at(100);
    let mut payload = vec![4u8];
    payload.extend_from_slice(&priority);
    payload.extend_from_slice(first);
    payload.extend_from_slice(&[0; 4]);
    frame(
        &mut input,
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        5,
        &payload,
    );
    let chunks: Vec<_> = rest.chunks(16_000).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() {
            FLAG_END_HEADERS
        } else {
            0
        };
        frame(&mut input, TYPE_CONTINUATION, flags, 5, chunk);
    }
    let out = rewrite(&input, 1000).unwrap();
    let written = frames(&out[PREFACE.len()..]);
    assert!(written.len() >= 3, "split into HEADERS + CONTINUATION");
    assert_eq!(written[0].0, TYPE_HEADERS);
    assert_eq!(
        written[0].1,
        FLAG_PRIORITY | FLAG_END_STREAM,
        "END_STREAM and PRIORITY kept, no padding"
    );
    assert_eq!(written[0].3[..PRIORITY_LEN], priority);
    assert!(
        written[1..]
            .iter()
            .all(|f| f.0 == TYPE_CONTINUATION && f.2 == 5)
    );
    let blocks = decoded_blocks(&out);
    assert_eq!(blocks.len(), 1);
    let (stream, _, got) = &blocks[0];
    assert_eq!(*stream, 5);
    assert_eq!(authority(got), REPLACEMENT_AUTHORITY);
    assert_eq!(got.last().unwrap().1.len(), 40_000);
}

#[test]
fn dynamic_table_references_across_blocks_stay_right() {
    // The client's encoder indexes the first request's headers and refers to
    // them in the second: our decoder must follow, h2's must never need to.
    let mut encoder = Encoder::new();
    let mut input = BytesMut::from(PREFACE);
    for stream in [1, 3, 5] {
        let mut headers = request(b"%2Frun%2Fberth.sock");
        headers.push((b"x-seq".to_vec(), stream.to_string().into_bytes()));
        let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        frame(&mut input, TYPE_HEADERS, FLAG_END_HEADERS, stream, &block);
    }
    let blocks = decoded_blocks(&rewrite(&input, 3).unwrap());
    for ((stream, _, headers), want) in blocks.iter().zip([1, 3, 5]) {
        assert_eq!(*stream, want);
        assert_eq!(authority(headers), REPLACEMENT_AUTHORITY);
        assert!(headers.contains(&(b"x-seq".to_vec(), want.to_string().into_bytes())));
    }
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let good = Encoder::new().encode(request(b"x").iter().map(|(n, v)| (&n[..], &v[..])));
    let mut cases: Vec<(BytesMut, &str)> = Vec::new();
    let mut b = BytesMut::from(PREFACE);
    frame(&mut b, TYPE_HEADERS, 0, 1, &good);
    frame(&mut b, 0x0, 0, 1, b"x");
    cases.push((b, "interleaved"));
    let mut b = BytesMut::from(PREFACE);
    frame(&mut b, TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &good);
    cases.push((b, "stray continuation"));
    let mut b = BytesMut::from(PREFACE);
    frame(
        &mut b,
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_END_HEADERS,
        1,
        &[200, 1, 2],
    );
    cases.push((b, "padding"));
    let mut b = BytesMut::from(PREFACE);
    frame(
        &mut b,
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &[0xff, 0xff, 0xff, 0xff],
    );
    cases.push((b, "hpack"));
    let mut b = BytesMut::from(PREFACE);
    b.put_uint((MAX_HEADER_BLOCK_BYTES + 1) as u64, 3);
    b.put_slice(&[TYPE_HEADERS, 0, 0, 0, 0, 1]);
    cases.push((b, "too large"));
    for (input, what) in cases {
        assert!(rewrite(&input, 5).is_err(), "{what}");
    }
    // A block expanding past the bound through dynamic-table references.
    let mut encoder = Encoder::new();
    let big = vec![b'v'; 4000];
    let first = encoder.encode([(&b"x-big"[..], &big[..])]);
    let mut b = BytesMut::from(PREFACE);
    frame(&mut b, TYPE_HEADERS, FLAG_END_HEADERS, 1, &first);
    frame(&mut b, TYPE_HEADERS, FLAG_END_HEADERS, 3, &[0xbe; 40]);
    assert!(matches!(
        rewrite(&b, 64),
        Err(RewriteError::BlockTooLarge(_))
    ));
}

#[test]
fn blocks_pass_through_untouched_until_one_needs_a_rewrite() {
    // The second block refers to the first's table entries, which h2 only
    // has if the first passed through; the third needs a rewrite, and the
    // fourth then refers to entries h2 was never shown: it is re-encoded.
    let sent: [&[u8]; 4] = [b"localhost", b"localhost", b"%2Frun%2Fx.sock", b"localhost"];
    let mut encoder = Encoder::new();
    let mut input = BytesMut::from(PREFACE);
    let mut ends = Vec::new();
    for (i, authority) in sent.iter().enumerate() {
        push_request(&mut encoder, &mut input, 2 * i as u32 + 1, authority);
        ends.push(input.len());
    }
    for step in [1, 5, 4096] {
        let out = rewrite(&input, step).unwrap();
        assert_eq!(
            out[..ends[1]],
            input[..ends[1]],
            "the good blocks as they came"
        );
        assert_ne!(out[ends[1]..], input[ends[1]..]);
        let blocks = decoded_blocks(&out);
        assert_eq!(blocks.len(), sent.len());
        for (_, _, headers) in &blocks {
            let mut want = request(REPLACEMENT_AUTHORITY);
            want.sort();
            let mut got = headers.clone();
            got.sort();
            assert_eq!(got, want);
        }
    }
}
