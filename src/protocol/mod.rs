//! The MQTT wire protocol: one packet model for 3.1, 3.1.1 and 5.0, and its codec.
//! No I/O and no tokio here: bytes in, packets out, and back.

pub mod codec;
pub mod packet;
pub mod reason;

pub use codec::{
    decode, decode_from_client, encode, encode_publish, encoded_len, DecodeError, PublishParts,
};
pub use packet::*;
