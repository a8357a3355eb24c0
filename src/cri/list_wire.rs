//! A List response written from kept wire bytes.
//!
//! `ListContainersResponse` and `ListPodSandboxResponse` each hold one field:
//! the repeated items, field 1. A response is therefore exactly the
//! concatenation of its items, each framed as field 1 (key, length, message).
//! [`item`] frames one item once, when its record changes; [`EncodedList`]
//! writes the kept frames of the listed items one after another (or a whole
//! response kept from the last call, [`EncodedList::whole`]), so a List
//! neither builds strings and maps nor encodes anything per call. Decoding an
//! `EncodedList` with the generated type gives the items the old way built:
//! the tests compare the two.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{self, DecodeContext, WireType};

/// The field number of the items in both List responses.
const ITEMS_FIELD: u32 = 1;

/// `message` framed as field 1 of a List response.
pub fn item(message: &impl Message) -> Bytes {
    framed(message.encoded_len(), |buf| message.encode_raw(buf))
}

/// Field 1's key, `len`, then the `len` bytes `body` writes.
fn framed(len: usize, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut buf = BytesMut::with_capacity(
        encoding::key_len(ITEMS_FIELD) + encoding::encoded_len_varint(len as u64) + len,
    );
    encoding::encode_key(ITEMS_FIELD, WireType::LengthDelimited, &mut buf);
    encoding::encode_varint(len as u64, &mut buf);
    body(&mut buf);
    buf.freeze()
}

/// A List response as pieces whose concatenation is the response: each
/// item's frame, or one run of frames kept whole.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedList {
    pub chunks: Vec<Bytes>,
}

impl EncodedList {
    /// The response as one run of bytes (a copy unless it is one already).
    pub fn whole(self) -> Bytes {
        match <[Bytes; 1]>::try_from(self.chunks) {
            Ok([whole]) => whole,
            Err(chunks) => chunks.concat().into(),
        }
    }

    /// The response as the generated type, for callers that want the items.
    pub fn to_response<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.encode_to_vec().as_slice())
    }
}

impl Message for EncodedList {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for frame in &self.chunks {
            buf.put_slice(frame);
        }
    }

    /// Keeps each item's frame as it came; other fields are skipped, as a
    /// generated message skips unknown fields.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != ITEMS_FIELD || wire_type != WireType::LengthDelimited {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut message = Bytes::new();
        encoding::bytes::merge(wire_type, &mut message, buf, ctx)?;
        self.chunks
            .push(framed(message.len(), |buf| buf.put(message)));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    fn clear(&mut self) {
        self.chunks.clear();
    }
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;

    use super::*;

    fn pod(id: &str) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            state: cri::PodSandboxState::SandboxNotready as i32,
            created_at: 5,
            labels: [("app".to_string(), id.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_frames_are_the_generated_response_byte_for_byte() {
        let pods = vec![pod("a"), pod("b"), pod(&"c".repeat(300))];
        let generated = cri::ListPodSandboxResponse {
            items: pods.clone(),
        };
        let encoded = EncodedList {
            chunks: pods.iter().map(item).collect(),
        };
        assert_eq!(encoded.encode_to_vec(), generated.encode_to_vec());
        assert_eq!(encoded.encoded_len(), generated.encoded_len());
        assert_eq!(
            encoded
                .to_response::<cri::ListPodSandboxResponse>()
                .unwrap(),
            generated
        );
        assert_eq!(EncodedList::default().encode_to_vec(), Vec::<u8>::new());
        // Kept whole, the same bytes.
        let whole = encoded.clone().whole();
        assert_eq!(whole, generated.encode_to_vec());
        let kept = EncodedList {
            chunks: vec![whole.clone()],
        };
        assert_eq!(kept.encode_to_vec(), generated.encode_to_vec());
        assert_eq!(
            kept.whole().as_ptr(),
            whole.as_ptr(),
            "one chunk is not copied"
        );
    }

    #[test]
    fn decoding_keeps_the_frames_and_skips_other_fields() {
        let pods = vec![pod("a"), pod("b")];
        let mut wire = cri::ListPodSandboxResponse {
            items: pods.clone(),
        }
        .encode_to_vec();
        // An unknown field 2 (varint 7) between nothing and the end.
        wire.extend_from_slice(&[0x10, 7]);
        let decoded = EncodedList::decode(wire.as_slice()).unwrap();
        let expected: Vec<Bytes> = pods.iter().map(item).collect();
        assert_eq!(decoded.chunks, expected);
        // A frame whose length runs past the end is an error, not a panic.
        assert!(EncodedList::decode(&[0x0a, 9, 1][..]).is_err());
    }
}
