//! Envelopes that travel encoded: their protobuf bytes plus the few fields
//! routing needs, read by peeking the bytes instead of decoding them.
//!
//! A router or RLP only needs to know, of each envelope, its source id, its
//! kind, a counter's name and a gauge's metric names (selectors and shard
//! hashes), and whether it has tags of either form (tag conversion, source
//! id fallback). [`WireEnvelope::new`] reads exactly that with one walk over
//! the bytes, and on the same walk checks the **whole** envelope's wire
//! format as prost's decoder would: every key, varint, length, wire type of
//! a known field, UTF-8 of every string, unknown fields (groups too, to
//! prost's recursion limit). Bytes prost would refuse are refused here; on
//! top of that a map field (`tags`, `deprecated_tags`, gauge `metrics`)
//! that is not length-delimited is refused, which prost reads leniently but
//! other decoders do not ([`PeekError::MapWireType`]).
//!
//! The tonic [`Codec`] receives a whole `EnvelopeBatch` as a [`WireBatch`]
//! (a list of [`WireEnvelope`]s, no prost structs built) and sends
//! [`Bytes`] (an envelope) or an [`EnvelopeList`] (an `EnvelopeBatch`) by
//! writing the bytes unchanged. It keeps the limits and refusal counting of
//! [`crate::codec`]: a batch of more than
//! [`max_batch_envelopes`](crate::codec::max_batch_envelopes) envelopes is
//! refused with ResourceExhausted before any envelope is looked at, a
//! message of more than [`max_map_entries`](crate::codec::max_map_entries)
//! tags and gauge values likewise, malformed bytes with InvalidArgument;
//! each counted in [`crate::codec::refusals`]. A message that is both
//! malformed and over a limit is counted once, for the first problem found.
//!
//! Each received envelope gets its own allocation (one copy out of the
//! message): a subscription that keeps one envelope must not keep the
//! whole message it came in alive. Sharing it between subscriptions then
//! costs a reference count, never a copy.
//!
//! [`server`] and [`client`] hold the tonic services of Loggregator v2
//! Ingress and Egress generated for these types (same paths and wire
//! format as the prost ones of [`crate::v2`]).

use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use prost::Message as _;
use prost::encoding::{WireType, decode_key, decode_varint};
use tonic::Status;
use tonic::codec::{DecodeBuf, EncodeBuf};

use crate::Kind;
use crate::codec::{
    Refusal, max_batch_envelopes, max_map_entries, refused, refused_holding, too_many_envelopes,
    too_many_tags,
};
use crate::v2;

/// prost's recursion limit (`prost::RECURSION_LIMIT`), which bounds nested
/// groups in unknown fields.
const RECURSION_LIMIT: u32 = 100;

/// The depth of an envelope's fields inside an `EnvelopeBatch`, as prost
/// counts it. Single envelopes are checked at this depth too, so that
/// whatever is accepted alone can travel in a batch.
const ENVELOPE_DEPTH: u32 = RECURSION_LIMIT - 1;

/// Why bytes are not a valid envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeekError {
    /// Bytes prost refuses too (the reason).
    Malformed(&'static str),
    /// A map field that is not length-delimited (prost accepts it, reading
    /// a varint as the entry's length; other decoders do not).
    MapWireType,
}

impl std::fmt::Display for PeekError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeekError::Malformed(why) => f.write_str(why),
            PeekError::MapWireType => f.write_str("a map field that is not length-delimited"),
        }
    }
}

impl std::error::Error for PeekError {}

impl From<prost::DecodeError> for PeekError {
    fn from(_: prost::DecodeError) -> Self {
        PeekError::Malformed("invalid key or varint")
    }
}

type Peeked<T> = Result<T, PeekError>;

/// A byte range inside an envelope's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(whole: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - whole.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    fn in_bytes(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start as usize..self.end as usize]
    }
}

/// What routing reads of an envelope (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteKey {
    source_id: Span,
    kind: Option<Kind>,
    counter_name: Span,
    /// Sorted by content, each name once (a gauge's `metrics` is a map).
    gauge_names: Vec<Span>,
    /// `Log.type` as prost reads it (any `i32`).
    log_type: i32,
    timestamp: i64,
    has_tags: bool,
    has_deprecated_tags: bool,
}

/// An envelope as protobuf bytes, with its [`RouteKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEnvelope {
    bytes: Bytes,
    key: RouteKey,
}

impl WireEnvelope {
    /// Peeks `bytes` (an `Envelope`), checking all of it.
    pub fn new(bytes: Bytes) -> Result<WireEnvelope, PeekError> {
        let (key, _) = peek(&bytes)?;
        Ok(WireEnvelope { bytes, key })
    }

    /// Encodes a prost envelope (which always peeks well).
    pub fn from_envelope(e: &v2::Envelope) -> WireEnvelope {
        WireEnvelope::new(Bytes::from(e.encode_to_vec())).expect("prost writes valid envelopes")
    }

    /// The envelope's bytes, as received.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The envelope's bytes, as received.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Decodes the envelope (for the rare paths that change it).
    pub fn decode(&self) -> v2::Envelope {
        v2::Envelope::decode(self.bytes.clone()).expect("peeked bytes decode")
    }

