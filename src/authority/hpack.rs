//! The HPACK decoding the rewriter needs (RFC 7541): a client's dynamic table,
//! followed block by block, and each block's fields as (name, value).
//!
//! It allocates only for the entries a block adds to the table, and decodes
//! Huffman strings with the canonical code's per-length bounds instead of a
//! lookup structure built per string, so following a connection's headers
//! costs well under a microsecond per request.

use std::collections::VecDeque;

/// Why a header block could not be decoded; the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HpackError {
    #[error("the block ends inside a field")]
    Truncated,
    #[error("an integer longer than any field or table could need")]
    IntegerOverflow,
    #[error("index {0} is in neither the static nor the dynamic table")]
    BadIndex(usize),
    #[error("dynamic table size {size} is over the {limit} bytes allowed")]
    TableTooLarge { size: usize, limit: usize },
    #[error("dynamic table size update after the first field of a block")]
    LateSizeUpdate,
    #[error("Huffman string with a bad code, an EOS symbol or bad padding")]
    BadHuffman,
}

/// The static table (RFC 7541 Appendix A), index 1 first.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// What an entry costs in the dynamic table beyond its name and value (§4.1).
const ENTRY_OVERHEAD: usize = 32;

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// A client's dynamic table, newest entry first (§2.3.2).
struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    capacity: usize,
    /// The most the client may set `capacity` to: what the server advertised.
    limit: usize,
}

impl DynamicTable {
    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if let Some(i) = index.checked_sub(1)
            && let Some((name, value)) = STATIC_TABLE.get(i)
        {
            return Ok((name, value));
        }
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|i| self.entries.get(i))
            .map(|(n, v)| (&n[..], &v[..]))
            .ok_or(HpackError::BadIndex(index))
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        // An entry larger than the table empties it and is not added (§4.4).
        self.evict_to(self.capacity.saturating_sub(size));
        if size <= self.capacity {
            self.entries.push_front((name.into(), value.into()));
            self.size += size;
        }
    }

    fn resize(&mut self, capacity: usize) -> Result<(), HpackError> {
        if capacity > self.limit {
            return Err(HpackError::TableTooLarge {
                size: capacity,
                limit: self.limit,
            });
        }
        self.capacity = capacity;
        self.evict_to(capacity);
        Ok(())
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some((name, value)) = self.entries.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

/// One connection's HPACK decoding state.
pub struct Decoder {
    table: DynamicTable,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Decoder {
    /// A decoder whose client may use a dynamic table of up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Decoder {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                capacity: limit,
                limit,
            },
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Decodes one whole header block, handing each field to `field` in order
    /// and updating the dynamic table as the client's encoder did.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut seen_field = false;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                let index = integer(&mut block, 7)?;
                let (name, value) = self.table.get(index)?;
                field(name, value);
            } else if first & 0xe0 == 0x20 {
                if seen_field {
                    return Err(HpackError::LateSizeUpdate);
                }
                let capacity = integer(&mut block, 5)?;
                self.table.resize(capacity)?;
                continue;
            } else {
                // With incremental indexing (01), without indexing (0000) or
                // never indexed (0001): the name by index or literal, then
                // the value.
                let indexed = first & 0xc0 == 0x40;
                let prefix = if indexed { 6 } else { 4 };
                let index = integer(&mut block, prefix)?;
                self.name.clear();
                if index == 0 {
                    string(&mut block, &mut self.name)?;
                } else {
                    self.name.extend_from_slice(self.table.get(index)?.0);
                }
                self.value.clear();
                string(&mut block, &mut self.value)?;
                field(&self.name, &self.value);
                if indexed {
                    self.table.insert(&self.name, &self.value);
                }
            }
            seen_field = true;
        }
        Ok(())
    }
}

/// An integer with an `n`-bit prefix (§5.1), taken off the front of `block`.
fn integer(block: &mut &[u8], n: u32) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let max_prefix = (1usize << n) - 1;
    let mut value = usize::from(first) & max_prefix;
    if value == max_prefix {
        let mut shift = 0;
        loop {
            let (&byte, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            // Four continuation octets reach 2^28: more than any block holds.
            if shift > 21 {
                return Err(HpackError::IntegerOverflow);
            }
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// A string literal (§5.2), taken off the front of `block` and appended to `out`.
fn string(block: &mut &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
    let len = integer(block, 7)?;
    if len > block.len() {
        return Err(HpackError::Truncated);
    }
    let (octets, rest) = block.split_at(len);
    *block = rest;
    if huffman {
        huffman_decode(octets, out)
    } else {
        out.extend_from_slice(octets);
        Ok(())
    }
}

/// The bit length of each symbol's code (RFC 7541 Appendix B), symbol 0 first,
/// EOS (256) last. The code is canonical: codes of one length are consecutive
/// and ordered by symbol, so the lengths alone define it.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const MAX_CODE_LEN: usize = 30;
const EOS: u16 = 256;

/// The canonical code's decoding tables: for each length, its first code, how
/// many codes it has and where its symbols start in `symbols`.
struct Canonical {
    first: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    offset: [u16; MAX_CODE_LEN + 1],
    /// Symbols ordered by (code length, symbol): by code.
    symbols: [u16; 257],
}

const CANONICAL: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u32; MAX_CODE_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[CODE_LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; MAX_CODE_LEN + 1];
    let mut offset = [0u16; MAX_CODE_LEN + 1];
    let mut code = 0u32;
    let mut at = 0u16;
    let mut len = 1;
    while len <= MAX_CODE_LEN {
        first[len] = code;
        offset[len] = at;
        code = (code + count[len]) << 1;
        at += count[len] as u16;
        len += 1;
    }
    let mut symbols = [0u16; 257];
    let mut next = offset;
    let mut s = 0;
    while s < 257 {
        let len = CODE_LENGTHS[s] as usize;
        symbols[next[len] as usize] = s as u16;
        next[len] += 1;
        s += 1;
    }
    Canonical {
        first,
        count,
        offset,
        symbols,
    }
}

/// Decodes a Huffman-coded string (§5.2) onto `out`.
fn huffman_decode(octets: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let table = &CANONICAL;
    let mut code = 0u32;
    let mut len = 0usize;
    for &octet in octets {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((octet >> shift) & 1);
            len += 1;
            if len > MAX_CODE_LEN {
                return Err(HpackError::BadHuffman);
            }
            let rank = code.wrapping_sub(table.first[len]);
            if rank < table.count[len] {
                let symbol = table.symbols[usize::from(table.offset[len]) + rank as usize];
                if symbol == EOS {
                    return Err(HpackError::BadHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the start of EOS).
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::BadHuffman);
    }
    Ok(())
}

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
