//! Envelopes and batches that are already protobuf bytes.
//!
//! The collector encodes a container's line straight into the bytes of an
//! `Envelope` (see `spillway-collector`'s `EnvelopeTemplate::encode`) and
//! never builds a prost [`Envelope`](crate::v2::Envelope) for it on the way
//! to a router. This module has what such bytes need on the wire:
//!
//! - the field numbers of `Envelope`, `Log` and map entries ([`field`]) and
//!   small writers for protobuf fields ([`put_len_delimited`],
//!   [`put_varint_field`], [`put_string_map_entry`]);
//! - the framing of an `EnvelopeBatch` ([`batch_entry_len`],
//!   [`put_batch_entry`]): a batch is its entries one after the other, each
//!   `0x0a varint(len) envelope-bytes` (field 1, `repeated Envelope batch`);
//! - [`EncodedBatch`], such a batch with its envelope count;
//! - [`PreEncodedCodec`], a tonic codec whose encoder writes [`Bytes`]
//!   unchanged (so a batch that is already bytes is not encoded again) and
//!   whose decoder decodes a prost message;
//! - [`batch_sender`], the `loggregator.v2.Ingress/BatchSender` client
//!   stream with that codec.
//!
//! A receiver cannot tell these bytes from prost's: protobuf decoders accept
//! fields in any order, and the writers here skip default values the way
//! prost does.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};

/// Field numbers (Loggregator v2, `envelope.proto`).
pub mod field {
    /// `Envelope.timestamp` (int64).
    pub const ENVELOPE_TIMESTAMP: u32 = 1;
    /// `Envelope.source_id` (string).
    pub const ENVELOPE_SOURCE_ID: u32 = 2;
    /// `Envelope.log` (message `Log`, in the `message` oneof).
    pub const ENVELOPE_LOG: u32 = 4;
    /// `Envelope.instance_id` (string).
    pub const ENVELOPE_INSTANCE_ID: u32 = 8;
    /// `Envelope.tags` (`map<string, string>`).
    pub const ENVELOPE_TAGS: u32 = 9;
    /// `Log.payload` (bytes).
    pub const LOG_PAYLOAD: u32 = 1;
    /// `Log.type` (enum).
    pub const LOG_TYPE: u32 = 2;
    /// The key of a map entry.
    pub const MAP_KEY: u32 = 1;
    /// The value of a map entry.
    pub const MAP_VALUE: u32 = 2;
    /// `EnvelopeBatch.batch` (repeated `Envelope`).
    pub const BATCH_ENTRY: u32 = 1;
}

/// Bytes a length-delimited field (string, bytes, message) of `len` bytes
/// takes: key, length, content.
pub fn len_delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Writes a length-delimited field with content `data`.
pub fn put_len_delimited(buf: &mut impl BufMut, tag: u32, data: &[u8]) {
    put_len_delimited_header(buf, tag, data.len());
    buf.put_slice(data);
}