    /// `source_id`.
    pub fn source_id(&self) -> &str {
        self.str_at(self.key.source_id)
    }

    /// The kind of its `message`, `None` when it has none.
    pub fn kind(&self) -> Option<Kind> {
        self.key.kind
    }

    /// A counter's name (empty for other kinds).
    pub fn counter_name(&self) -> &str {
        self.str_at(self.key.counter_name)
    }

    /// A gauge's metric names, sorted, each once (none for other kinds).
    pub fn gauge_names(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.key.gauge_names.iter().map(|s| self.str_at(*s))
    }

    /// `timestamp` (0 when it has none).
    pub fn timestamp(&self) -> i64 {
        self.key.timestamp
    }

    /// Whether it carries `tags` entries.
    pub fn has_tags(&self) -> bool {
        self.key.has_tags
    }

    /// The value of tag `name` in `tags`, as prost reads the map (the last
    /// entry of a key wins). Walks the bytes: for the rare hop that looks
    /// at a tag, not for routing.
    pub fn tag(&self, name: &str) -> Option<&str> {
        if !self.key.has_tags {
            return None;
        }
        let mut found = None;
        let mut buf = &self.bytes[..];
        while !buf.is_empty() {
            // Checked when peeked: these reads cannot fail.
            let (tag, wt) = decode_key(&mut buf).ok()?;
            if tag == 9 {
                let (key, value) = string_entry(delimited(&mut buf).ok()?).ok()?;
                if key == name.as_bytes() {
                    found = Some(value);
                }
            } else {
                skip(wt, tag, &mut buf, ENVELOPE_DEPTH).ok()?;
            }
        }
        found.map(|v| std::str::from_utf8(v).unwrap_or_default())
    }

    /// Whether it carries `deprecated_tags` entries.
    pub fn has_deprecated_tags(&self) -> bool {
        self.key.has_deprecated_tags
    }

    /// Whether [`v2::Envelope::normalize_at_ingress`] may change it: an
    /// empty source id with tags to take `origin` from, or a log type
    /// outside the enum.
    pub fn may_need_normalizing(&self) -> bool {
        (self.source_id().is_empty() && (self.key.has_tags || self.key.has_deprecated_tags))
            || (self.key.kind == Some(Kind::Log) && !matches!(self.key.log_type, 0 | 1))
    }

    /// [`v2::Envelope::normalize_at_ingress`] on the encoded envelope: the
    /// bytes are kept as they are unless the envelope changes (then it is
    /// decoded, normalised and encoded again).
    pub fn normalize_at_ingress(self) -> WireEnvelope {
        if !self.may_need_normalizing() {
            return self;
        }
        let before = self.decode();
        let mut after = before.clone();
        after.normalize_at_ingress();
        if after == before {
            self
        } else {
            WireEnvelope::from_envelope(&after)
        }
    }

    fn str_at(&self, span: Span) -> &str {
        // Checked as UTF-8 when peeked.
        std::str::from_utf8(span.in_bytes(&self.bytes)).unwrap_or_default()
    }
}

/// Reads the [`RouteKey`] of an encoded `Envelope` and counts its map
/// entries (tags, deprecated tags, gauge values), checking every byte as
/// prost's decoder would (see the module docs).
fn peek(envelope: &[u8]) -> Peeked<(RouteKey, usize)> {
    let mut key = RouteKey::default();
    let mut entries = 0usize;
    let mut buf = envelope;
    let depth = ENVELOPE_DEPTH;
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => key.timestamp = varint(wt, &mut buf)? as i64,
            2 => key.source_id = Span::of(envelope, string(wt, &mut buf)?),
            8 => string(wt, &mut buf).map(drop)?,
            3 | 9 => {
                let entry = map_entry(wt, &mut buf, depth)?;
                let value = if tag == 9 {
                    key.has_tags = true;
                    MapValue::String
                } else {
                    key.has_deprecated_tags = true;
                    MapValue::Value
                };
                map_entry_fields(entry, depth - 1, value)?;
                entries += 1;
            }
            4 | 5 | 6 | 7 | 10 => {
                let kind = match tag {
                    4 => Kind::Log,
                    5 => Kind::Counter,
                    6 => Kind::Gauge,
                    7 => Kind::Timer,
                    _ => Kind::Event,
                };
                let content = message(wt, &mut buf, depth)?;
                // prost merges a oneof field into the variant there is,
                // or replaces a variant of another kind.
                if key.kind != Some(kind) {
                    key.kind = Some(kind);
                    key.counter_name = Span::default();
                    key.gauge_names.clear();
                    key.log_type = 0;
                }
                entries += peek_message(envelope, &mut key, kind, content, depth - 1)?;
            }
            _ => skip(wt, tag, &mut buf, depth)?,
        }
    }
    key.gauge_names
        .sort_by(|a, b| a.in_bytes(envelope).cmp(b.in_bytes(envelope)));
    key.gauge_names
        .dedup_by(|a, b| a.in_bytes(envelope) == b.in_bytes(envelope));
    Ok((key, entries))
}

