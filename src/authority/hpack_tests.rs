use super::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
    let mut fields = Vec::new();
    decoder.decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))?;
    Ok(fields)
}

fn fields(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 7541 C.4: three requests with Huffman strings, the later ones
/// referring to what the first added to the dynamic table.
#[test]
fn rfc_7541_requests_with_huffman_decode() {
    let mut decoder = Decoder::new(4096);
    let blocks = [
        (
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ]),
        ),
        (
            "8286 84be 5886 a8eb 1064 9cbf",
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ]),
        ),
        (
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]),
        ),
    ];
    for (block, want) in blocks {
        assert_eq!(decode(&mut decoder, &hex(block)).unwrap(), want);
    }
    assert_eq!(decoder.table.size, 164, "RFC 7541 C.4.3's table size");
}

/// The Huffman code built from the lengths, as an encoder would use it.
fn codes() -> Vec<(u32, usize)> {
    let table = &CANONICAL;
    let mut codes = vec![(0, 0); 257];
    for len in 1..=MAX_CODE_LEN {
        for rank in 0..table.count[len] {
            let symbol = table.symbols[usize::from(table.offset[len]) + rank as usize];
            codes[usize::from(symbol)] = (table.first[len] + rank, len);
        }
    }
    codes
}

fn huffman_encode(input: &[u8]) -> Vec<u8> {
    let codes = codes();
    let (mut bits, mut n) = (0u64, 0usize);
    let mut out = Vec::new();
    for &b in input {
        let (code, len) = codes[usize::from(b)];
        bits = (bits << len) | u64::from(code);
        n += len;
        while n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    if n > 0 {
        out.push(((bits << (8 - n)) as u8) | (0xff >> n));
    }
    out
}

/// Every byte value, in strings of many lengths, decodes to itself, and
/// fluke-hpack's decoder (its own table) reads the same code.
#[test]
fn huffman_code_agrees_with_an_independent_decoder() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut inputs: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    inputs.push((0..=255u8).collect());
    for _ in 0..500 {
        let len = (next() % 64) as usize;
        inputs.push((0..len).map(|_| next() as u8).collect());
    }
    for input in inputs {
        let encoded = huffman_encode(&input);
        let mut ours = Vec::new();
        huffman_decode(&encoded, &mut ours).unwrap();
        assert_eq!(ours, input);
        let theirs = fluke_hpack::huffman::HuffmanDecoder::new()
            .decode(&encoded)
            .unwrap();
        assert_eq!(theirs, input);
    }
}

#[test]
fn bad_huffman_is_refused() {
    // EOS (30 ones) inside the string.
    assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc], &mut Vec::new()).is_err());
    // Padding of 8 bits or more.
    let mut long_pad = huffman_encode(b"a");
    long_pad.push(0xff);
    assert!(huffman_decode(&long_pad, &mut Vec::new()).is_err());
    // Padding that is not all ones: 'a' is 00011, then 000.
    assert!(huffman_decode(&[0x18], &mut Vec::new()).is_err());
}

/// Random header lists over many blocks, through fluke-hpack's encoder (which
/// indexes every field), enough to fill the 4096-byte table many times over:
/// entries are added, referred to and evicted, and we decode what its decoder
/// decodes.
#[test]
fn dynamic_table_follows_an_encoder_through_evictions() {
    let mut encoder = fluke_hpack::Encoder::new();
    let mut theirs = fluke_hpack::Decoder::new();
    let mut ours = Decoder::new(4096);
    let mut distinct = std::collections::HashSet::new();
    let mut seed = 7u64;
    for round in 0..300u64 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let headers: Fields = (0..(seed >> 60) % 6 + 1)
            .map(|i| {
                let k = (seed >> (8 * i)) % 9;
                let v = format!("{k}-{}-", (seed >> 32) % 40);
                (
                    format!("x-h{k}").into_bytes(),
                    v.repeat((k * 7) as usize + 1).into_bytes(),
                )
            })
            .collect();
        let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let want = theirs.decode(&block).unwrap();
        assert_eq!(want, headers);
        assert_eq!(decode(&mut ours, &block).unwrap(), want, "round {round}");
        assert!(ours.table.size <= 4096);
        distinct.extend(headers);
    }
    // Every distinct field was added once at least: far more than fits.
    let added: usize = distinct
        .iter()
        .map(|(n, v)| n.len() + v.len() + ENTRY_OVERHEAD)
        .sum();
    assert!(added > 4 * 4096, "{added} bytes added");
}

#[test]
fn malformed_blocks_are_errors() {
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &[0x80]), Err(HpackError::BadIndex(0)));
    assert_eq!(decode(&mut d, &[0xbe]), Err(HpackError::BadIndex(62)));
    assert_eq!(
        decode(&mut d, &[0x41, 0x05, b'a']),
        Err(HpackError::Truncated)
    );
    assert_eq!(decode(&mut d, &[0xff]), Err(HpackError::Truncated));
    assert_eq!(
        decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(HpackError::IntegerOverflow)
    );
    // 31 + 0x61 + (0x1f << 7) = 4096: allowed; one more is not.
    assert_eq!(decode(&mut d, &[0x3f, 0xe1, 0x1f]), Ok(vec![]));
    assert_eq!(
        decode(&mut d, &[0x3f, 0xe2, 0x1f]),
        Err(HpackError::TableTooLarge {
            size: 4097,
            limit: 4096
        })
    );
    assert_eq!(
        decode(&mut d, &[0x82, 0x20]),
        Err(HpackError::LateSizeUpdate)
    );
}
