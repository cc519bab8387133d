//! The tonic codec of every Loggregator v2 service and client here.
//!
//! It is prost's codec with two differences on the decoding side:
//!
//! - Bytes that are not a valid message are the sender's fault: they get
//!   `InvalidArgument` (prost's codec answers `Internal`).
//! - Before an `EnvelopeBatch` is decoded, its entries are counted on the
//!   encoded bytes. A batch of more than [`max_batch_envelopes`] entries
//!   is refused with `ResourceExhausted` without decoding it: a 4 MiB
//!   message of two million empty envelopes would otherwise cost some
//!   500 MB of `Envelope` structs.
//!
//! Both refusals are counted in [`refusals`], which the binaries serve as
//! `spillway_refused_messages_total{reason}`.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{DecodeBuf, EncodeBuf};
use tonic_prost::ProstEncoder;

use crate::v2;

/// The default of [`max_batch_envelopes`]: far above the batches real
/// Loggregator agents and Spillway collectors send (100 to a few
/// thousand), far below what makes a message cost more than a few MB once
/// decoded.
pub const DEFAULT_MAX_BATCH_ENVELOPES: usize = 10_000;

static MAX_BATCH_ENVELOPES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_BATCH_ENVELOPES);

/// Sets the most envelopes one `EnvelopeBatch` may hold when this process
/// decodes it (the `--max-batch-envelopes` flag).
pub fn set_max_batch_envelopes(n: usize) {
    MAX_BATCH_ENVELOPES.store(n.max(1), Ordering::Relaxed);
}

/// The most envelopes one `EnvelopeBatch` may hold when decoded here.
pub fn max_batch_envelopes() -> usize {
    MAX_BATCH_ENVELOPES.load(Ordering::Relaxed)
}

/// Why a whole gRPC message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not valid protobuf for its message type.
    Malformed,
    /// An `EnvelopeBatch` with more than [`max_batch_envelopes`] entries.
    TooManyEnvelopes,
    /// Larger than the server's `--max-message-bytes` (counted by the
    /// ingress service, which sees tonic's `OutOfRange`).
    TooLarge,
}

impl Refusal {
    /// Every reason, in the order of [`Refusals::counts`].
    pub const ALL: [Refusal; 3] = [
        Refusal::Malformed,
        Refusal::TooManyEnvelopes,
        Refusal::TooLarge,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TooManyEnvelopes => "too_many_envelopes",
            Refusal::TooLarge => "too_large",
        }
    }
}

/// Messages refused in this process, by reason.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; 3],
}

impl Refusals {
    /// Counts one refused message.
    pub fn count(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages refused so far for `why`.
    pub fn get(&self, why: Refusal) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }
}

/// Counts a refused message and logs it (at most one line a second).
pub fn refused(why: Refusal, detail: &str) {
    static LAST_LOG_SECOND: AtomicU64 = AtomicU64::new(0);
    REFUSALS.count(why);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOG_SECOND.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(
            "refused a gRPC message ({}): {detail}; counted in spillway_refused_messages_total",
            why.as_str()
        );
    }
}

static REFUSALS: Refusals = Refusals {
    counts: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
};

/// The messages this process refused, by reason.
pub fn refusals() -> &'static Refusals {
    &REFUSALS
}

/// Checks on the encoded bytes of a message before it is decoded.
pub trait Precheck {
    /// `Err` refuses the message without decoding it.
    fn precheck(_bytes: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

impl Precheck for v2::Envelope {}
impl Precheck for v2::EgressRequest {}
impl Precheck for v2::EgressBatchRequest {}
impl Precheck for v2::IngressResponse {}
impl Precheck for v2::BatchSenderResponse {}
impl Precheck for v2::SendResponse {}

impl Precheck for v2::EnvelopeBatch {
    fn precheck(bytes: &[u8]) -> Result<(), Status> {
        let max = max_batch_envelopes();
        let n = count_field(bytes, 1, max + 1);
        if n > max {
            refused(
                Refusal::TooManyEnvelopes,
                &format!("more than {max} envelopes"),
            );
            return Err(Status::resource_exhausted(format!(
                "a batch of more than {max} envelopes is refused (--max-batch-envelopes)"
            )));
        }
        Ok(())
    }
}

/// Counts the top-level fields numbered `field` in `bytes`, stopping at
/// `stop`. Bytes that are not protobuf end the count where they start (the
/// decoder then refuses them).
pub fn count_field(mut bytes: &[u8], field: u32, stop: usize) -> usize {
    let mut n = 0;
    while !bytes.is_empty() && n < stop {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else {
            break;
        };
        let skip = match key & 7 {
            0 => match prost::encoding::decode_varint(&mut bytes) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => match prost::encoding::decode_varint(&mut bytes) {
                Ok(len) => len,
                Err(_) => break,
            },
            5 => 4,
            _ => break,
        };
        if skip > bytes.len() as u64 {
            break;
        }
        bytes.advance(skip as usize);
        if key >> 3 == u64::from(field) {
            n += 1;
        }
    }
    n
}

/// The codec named in the generated services and clients.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Precheck + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = Encoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Encoder<T> {
        Encoder(ProstEncoder::default())
    }

    fn decoder(&mut self) -> Decoder<U> {
        Decoder(PhantomData)
    }
}

/// prost's encoder.
#[derive(Debug, Clone)]
pub struct Encoder<T>(ProstEncoder<T>);

impl<T: Message> tonic::codec::Encoder for Encoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.0.encode(item, buf)
    }
}

/// prost's decoding, with the checks and status codes of the module docs.
#[derive(Debug, Clone)]
pub struct Decoder<U>(PhantomData<U>);

impl<U> Default for Decoder<U> {
    fn default() -> Self {
        Decoder(PhantomData)
    }
}

impl<U: Message + Default + Precheck> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // A DecodeBuf is one contiguous buffer; the check is skipped if not.
        if buf.chunk().len() == buf.remaining() {
            U::precheck(buf.chunk())?;
        }
        U::decode(buf).map(Some).map_err(|e| {
            refused(Refusal::Malformed, &e.to_string());
            Status::invalid_argument(format!("malformed protobuf message: {e}"))
        })
    }
}

/// Decodes `bytes` as this codec does (for tests and fuzzing).
pub fn decode<U: Message + Default + Precheck>(bytes: &[u8]) -> Result<U, Status> {
    U::precheck(bytes)?;
    U::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed protobuf message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_batch_entries_on_the_wire() {
        let batch = v2::EnvelopeBatch {
            batch: vec![v2::Envelope::default(); 7],
        };
        let bytes = batch.encode_to_vec();
        assert_eq!(count_field(&bytes, 1, usize::MAX), 7);
        assert_eq!(count_field(&bytes, 1, 3), 3);
        assert_eq!(count_field(&[0x0a, 0xff, 0xff], 1, usize::MAX), 0);
    }

    #[test]
    fn too_many_envelopes_and_malformed_bytes_are_refused() {
        let ok = v2::EnvelopeBatch {
            batch: vec![v2::Envelope::default(); DEFAULT_MAX_BATCH_ENVELOPES],
        }
        .encode_to_vec();
        assert!(decode::<v2::EnvelopeBatch>(&ok).is_ok());
        let mut over = ok.clone();
        over.extend([0x0a, 0x00]);
        let status = decode::<v2::EnvelopeBatch>(&over).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let status = decode::<v2::EnvelopeBatch>(&[0x0a, 0x05, 0x01]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