/// The fields of the `message` oneof (`content`, at `depth`); returns the
/// map entries it holds.
fn peek_message(
    envelope: &[u8],
    key: &mut RouteKey,
    kind: Kind,
    mut buf: &[u8],
    depth: u32,
) -> Peeked<usize> {
    let mut entries = 0;
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf)?;
        match (kind, tag) {
            (Kind::Log, 1) => bytes_field(wt, &mut buf).map(drop)?,
            (Kind::Log, 2) => key.log_type = varint(wt, &mut buf)? as i32,
            (Kind::Counter, 1) => key.counter_name = Span::of(envelope, string(wt, &mut buf)?),
            (Kind::Counter, 2 | 3) | (Kind::Timer, 2 | 3) => varint(wt, &mut buf).map(drop)?,
            (Kind::Gauge, 1) => {
                let entry = map_entry(wt, &mut buf, depth)?;
                let name = map_entry_fields(entry, depth - 1, MapValue::GaugeValue)?;
                key.gauge_names.push(match name {
                    Some(name) => Span::of(envelope, name),
                    None => Span::default(),
                });
                entries += 1;
            }
            (Kind::Timer, 1) | (Kind::Event, 1 | 2) => string(wt, &mut buf).map(drop)?,
            _ => skip(wt, tag, &mut buf, depth)?,
        }
    }
    Ok(entries)
}

/// What a map's values are.
#[derive(Clone, Copy)]
enum MapValue {
    String,
    /// `Value` (deprecated tags).
    Value,
    GaugeValue,
}

/// The fields of a map entry; returns its key (the last one; `None` when
/// it has none, which reads as empty).
fn map_entry_fields(mut buf: &[u8], depth: u32, value: MapValue) -> Peeked<Option<&[u8]>> {
    let mut key = None;
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => key = Some(string(wt, &mut buf)?),
            2 => match value {
                MapValue::String => string(wt, &mut buf).map(drop)?,
                MapValue::Value => {
                    let content = message(wt, &mut buf, depth)?;
                    check_value(content, depth - 1)?;
                }
                MapValue::GaugeValue => {
                    let content = message(wt, &mut buf, depth)?;
                    check_gauge_value(content, depth - 1)?;
                }
            },
            _ => skip(wt, tag, &mut buf, depth)?,
        }
    }
    Ok(key)
}

/// The key and value of a `map<string, string>` entry (empty when absent;
/// the last of a repeated field wins).
fn string_entry(mut buf: &[u8]) -> Peeked<(&[u8], &[u8])> {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => key = string(wt, &mut buf)?,
            2 => value = string(wt, &mut buf)?,
            _ => skip(wt, tag, &mut buf, ENVELOPE_DEPTH)?,
        }
    }
    Ok((key, value))
}

/// `Value { oneof data { string text = 1; int64 integer = 2; double decimal = 3; } }`
fn check_value(mut buf: &[u8], depth: u32) -> Peeked<()> {
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => string(wt, &mut buf).map(drop)?,
            2 => varint(wt, &mut buf).map(drop)?,
            3 => fixed64(wt, &mut buf)?,
            _ => skip(wt, tag, &mut buf, depth)?,
        }
    }
    Ok(())
}

/// `GaugeValue { string unit = 1; double value = 2; }`
fn check_gauge_value(mut buf: &[u8], depth: u32) -> Peeked<()> {
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf)?;
        match tag {
            1 => string(wt, &mut buf).map(drop)?,
            2 => fixed64(wt, &mut buf)?,
            _ => skip(wt, tag, &mut buf, depth)?,
        }
    }
    Ok(())
}

fn expect(wt: WireType, want: WireType) -> Peeked<()> {
    if wt == want {
        Ok(())
    } else {
        Err(PeekError::Malformed("a known field of the wrong wire type"))
    }
}

fn varint(wt: WireType, buf: &mut &[u8]) -> Peeked<u64> {
    expect(wt, WireType::Varint)?;
    Ok(decode_varint(buf)?)
}

fn fixed64(wt: WireType, buf: &mut &[u8]) -> Peeked<()> {
    expect(wt, WireType::SixtyFourBit)?;
    take(buf, 8).map(drop)
}

fn take<'a>(buf: &mut &'a [u8], len: u64) -> Peeked<&'a [u8]> {
    if len > buf.len() as u64 {
        return Err(PeekError::Malformed("a field longer than its message"));
    }
    let (content, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(content)
}

fn delimited<'a>(buf: &mut &'a [u8]) -> Peeked<&'a [u8]> {
    let len = decode_varint(buf)?;
    take(buf, len)
}

fn bytes_field<'a>(wt: WireType, buf: &mut &'a [u8]) -> Peeked<&'a [u8]> {
    expect(wt, WireType::LengthDelimited)?;
    delimited(buf)
}

fn string<'a>(wt: WireType, buf: &mut &'a [u8]) -> Peeked<&'a [u8]> {
    let s = bytes_field(wt, buf)?;
    std::str::from_utf8(s).map_err(|_| PeekError::Malformed("a string that is not UTF-8"))?;
    Ok(s)
}

