//! SPDY/3.1, the multiplexing protocol the Kubernetes streaming clients
//! (remotecommand for exec and attach, portforward) speak after an HTTP upgrade:
//! the frame codec and a server-side connection.

mod conn;
mod dictionary;
mod frame;

pub use conn::{Connection, DATA_PIECE, INBOUND_BUDGET, MAX_STREAMS, Stream, StreamWriter};
pub use frame::{
    Decoder, Encoder, Frame, FrameError, HEADER_LEN, Headers, MAX_CONTROL_FRAME, MAX_HEADER_BLOCK,
    RST_CANCEL, body_len, check_control_len, is_data,
};
