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
//!   500 MB of `Envelope` structs. So is a batch or an envelope of more
//!   than [`max_map_entries`] tags and gauge values (two million empty
//!   tags cost as much).
//!
//! Both refusals are counted in [`refusals`], which the binaries serve as
//! `spillway_refused_messages_total{reason}`; the envelopes a refused
//! message held, where their number is known, as
//! `spillway_refused_envelopes_total{reason}`.

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
    /// A message with more than [`max_map_entries`] tags and gauge values.
    TooManyTags,
    /// Larger than the server's `--max-message-bytes` (counted by the
    /// ingress service, which sees tonic's `OutOfRange`).
    TooLarge,
}

impl Refusal {
    /// Every reason, in the order of [`Refusals::counts`].
    pub const ALL: [Refusal; 4] = [
        Refusal::Malformed,
        Refusal::TooManyEnvelopes,
        Refusal::TooManyTags,
        Refusal::TooLarge,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TooManyEnvelopes => "too_many_envelopes",
            Refusal::TooManyTags => "too_many_tags",
            Refusal::TooLarge => "too_large",
        }
    }
}

/// Messages refused in this process, and the envelopes they held, by
/// reason.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; 4],
    envelopes: [AtomicU64; 4],
}

impl Refusals {
    /// Counts one refused message.
    pub fn count(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` envelopes lost with a refused message.
    pub fn count_envelopes(&self, why: Refusal, n: u64) {
        self.envelopes[why as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Messages refused so far for `why`.
    pub fn get(&self, why: Refusal) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }

    /// Envelopes of known number refused so far for `why` (a message
    /// refused before its envelopes could be counted, such as one over the
    /// size limit, adds none).
    pub fn envelopes(&self, why: Refusal) -> u64 {
        self.envelopes[why as usize].load(Ordering::Relaxed)
    }
}

/// Counts a refused message whose envelopes are not known and logs it (at
/// most one line a second).
pub fn refused(why: Refusal, detail: &str) {
    refused_holding(why, None, detail)
}

/// Counts a refused message holding `envelopes` (when known) and logs it
/// (at most one line a second).
pub fn refused_holding(why: Refusal, envelopes: Option<u64>, detail: &str) {
    static LAST_LOG_SECOND: AtomicU64 = AtomicU64::new(0);
    REFUSALS.count(why);
    if let Some(n) = envelopes {
        REFUSALS.count_envelopes(why, n);
    }
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
    counts: [const { AtomicU64::new(0) }; 4],
    envelopes: [const { AtomicU64::new(0) }; 4],
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

    /// How many envelopes every message of this type holds, if that is
    /// fixed (counted when one is refused as malformed).
    const ENVELOPES: Option<u64> = None;
}

impl Precheck for v2::Envelope {
    fn precheck(bytes: &[u8]) -> Result<(), Status> {
        let max = max_map_entries();
        if map_entries(bytes) > max {
            return Err(too_many_tags(max, 1));
        }
        Ok(())
    }

    const ENVELOPES: Option<u64> = Some(1);
}

impl Precheck for v2::EgressRequest {}
impl Precheck for v2::EgressBatchRequest {}
impl Precheck for v2::IngressResponse {}
impl Precheck for v2::BatchSenderResponse {}
impl Precheck for v2::SendResponse {}

impl Precheck for crate::plumbing::PushResponse {}

impl Precheck for crate::plumbing::EnvelopeData {
    /// The tags of the dropsonde envelope inside (field 17 of its
    /// payload), bounded as a v2 message's are.
    fn precheck(bytes: &[u8]) -> Result<(), Status> {
        let max = max_map_entries();
        let tags: usize = fields(bytes)
            .filter_map(|(f, payload)| (f == 1).then_some(payload?))
            .map(|payload| count_field(payload, 17, max + 1))
            .sum();
        if tags > max {
            return Err(too_many_tags(max, 1));
        }
        Ok(())
    }

    const ENVELOPES: Option<u64> = Some(1);
}

impl Precheck for v2::EnvelopeBatch {
    fn precheck(bytes: &[u8]) -> Result<(), Status> {
        let max = max_batch_envelopes();
        let n = count_field(bytes, 1, max + 1);
        if n > max {
            return Err(too_many_envelopes(count_field(bytes, 1, usize::MAX), max));
        }
        let max = max_map_entries();
        let mut entries = 0usize;
        for (_, envelope) in fields(bytes).filter(|(f, _)| *f == 1) {
            entries += envelope.map_or(0, map_entries);
            if entries > max {
                return Err(too_many_tags(max, count_field(bytes, 1, usize::MAX) as u64));
            }
        }
        Ok(())
    }
}

/// The top-level fields of the protobuf message `bytes`: each field's
/// number, and the content of length-delimited ones. Groups (the
/// deprecated wire types 3 and 4, which prost skips in unknown fields) are
/// fields without content, skipped as prost skips them. Bytes that are not
/// protobuf end the iteration where they start (the decoder then refuses
/// them).
pub fn fields(mut bytes: &[u8]) -> impl Iterator<Item = (u64, Option<&[u8]>)> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let (tag, wire_type) = decode_key(&mut bytes).ok()?;
        let content = if wire_type == WireType::LengthDelimited {
            let len = decode_varint(&mut bytes).ok()?;
            if len > bytes.len() as u64 {
                return None;
            }
            let (content, rest) = bytes.split_at(len as usize);
            bytes = rest;
            Some(content)
        } else {
            skip_field(wire_type, tag, &mut bytes, DecodeContext::default()).ok()?;
            None
        };
        Some((u64::from(tag), content))
    })
}

/// Counts the top-level fields numbered `field` in `bytes`, stopping at
/// `stop`.
pub fn count_field(bytes: &[u8], field: u64, stop: usize) -> usize {
    fields(bytes)
        .filter(|(f, _)| *f == field)
        .take(stop)
        .count()
}

/// The map entries of an encoded `Envelope`: its tags, deprecated tags and
/// gauge values. Each costs some 60 bytes once decoded for 2 on the wire.
pub fn map_entries(envelope: &[u8]) -> usize {
    fields(envelope)
        .map(|(f, content)| match (f, content) {
            // deprecated_tags, tags
            (3 | 9, _) => 1,
            // gauge: its `metrics` map
            (6, Some(gauge)) => count_field(gauge, 1, usize::MAX),
            _ => 0,
        })
        .sum()
}

/// The most map entries (tags, deprecated tags, gauge values) one message
/// may hold in all: 32 per envelope of [`max_batch_envelopes`] (320,000,
/// some 20 MB decoded; real envelopes carry a handful).
pub fn max_map_entries() -> usize {
    max_batch_envelopes().saturating_mul(32)
}

/// Refuses a batch of `n` envelopes, more than `max` (counted with them).
pub(crate) fn too_many_envelopes(n: usize, max: usize) -> Status {
    refused_holding(
        Refusal::TooManyEnvelopes,
        Some(n as u64),
        &format!("{n} envelopes, more than {max}"),
    );
    Status::resource_exhausted(format!(
        "a batch of more than {max} envelopes is refused (--max-batch-envelopes)"
    ))
}

/// Refuses a message of `envelopes` envelopes for its tags, more than
/// `max` in all (counted with them).
pub(crate) fn too_many_tags(max: usize, envelopes: u64) -> Status {
    refused_holding(
        Refusal::TooManyTags,
        Some(envelopes),
        &format!("more than {max} tags"),
    );
    Status::resource_exhausted(format!(
        "a message of more than {max} tags and gauge values in all is refused (32 per --max-batch-envelopes)"
    ))
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
            // An `Envelope` is one, however broken; how many a malformed
            // batch held is not known.
            refused_holding(Refusal::Malformed, U::ENVELOPES, &e.to_string());
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
        assert_eq!(fields(&bytes).count(), 7);
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

    /// Found while writing the `envelope_decode` fuzz target: an unknown field of
    /// the (deprecated, still decoded) group wire type ended the count, so
    /// the envelopes after it were decoded however many they were.
    #[test]
    fn a_group_field_does_not_hide_envelopes_or_tags_from_the_count() {
        // Field 15 as a group: start (wire type 3), one varint inside, end (4).
        let group = [0x7b, 0x08, 0x01, 0x7c];
        let mut batch = group.to_vec();
        batch.extend(
            v2::EnvelopeBatch {
                batch: vec![v2::Envelope::default(); DEFAULT_MAX_BATCH_ENVELOPES + 1],
            }
            .encode_to_vec(),
        );
        // Positive control: prost decodes it, skipping the group.
        let decoded = v2::EnvelopeBatch::decode(&batch[..]).unwrap();
        assert_eq!(decoded.batch.len(), DEFAULT_MAX_BATCH_ENVELOPES + 1);
        assert_eq!(
            count_field(&batch, 1, usize::MAX),
            DEFAULT_MAX_BATCH_ENVELOPES + 1
        );
        let status = decode::<v2::EnvelopeBatch>(&batch).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        let mut e = v2::Envelope::default();
        for i in 0..=max_map_entries() {
            e.tags.insert(i.to_string(), String::new());
        }
        let mut envelope = group.to_vec();
        envelope.extend(e.encode_to_vec());
        assert_eq!(map_entries(&envelope), max_map_entries() + 1);
        let status = decode::<v2::Envelope>(&envelope).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        // Groups nest; a group that is not closed ends the walk (and the
        // decoder refuses the bytes).
        assert_eq!(fields(&[0x7b, 0x0b, 0x0c, 0x7c, 0x08, 0x01]).count(), 2);
        assert_eq!(fields(&[0x7b, 0x08, 0x01]).count(), 0);
    }

    #[test]
    fn too_many_tags_are_refused_in_an_envelope_and_in_a_batch() {
        let mut e = v2::Envelope::default();
        for i in 0..max_map_entries() {
            e.tags.insert(i.to_string(), String::new());
        }
        let at_limit = e.encode_to_vec();
        assert_eq!(map_entries(&at_limit), max_map_entries());
        assert!(decode::<v2::Envelope>(&at_limit).is_ok());
        e.tags.insert("one more".into(), String::new());
        let status = decode::<v2::Envelope>(&e.encode_to_vec()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let batch = v2::EnvelopeBatch { batch: vec![e] }.encode_to_vec();
        let status = decode::<v2::EnvelopeBatch>(&batch).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        let mut gauge = v2::Gauge::default();
        for i in 0..=max_map_entries() {
            gauge
                .metrics
                .insert(i.to_string(), v2::GaugeValue::default());
        }
        let e = v2::Envelope {
            message: Some(v2::envelope::Message::Gauge(gauge)),
            ..Default::default()
        };
        assert!(decode::<v2::Envelope>(&e.encode_to_vec()).is_err());
    }
}