/// A message field at `depth` (prost's `message::merge`); its fields are
/// at `depth - 1`.
fn message<'a>(wt: WireType, buf: &mut &'a [u8], depth: u32) -> Peeked<&'a [u8]> {
    expect(wt, WireType::LengthDelimited)?;
    limit(depth)?;
    delimited(buf)
}

/// A map entry at `depth`; its fields are at `depth - 1`.
fn map_entry<'a>(wt: WireType, buf: &mut &'a [u8], depth: u32) -> Peeked<&'a [u8]> {
    if wt != WireType::LengthDelimited {
        return Err(PeekError::MapWireType);
    }
    limit(depth)?;
    delimited(buf)
}

fn limit(depth: u32) -> Peeked<()> {
    if depth == 0 {
        Err(PeekError::Malformed("nested too deep"))
    } else {
        Ok(())
    }
}

/// Skips an unknown field as prost's `skip_field` does.
fn skip(wt: WireType, tag: u32, buf: &mut &[u8], depth: u32) -> Peeked<()> {
    limit(depth)?;
    let len = match wt {
        WireType::Varint => {
            decode_varint(buf)?;
            0
        }
        WireType::ThirtyTwoBit => 4,
        WireType::SixtyFourBit => 8,
        WireType::LengthDelimited => decode_varint(buf)?,
        WireType::StartGroup => loop {
            let (inner_tag, inner_wt) = decode_key(buf)?;
            if inner_wt == WireType::EndGroup {
                if inner_tag != tag {
                    return Err(PeekError::Malformed("unexpected end group tag"));
                }
                break 0;
            }
            skip(inner_wt, inner_tag, buf, depth - 1)?;
        },
        WireType::EndGroup => return Err(PeekError::Malformed("unexpected end group tag")),
    };
    take(buf, len).map(drop)
}

/// The envelopes of an `EnvelopeBatch` (field 1), each checked, or why
/// the batch is refused (counted in [`crate::codec::refusals`]).
pub fn peek_batch(bytes: &[u8]) -> Result<Vec<WireEnvelope>, Status> {
    let malformed = |e: PeekError| {
        refused(Refusal::Malformed, &e.to_string());
        Status::invalid_argument(format!("malformed protobuf message: {e}"))
    };
    let max = max_batch_envelopes();
    // First only count (the framing alone), so that an oversized batch
    // costs no more, and its envelopes are counted with the refusal.
    let mut n = 0usize;
    batch_entries(bytes, |_| {
        n += 1;
        Ok::<(), Status>(())
    })?
    .map_err(malformed)?;
    if n > max {
        return Err(too_many_envelopes(n, max));
    }
    let max_entries = max_map_entries();
    let mut entries = 0usize;
    let mut out = Vec::with_capacity(n);
    batch_entries(bytes, |envelope| {
        let (key, tags) = peek(envelope).map_err(malformed)?;
        entries += tags;
        if entries > max_entries {
            return Err(too_many_tags(max_entries, n as u64));
        }
        out.push(WireEnvelope {
            bytes: Bytes::copy_from_slice(envelope),
            key,
        });
        Ok(())
    })?
    .map_err(malformed)?;
    Ok(out)
}

/// Calls `each` with every envelope of an `EnvelopeBatch` (unknown fields
/// skipped as prost does). The outer error is `each`'s, the inner one the
/// batch's own framing.
fn batch_entries<E>(
    mut buf: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<Peeked<()>, E> {
    fn framing<'a>(buf: &mut &'a [u8]) -> Peeked<Option<&'a [u8]>> {
        let (tag, wt) = decode_key(buf)?;
        if tag == 1 {
            return message(wt, buf, RECURSION_LIMIT).map(Some);
        }
        skip(wt, tag, buf, RECURSION_LIMIT).map(|_| None)
    }
    while !buf.is_empty() {
        match framing(&mut buf) {
            Ok(Some(envelope)) => each(envelope)?,
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(()))
}

/// An `EnvelopeBatch` received as [`WireEnvelope`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireBatch(pub Vec<WireEnvelope>);

/// Envelopes' bytes sent as one `EnvelopeBatch`, each written unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeList(pub Vec<Bytes>);

impl EnvelopeList {
    /// The bytes of the `EnvelopeBatch` (as the codec writes them).
    pub fn encoded_len(&self) -> usize {
        self.0
            .iter()
            .map(|e| crate::preencoded::batch_entry_len(e.len()))
            .sum()
    }
}

/// A message the [`Codec`] reads.
pub trait FromWire: Sized + Send + 'static {
    /// Reads one whole message.
    fn from_wire(bytes: &[u8]) -> Result<Self, Status>;
}

impl FromWire for WireBatch {
    fn from_wire(bytes: &[u8]) -> Result<Self, Status> {
        peek_batch(bytes).map(WireBatch)
    }
}