/// Writes the key and the length of a length-delimited field of `len`
/// bytes; its content must follow.
pub fn put_len_delimited_header(buf: &mut impl BufMut, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Bytes a varint field (int64, enum...) of `value` takes.
pub fn varint_field_len(tag: u32, value: u64) -> usize {
    key_len(tag) + encoded_len_varint(value)
}

/// Writes a varint field (an int64 is written as `value as u64`).
pub fn put_varint_field(buf: &mut impl BufMut, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

/// Bytes the content of a `map<string, string>` entry takes (as prost
/// writes it: an empty key or value is left out).
pub fn string_map_entry_content_len(key: &str, value: &str) -> usize {
    let part = |tag, s: &str| {
        if s.is_empty() {
            0
        } else {
            len_delimited_len(tag, s.len())
        }
    };
    part(field::MAP_KEY, key) + part(field::MAP_VALUE, value)
}

/// Writes one entry of the `map<string, string>` field `tag`, as prost
/// does (an empty key or value is left out, and reads back as empty).
pub fn put_string_map_entry(buf: &mut impl BufMut, tag: u32, key: &str, value: &str) {
    put_len_delimited_header(buf, tag, string_map_entry_content_len(key, value));
    if !key.is_empty() {
        put_len_delimited(buf, field::MAP_KEY, key.as_bytes());
    }
    if !value.is_empty() {
        put_len_delimited(buf, field::MAP_VALUE, value.as_bytes());
    }
}

/// Bytes an envelope of `envelope_len` bytes takes inside an
/// `EnvelopeBatch`: its field key, its length and itself.
pub fn batch_entry_len(envelope_len: usize) -> usize {
    len_delimited_len(field::BATCH_ENTRY, envelope_len)
}

/// Appends one envelope's bytes to an `EnvelopeBatch` being written.
pub fn put_batch_entry(buf: &mut impl BufMut, envelope: &[u8]) {
    put_len_delimited(buf, field::BATCH_ENTRY, envelope);
}

/// The bytes of an `EnvelopeBatch`, and how many envelopes it holds (for
/// the counters of what was sent or dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    pub bytes: Bytes,
    pub envelopes: usize,
}

impl EncodedBatch {
    /// Decodes the batch (for tests and diagnostics).
    pub fn decode(&self) -> Result<crate::v2::EnvelopeBatch, prost::DecodeError> {
        prost::Message::decode(self.bytes.clone())
    }
}

/// A tonic codec that sends messages that are already protobuf bytes: its
/// encoder writes each [`Bytes`] item unchanged, and its decoder decodes
/// `D` with prost.
///
/// For any RPC whose request (on a client) or response (on a server) is
/// encoded ahead: the collector's BatchSender stream ([`batch_sender`]);
/// a router could serve pre-encoded `EnvelopeBatch`es on Egress the same
/// way (with `tonic::server::Grpc` and this codec, `D` the request type).
#[derive(Debug)]
pub struct PreEncodedCodec<D> {
    _decode: PhantomData<fn() -> D>,
}

impl<D> Default for PreEncodedCodec<D> {
    fn default() -> Self {
        PreEncodedCodec {
            _decode: PhantomData,
        }
    }
}

impl<D> Clone for PreEncodedCodec<D> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<D: prost::Message + Default + crate::codec::Precheck + Send + 'static> Codec
    for PreEncodedCodec<D>
{
    type Encode = Bytes;
    type Decode = D;
    type Encoder = BytesEncoder;
    type Decoder = crate::codec::Decoder<D>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        crate::codec::Decoder::default()
    }
}

/// Writes each message's bytes as they are ([`PreEncodedCodec`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// Opens `loggregator.v2.Ingress/BatchSender` on `inner` (a tonic
/// `Channel`) and sends every `EnvelopeBatch` of `batches` (bytes, e.g.
/// [`EncodedBatch::bytes`]) unchanged. Resolves when the stream ends or
/// fails, like the generated client's `batch_sender`.
pub async fn batch_sender<T, S>(
    inner: T,
    max_encoding_message_size: usize,
    batches: S,
) -> Result<tonic::Response<crate::v2::BatchSenderResponse>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
    S: tonic::codegen::tokio_stream::Stream<Item = Bytes> + Send + 'static,
{
    let mut grpc =
        tonic::client::Grpc::new(inner).max_encoding_message_size(max_encoding_message_size);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {}", e.into())))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/loggregator.v2.Ingress/BatchSender");
    let mut req = tonic::Request::new(batches);
    req.extensions_mut().insert(tonic::GrpcMethod::new(
        "loggregator.v2.Ingress",
        "BatchSender",
    ));
    grpc.client_streaming(req, path, PreEncodedCodec::default())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::{Envelope, EnvelopeBatch, log::Type};
    use prost::Message as _;

    #[test]
    fn batch_entries_frame_envelopes_like_prost() {
        let envelopes: Vec<Envelope> = [0usize, 1, 200, 20_000]
            .iter()
            .map(|&n| Envelope::log(n as i64, "s", "0", vec![b'x'; n], Type::Out))
            .collect();
        let mut buf = bytes::BytesMut::new();
        let mut expected_len = 0;
        for e in &envelopes {
            let bytes = e.encode_to_vec();
            expected_len += batch_entry_len(bytes.len());
            put_batch_entry(&mut buf, &bytes);
        }
        assert_eq!(buf.len(), expected_len);
        let batch = EnvelopeBatch {
            batch: envelopes.clone(),
        };
        assert_eq!(&buf[..], &batch.encode_to_vec()[..]);
        let encoded = EncodedBatch {
            bytes: buf.freeze(),
            envelopes: envelopes.len(),
        };
        assert_eq!(encoded.decode().unwrap(), batch);
    }

    #[test]
    fn map_entries_leave_out_empty_keys_and_values_as_prost_does() {
        for (k, v) in [("a", "b"), ("a", ""), ("", "b"), ("", "")] {
            let mut e = Envelope::default();
            e.tags.insert(k.into(), v.into());
            let mut buf = Vec::new();
            put_string_map_entry(&mut buf, field::ENVELOPE_TAGS, k, v);
            assert_eq!(buf, e.encode_to_vec(), "{k:?}={v:?}");
        }
    }
}