impl FromWire for WireEnvelope {
    fn from_wire(bytes: &[u8]) -> Result<Self, Status> {
        let max = max_map_entries();
        let (key, entries) = peek(bytes).map_err(|e| {
            refused_holding(Refusal::Malformed, Some(1), &e.to_string());
            Status::invalid_argument(format!("malformed protobuf message: {e}"))
        })?;
        if entries > max {
            return Err(too_many_tags(max, 1));
        }
        Ok(WireEnvelope {
            bytes: Bytes::copy_from_slice(bytes),
            key,
        })
    }
}

/// A message the [`Codec`] writes.
pub trait ToWire: Send + 'static {
    /// Writes the whole message.
    fn to_wire(self, dst: &mut EncodeBuf<'_>);
}

impl ToWire for Bytes {
    fn to_wire(self, dst: &mut EncodeBuf<'_>) {
        bytes::BufMut::put_slice(dst, &self);
    }
}

impl ToWire for EnvelopeList {
    fn to_wire(self, dst: &mut EncodeBuf<'_>) {
        for e in &self.0 {
            crate::preencoded::put_batch_entry(dst, e);
        }
    }
}

/// prost messages the generated services and clients read and write.
macro_rules! prost_wire {
    ($($t:ty),*) => {$(
        impl FromWire for $t {
            fn from_wire(bytes: &[u8]) -> Result<Self, Status> {
                crate::codec::decode(bytes).inspect_err(|e| {
                    if e.code() == tonic::Code::InvalidArgument {
                        refused(Refusal::Malformed, e.message());
                    }
                })
            }
        }

        impl ToWire for $t {
            fn to_wire(self, dst: &mut EncodeBuf<'_>) {
                // EncodeBuf grows as needed: encoding cannot run out of room.
                let _ = self.encode(dst);
            }
        }
    )*};
}

prost_wire!(
    v2::EgressRequest,
    v2::EgressBatchRequest,
    v2::IngressResponse,
    v2::BatchSenderResponse,
    v2::SendResponse
);

/// The codec of [`server`] and [`client`]: writes `E`, reads `D`.
#[derive(Debug)]
pub struct Codec<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for Codec<E, D> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<E: ToWire, D: FromWire> tonic::codec::Codec for Codec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = WireDecoder<D>;

    fn encoder(&mut self) -> WireEncoder<E> {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> WireDecoder<D> {
        WireDecoder(PhantomData)
    }
}

/// Writes [`ToWire`] messages.
#[derive(Debug)]
pub struct WireEncoder<E>(PhantomData<fn() -> E>);

impl<E: ToWire> tonic::codec::Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.to_wire(dst);
        Ok(())
    }
}

/// Reads [`FromWire`] messages.
#[derive(Debug)]
pub struct WireDecoder<D>(PhantomData<fn() -> D>);

impl<D: FromWire> tonic::codec::Decoder for WireDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let n = buf.remaining();
        let item = if buf.chunk().len() == n {
            D::from_wire(buf.chunk())?
        } else {
            D::from_wire(&buf.copy_to_bytes(n))?
        };
        if buf.has_remaining() {
            buf.advance(buf.remaining());
        }
        Ok(Some(item))
    }
}

/// Loggregator v2 Ingress and Egress services over encoded envelopes:
/// `ingress_server` receives [`WireEnvelope`]s and [`WireBatch`]es,
/// `egress_server` sends [`Bytes`] (`Receiver`) and [`EnvelopeList`]s
/// (`BatchedReceiver`).
pub mod server {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(
        env!("OUT_DIR"),
        "/encoded/server/loggregator.v2.Ingress.rs"
    ));
    include!(concat!(
        env!("OUT_DIR"),
        "/encoded/server/loggregator.v2.Egress.rs"
    ));
}

/// The Loggregator v2 Egress client over encoded envelopes:
/// `BatchedReceiver` yields [`WireBatch`]es.
pub mod client {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(
        env!("OUT_DIR"),
        "/encoded/client/loggregator.v2.Egress.rs"
    ));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::codec::refusals;
    use crate::v2::envelope::Message;

    /// source id, kind, counter name, gauge names, has tags, has
    /// deprecated tags, timestamp, and the `tags` of the names in
    /// [`NAMES`].
    type Key = (
        String,
        Option<Kind>,
        String,
        Vec<String>,
        bool,
        bool,
        i64,
        Vec<Option<String>>,
    );

    const NAMES: [&str; 8] = ["", "a", "b", "origin", "cpu", "mem", "é✓", "requests"];

    /// The key prost's decoding gives, in the terms of [`WireEnvelope`].
    fn prost_key(e: &v2::Envelope) -> Key {
        let counter = match &e.message {
            Some(Message::Counter(c)) => c.name.clone(),
            _ => String::new(),
        };
        let gauge: BTreeSet<String> = match &e.message {
            Some(Message::Gauge(g)) => g.metrics.keys().cloned().collect(),
            _ => BTreeSet::new(),
        };
        (
            e.source_id.clone(),
            e.kind(),
            counter,
            gauge.into_iter().collect(),
            !e.tags.is_empty(),
            !e.deprecated_tags.is_empty(),
            e.timestamp,
            NAMES.iter().map(|n| e.tags.get(*n).cloned()).collect(),
        )
    }

    fn peek_key(w: &WireEnvelope) -> Key {
        (
            w.source_id().into(),
            w.kind(),
            w.counter_name().into(),
            w.gauge_names().map(String::from).collect(),
            w.has_tags(),
            w.has_deprecated_tags(),
            w.timestamp(),
            NAMES.iter().map(|n| w.tag(n).map(String::from)).collect(),
        )
    }

    fn text(s: &str) -> v2::Value {
        v2::Value {
            data: Some(v2::value::Data::Text(s.into())),
        }
    }

    fn random_string(rng: &mut StdRng) -> String {
        NAMES[rng.random_range(0..NAMES.len())].to_string()
    }

    fn random_envelope(rng: &mut StdRng) -> v2::Envelope {
        let mut e = v2::Envelope {
            timestamp: rng.random(),
            source_id: random_string(rng),
            instance_id: random_string(rng),
            ..Default::default()
        };
        for _ in 0..rng.random_range(0..4) {
            e.tags.insert(random_string(rng), random_string(rng));
        }
        for _ in 0..rng.random_range(0..3) {
            let v = match rng.random_range(0..4) {
                0 => text(&random_string(rng)),
                1 => v2::Value {
                    data: Some(v2::value::Data::Integer(rng.random())),
                },
                2 => v2::Value {
                    data: Some(v2::value::Data::Decimal(rng.random())),
                },
                _ => v2::Value { data: None },
            };
            e.deprecated_tags.insert(random_string(rng), v);
        }
        e.message = match rng.random_range(0..6) {
            0 => Some(Message::Log(v2::Log {
                payload: vec![b'x'; rng.random_range(0..40)].into(),
                r#type: rng.random_range(-1..3),
            })),
            1 => Some(Message::Counter(v2::Counter {
                name: random_string(rng),
                delta: rng.random(),
                total: rng.random(),
            })),
            2 => {
                let mut g = v2::Gauge::default();
                for _ in 0..rng.random_range(0..4) {
                    g.metrics.insert(
                        random_string(rng),
                        v2::GaugeValue {
                            unit: random_string(rng),
                            value: rng.random(),
                        },
                    );
                }
                Some(Message::Gauge(g))
            }
            3 => Some(Message::Timer(v2::Timer {
                name: random_string(rng),
                start: rng.random(),
                stop: rng.random(),
            })),
            4 => Some(Message::Event(v2::Event {
                title: random_string(rng),
                body: random_string(rng),
            })),
            _ => None,
        };
        e
    }

    /// Fields appended to an envelope's bytes (how the collector adds its
    /// `host` tag and a missing timestamp) read as prost reads them: a
    /// scalar's last value and a map key's last entry win.
    #[test]
    fn appended_fields_read_as_prost_reads_them() {
        let mut e = v2::Envelope::log(0, "app", "0", "hi", v2::log::Type::Out);
        e.tags.insert("host".into(), "first".into());
        e.tags.insert("zone".into(), "z1".into());
        let mut bytes = e.encode_to_vec();
        let mut extra = v2::Envelope {
            timestamp: 42,
            ..Default::default()
        };
        extra.tags.insert("host".into(), "second".into());
        bytes.extend(extra.encode_to_vec());
        let w = WireEnvelope::new(Bytes::from(bytes)).unwrap();
        let e = w.decode();
        assert_eq!((w.timestamp(), e.timestamp), (42, 42));
        assert_eq!(
            (w.tag("host"), e.tags["host"].as_str()),
            (Some("second"), "second")
        );
        assert_eq!(w.tag("zone"), Some("z1"));
        assert_eq!(w.tag("nope"), None);
        assert_eq!(peek_key(&w), prost_key(&e));
    }

    #[test]
    fn peek_gives_the_key_prost_gives_for_every_kind() {
        let mut rng = StdRng::seed_from_u64(12);
        let mut kinds = BTreeSet::new();
        for _ in 0..5_000 {
            let e = random_envelope(&mut rng);
            let w = WireEnvelope::new(Bytes::from(e.encode_to_vec())).unwrap();
            assert_eq!(peek_key(&w), prost_key(&e), "{e:?}");
            assert_eq!(w.decode(), e);
            kinds.insert(format!("{:?}", e.kind()));
        }
        assert_eq!(kinds.len(), 6, "every kind and none: {kinds:?}");
    }

    /// Random damage to valid envelopes (and to batches of them): whatever
    /// prost refuses is refused, and whatever is accepted decodes in prost
    /// with the same key. The only bytes refused that prost accepts are
    /// map fields that are not length-delimited.
    #[test]
    fn peek_refuses_what_prost_refuses_and_agrees_on_the_rest() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut accepted, mut refused_too, mut stricter) = (0, 0, 0);
        for _ in 0..20_000 {
            let mut bytes = random_envelope(&mut rng).encode_to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..=bytes.len());
                match rng.random_range(0..4) {
                    0 if i < bytes.len() => bytes[i] = rng.random(),
                    1 if i < bytes.len() => bytes[i] ^= 1 << rng.random_range(0..8),
                    2 => bytes.truncate(i),
                    _ => bytes.insert(i, rng.random()),
                }
            }
            let prost = v2::Envelope::decode(&bytes[..]);
            match (WireEnvelope::new(Bytes::from(bytes.clone())), prost) {
                (Ok(w), Ok(e)) => {
                    assert_eq!(peek_key(&w), prost_key(&e), "{bytes:?}");
                    accepted += 1;
                }
                (Ok(_), Err(e)) => panic!("accepted what prost refuses ({e}): {bytes:?}"),
                (Err(_), Err(_)) => refused_too += 1,
                (Err(PeekError::MapWireType), Ok(_)) => stricter += 1,
                (Err(e), Ok(_)) => panic!("refused ({e}) what prost accepts: {bytes:?}"),
            }
            // The same bytes as the only entry of a batch.
            let mut batch = Vec::new();
            crate::preencoded::put_batch_entry(&mut batch, &bytes);
            let prost = v2::EnvelopeBatch::decode(&batch[..]).is_ok();
            let peeked = peek_batch(&batch).is_ok();
            assert!(!peeked || prost, "batch accepted that prost refuses");
        }
        assert!(
            accepted > 2_000 && refused_too > 2_000,
            "{accepted} {refused_too}"
        );
        assert!(stricter < 200, "{stricter}");
    }

    #[test]
    fn oneof_fields_merge_and_replace_as_in_prost() {
        let counter = |name: &str, delta| v2::Envelope {
            message: Some(Message::Counter(v2::Counter {
                name: name.into(),
                delta,
                total: 0,
            })),
            ..Default::default()
        };
        let gauge = |names: &[&str]| {
            let mut g = v2::Gauge::default();
            for n in names {
                g.metrics.insert((*n).into(), v2::GaugeValue::default());
            }
            v2::Envelope {
                source_id: "s".into(),
                message: Some(Message::Gauge(g)),
                ..Default::default()
            }
        };
        let log = v2::Envelope::log(1, "t", "0", "x", v2::log::Type::Out);
        let cases: Vec<Vec<u8>> = vec![
            // Two counters: merged, the later name wins; no name keeps it.
            [counter("a", 1), counter("b", 0)]
                .iter()
                .flat_map(|e| e.encode_to_vec())
                .collect(),
            [counter("a", 1), counter("", 2)]
                .iter()
                .flat_map(|e| e.encode_to_vec())
                .collect(),
            // A counter, a log, a counter: the log replaced the first one.
            [counter("a", 1), log.clone(), counter("", 2)]
                .iter()
                .flat_map(|e| e.encode_to_vec())
                .collect(),
            // Gauges merge their names; the same name twice is one.
            [gauge(&["x", "y"]), gauge(&["y", "z"])]
                .iter()
                .flat_map(|e| e.encode_to_vec())
                .collect(),
            [gauge(&["x"]), log.clone(), gauge(&["z"])]
                .iter()
                .flat_map(|e| e.encode_to_vec())
                .collect(),
        ];
        for bytes in cases {
            let e = v2::Envelope::decode(&bytes[..]).unwrap();
            let w = WireEnvelope::new(Bytes::from(bytes)).unwrap();
            assert_eq!(peek_key(&w), prost_key(&e));
        }
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let good = v2::Envelope {
            source_id: "app".into(),
            tags: [("k".to_string(), "v".to_string())].into(),
            ..v2::Envelope::log(1, "app", "0", "x", v2::log::Type::Out)
        }
        .encode_to_vec();
        assert!(WireEnvelope::new(Bytes::from(good.clone())).is_ok());
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() - 1].to_vec()),
            ("source id not UTF-8", vec![0x12, 0x01, 0xff]),
            ("tag value not UTF-8", vec![0x4a, 0x03, 0x12, 0x01, 0xc0]),
            ("timestamp length-delimited", vec![0x0a, 0x00]),
            ("field 0", vec![0x00, 0x00]),
            ("wire type 7", vec![0x0f]),
            ("end group alone", vec![0x5c]),
            ("group not closed", vec![0x5b, 0x08, 0x01]),
            ("log not a message", vec![0x20, 0x01]),
            (
                "varint too long",
                vec![
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
            ),
            (
                "gauge value not a double",
                vec![0x32, 0x06, 0x0a, 0x04, 0x12, 0x02, 0x10, 0x01],
            ),
        ];
        // Unknown groups nested deeper than prost's recursion limit.
        let deep: Vec<u8> = std::iter::repeat_n(0x5b, 101)
            .chain(std::iter::repeat_n(0x5c, 101))
            .collect();
        cases.push(("groups too deep", deep));
        for (name, bytes) in cases {
            assert!(
                v2::Envelope::decode(&bytes[..]).is_err(),
                "prost takes {name}"
            );
            assert!(
                matches!(
                    WireEnvelope::new(Bytes::from(bytes)),
                    Err(PeekError::Malformed(_))
                ),
                "{name}"
            );
        }
        // Groups within the limit are skipped, as prost does.
        let nested: Vec<u8> = std::iter::repeat_n(0x5b, 20)
            .chain(std::iter::repeat_n(0x5c, 20))
            .collect();
        assert!(v2::Envelope::decode(&nested[..]).is_ok());
        assert!(WireEnvelope::new(Bytes::from(nested)).is_ok());
        // A tags entry written as a varint: prost reads the varint as a
        // length, the peek refuses it.
        let map_varint = vec![0x48, 0x02, 0x0a, 0x00];
        assert!(v2::Envelope::decode(&map_varint[..]).is_ok());
        assert_eq!(
            WireEnvelope::new(Bytes::from(map_varint)),
            Err(PeekError::MapWireType)
        );
    }

    #[test]
    fn batches_keep_the_limits_and_count_refusals() {
        let envelopes: Vec<v2::Envelope> = (0..3)
            .map(|i| v2::Envelope::log(i, "a", "0", "x", v2::log::Type::Out))
            .collect();
        let bytes = v2::EnvelopeBatch {
            batch: envelopes.clone(),
        }
        .encode_to_vec();
        let got = peek_batch(&bytes).unwrap();
        assert_eq!(
            got.iter().map(WireEnvelope::decode).collect::<Vec<_>>(),
            envelopes
        );

        let before = refusals().get(Refusal::TooManyEnvelopes);
        let mut over = v2::EnvelopeBatch {
            batch: vec![v2::Envelope::default(); max_batch_envelopes()],
        }
        .encode_to_vec();
        assert!(peek_batch(&over).is_ok());
        over.extend([0x0a, 0x00]);
        assert_eq!(
            peek_batch(&over).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert!(refusals().get(Refusal::TooManyEnvelopes) > before);

        let before = refusals().get(Refusal::TooManyTags);
        let mut e = v2::Envelope::default();
        for i in 0..=max_map_entries() {
            e.tags.insert(i.to_string(), String::new());
        }
        let batch = v2::EnvelopeBatch {
            batch: vec![e.clone()],
        }
        .encode_to_vec();
        assert_eq!(
            peek_batch(&batch).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            WireEnvelope::from_wire(&e.encode_to_vec())
                .unwrap_err()
                .code(),
            tonic::Code::ResourceExhausted
        );
        assert!(refusals().get(Refusal::TooManyTags) >= before + 2);

        let before = refusals().get(Refusal::Malformed);
        let mut bad = bytes.clone();
        bad.extend([0x0a, 0x03, 0x12, 0x01, 0xff]);
        assert_eq!(
            peek_batch(&bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            WireBatch::from_wire(&[0x0a, 0x05, 0x01])
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
        assert!(refusals().get(Refusal::Malformed) >= before + 2);
    }

    #[test]
    fn an_envelope_list_is_written_as_prost_writes_the_batch() {
        let envelopes: Vec<v2::Envelope> = (0..4)
            .map(|i| {
                v2::Envelope::log(
                    i,
                    "a",
                    "0",
                    vec![b'x'; 100 * i as usize],
                    v2::log::Type::Err,
                )
            })
            .collect();
        let list = EnvelopeList(
            envelopes
                .iter()
                .map(|e| Bytes::from(e.encode_to_vec()))
                .collect(),
        );
        let expected = v2::EnvelopeBatch { batch: envelopes }.encode_to_vec();
        assert_eq!(list.encoded_len(), expected.len());
        let mut written = Vec::new();
        for e in &list.0 {
            crate::preencoded::put_batch_entry(&mut written, e);
        }
        assert_eq!(written, expected);
    }

    #[test]
    fn normalizing_rewrites_only_what_changes() {
        let mut e = v2::Envelope::log(1, "", "0", "x", v2::log::Type::Out);
        e.tags.insert("origin".into(), "from-tag".into());
        let w = WireEnvelope::from_envelope(&e).normalize_at_ingress();
        assert_eq!(w.source_id(), "from-tag");
        assert_eq!(w.decode().source_id, "from-tag");

        let mut e = v2::Envelope::log(1, "", "0", "x", v2::log::Type::Out);
        e.deprecated_tags.insert("origin".into(), text("old"));
        assert_eq!(
            WireEnvelope::from_envelope(&e)
                .normalize_at_ingress()
                .source_id(),
            "old"
        );

        let mut e = v2::Envelope::log(1, "app", "0", "x", v2::log::Type::Out);
        if let Some(Message::Log(l)) = &mut e.message {
            l.r#type = 7;
        }
        let w = WireEnvelope::from_envelope(&e).normalize_at_ingress();
        let Some(Message::Log(l)) = w.decode().message else {
            unreachable!()
        };
        assert_eq!(l.r#type, v2::log::Type::Out as i32);

        // Nothing to change: the very same bytes.
        let mut e = v2::Envelope::log(1, "", "0", "x", v2::log::Type::Err);
        e.tags.insert("k".into(), "v".into());
        let w = WireEnvelope::from_envelope(&e);
        assert!(w.may_need_normalizing());
        let bytes = w.bytes().clone();
        assert_eq!(w.normalize_at_ingress().bytes().as_ptr(), bytes.as_ptr());
    }
}
