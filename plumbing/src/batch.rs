//! Batching out of diodes: a batch is sent when it is full, when its source
//! has nothing more right now (idle), or `linger` after its first item
//! while items keep trickling in, whichever comes first. Under load
//! batches fill at once; at a trickle an item does not wait at all.
//!
//! Between the two, a [`Batcher`] paces its stream: a batch never leaves
//! less than `pace` after the one before, so that a steady flow of a few
//! envelopes per millisecond travels as one message per `pace` instead of
//! one per envelope. Every message costs each hop a wake-up, a gRPC frame
//! and a TLS record whatever it holds; without pacing, 10,000 lines/s
//! from 10 containers went through every hop as thousands of messages of
//! a handful of envelopes.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spillway_proto::preencoded::{self, EncodedBatch};
use spillway_proto::v2::Envelope;

use crate::diode::{Diode, PerCore};

/// Something a batcher can drain.
pub trait Source<T>: Send + Sync {
    /// Moves up to `max` items into `out`.
    fn drain_into(&self, out: &mut Vec<T>, max: usize) -> usize;
    /// Resolves after the next push (or at once if one is pending).
    fn ready(&self) -> impl Future<Output = ()> + Send;
}

impl<T: Send> Source<T> for Diode<T> {
    fn drain_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.pop() {
                Some(item) => {
                    out.push(item);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    fn ready(&self) -> impl Future<Output = ()> + Send {
        Diode::ready(self)
    }
}

impl<T: Send> Source<T> for PerCore<T> {
    fn drain_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        PerCore::drain_into(self, out, max)
    }

    fn ready(&self) -> impl Future<Output = ()> + Send {
        PerCore::ready(self)
    }
}

impl<T, S: Source<T> + ?Sized> Source<T> for std::sync::Arc<S> {
    fn drain_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        (**self).drain_into(out, max)
    }

    fn ready(&self) -> impl Future<Output = ()> + Send {
        (**self).ready()
    }
}

/// How batches are cut.
#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    pub max_items: usize,
    pub linger: Duration,
    /// The shortest time between two batches of one [`Batcher`] (zero:
    /// unpaced). Capped by `linger`.
    pub pace: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_items: 256,
            linger: Duration::from_millis(5),
            pace: DEFAULT_PACE,
        }
    }
}

/// The default `--batch-pace`: at most a millisecond added per hop, and at
/// most 1000 messages a second per stream.
pub const DEFAULT_PACE: Duration = Duration::from_millis(1);

/// The largest `--batch-size`.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// The `--batch-size` and `--batch-interval` flags, flattened into the
/// flags of every binary that batches.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct BatchArgs {
    /// Most envelopes in one batch (1 to 10000).
    #[arg(long, default_value_t = 256, value_parser = crate::usize_in(1, MAX_BATCH_SIZE))]
    pub batch_size: usize,
    /// Longest an envelope waits for its batch to fill (e.g. 5ms).
    #[arg(long, default_value = "5ms", value_parser = crate::parse_duration)]
    pub batch_interval: Duration,
    /// Shortest time between two batches of one stream (0 to send each
    /// batch as soon as its source is idle). A steady flow then travels as
    /// one message per pace rather than one per few envelopes; at most
    /// `--batch-interval`.
    #[arg(long, default_value = "1ms", value_parser = crate::parse_duration_or_zero)]
    pub batch_pace: Duration,
}

impl BatchArgs {
    pub fn policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_items: self.batch_size.max(1),
            linger: self.batch_interval,
            pace: self.batch_pace.min(self.batch_interval),
        }
    }
}

/// Bytes `e` takes inside an `EnvelopeBatch`: the envelope, its field tag
/// and its length prefix (for cutting batches at a message size limit).
pub fn entry_len(e: &Envelope) -> usize {
    use prost::Message as _;
    let len = e.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// An envelope a lane can write into an `EnvelopeBatch`: one already
/// encoded (the collector's container lines, [`Bytes`]) or a prost
/// [`Envelope`] (encoded as it is written).
pub trait EncodeEntry {
    /// Bytes of the envelope alone (without its batch framing).
    fn envelope_len(&self) -> usize;
    /// Appends the envelope's `len` bytes (`len` from
    /// [`EncodeEntry::envelope_len`]).
    fn write_envelope(&self, len: usize, buf: &mut BytesMut);
}

impl EncodeEntry for Bytes {
    fn envelope_len(&self) -> usize {
        self.len()
    }

    fn write_envelope(&self, _len: usize, buf: &mut BytesMut) {
        buf.extend_from_slice(self);
    }
}

impl EncodeEntry for Envelope {
    fn envelope_len(&self) -> usize {
        prost::Message::encoded_len(self)
    }

    fn write_envelope(&self, _len: usize, buf: &mut BytesMut) {
        // `encode_raw`, not `encode`: the length is known, and `encode`
        // would size the envelope once more to check the room.
        prost::Message::encode_raw(self, buf);
    }
}

/// Writes `items` as `EnvelopeBatch`es (each entry `0x0a varint(len)
/// envelope`, see [`spillway_proto::preencoded`]) of at most `max_bytes`
/// each (an entry larger than that travels alone), in order. Items whose
/// entry is larger than `max_entry_bytes` are left out; the second value
/// counts them. Each envelope is sized once, and each batch is one
/// allocation of exactly its size.
pub fn encode_batches<T: EncodeEntry>(
    items: &[T],
    max_entry_bytes: usize,
    max_bytes: usize,
) -> (Vec<EncodedBatch>, u64) {
    let mut dropped = 0;
    // The length of each envelope that fits a message, `None` for the others.
    let lens: Vec<Option<usize>> = items
        .iter()
        .map(|item| {
            let n = item.envelope_len();
            if preencoded::batch_entry_len(n) <= max_entry_bytes {
                Some(n)
            } else {
                dropped += 1;
                None
            }
        })
        .collect();
    let mut batches = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let (mut end, mut bytes, mut envelopes) = (start, 0, 0);
        while end < items.len() {
            if let Some(n) = lens[end] {
                let entry = preencoded::batch_entry_len(n);
                if envelopes > 0 && bytes + entry > max_bytes {
                    break;
                }
                bytes += entry;
                envelopes += 1;
            }
            end += 1;
        }
        if envelopes == 0 {
            break;
        }
        let mut buf = BytesMut::with_capacity(bytes);
        for (item, n) in items[start..end].iter().zip(&lens[start..end]) {
            if let Some(n) = *n {
                preencoded::put_len_delimited_header(&mut buf, preencoded::field::BATCH_ENTRY, n);
                item.write_envelope(n, &mut buf);
            }
        }
        debug_assert_eq!(buf.len(), bytes, "batch sized exactly");
        batches.push(EncodedBatch {
            bytes: buf.freeze(),
            envelopes,
        });
        start = end;
    }
    (batches, dropped)
}

/// Cuts the batches of one stream out of its source (see the module
/// documentation), remembering when the last one left for the pacing.
pub struct Batcher {
    policy: BatchPolicy,
    last: Option<tokio::time::Instant>,
}

impl Batcher {
    pub fn new(policy: BatchPolicy) -> Batcher {
        Batcher { policy, last: None }
    }

    /// Waits for the next batch from `source`: at least one item, at most
    /// `policy.max_items`. Returned when full; otherwise once the source is
    /// idle (nothing new after letting other tasks run once) and `pace`
    /// has passed since the previous batch; and at the latest `linger`
    /// after the first item.
    pub async fn next<T, S: Source<T> + ?Sized>(&mut self, source: &S) -> Vec<T> {
        let policy = self.policy;
        let mut batch = Vec::with_capacity(policy.max_items.min(1024));
        loop {
            if source.drain_into(&mut batch, policy.max_items) > 0 {
                break;
            }
            source.ready().await;
        }
        let now = tokio::time::Instant::now();
        let deadline = now + policy.linger;
        // Paced: what arrives before the pace is up joins this batch.
        if let Some(last) = self.last {
            let paced = (last + policy.pace).min(deadline);
            if now < paced {
                let until = tokio::time::sleep_until(paced);
                tokio::pin!(until);
                while batch.len() < policy.max_items {
                    tokio::select! {
                        biased;
                        _ = &mut until => break,
                        _ = source.ready() => {
                            let room = policy.max_items - batch.len();
                            source.drain_into(&mut batch, room);
                        }
                    }
                }
            }
        }
        // A producer in the middle of a burst adds to this batch; once the
        // source has nothing new, waiting longer only adds latency.
        while batch.len() < policy.max_items && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
            let room = policy.max_items - batch.len();
            if source.drain_into(&mut batch, room) == 0 {
                break;
            }
        }
        self.last = Some(tokio::time::Instant::now());
        batch
    }
}

/// One unpaced batch from `source` ([`Batcher::next`] without a previous
/// batch to pace against).
pub async fn next_batch<T, S: Source<T> + ?Sized>(source: &S, policy: BatchPolicy) -> Vec<T> {
    Batcher::new(policy).next(source).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn flushes_when_full_without_waiting() {
        let d = Diode::new(100);
        for i in 0..10 {
            d.push(i);
        }
        let policy = BatchPolicy {
            max_items: 4,
            linger: Duration::from_secs(3600),
            pace: Duration::ZERO,
        };
        let t0 = tokio::time::Instant::now();
        assert_eq!(next_batch(&d, policy).await, vec![0, 1, 2, 3]);
        assert_eq!(next_batch(&d, policy).await, vec![4, 5, 6, 7]);
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_source_sends_its_partial_batch_at_once() {
        let d = Arc::new(Diode::new(100));
        d.push(1);
        let w = d.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            w.push(2);
        });
        let policy = BatchPolicy {
            max_items: 10,
            linger: Duration::from_millis(5),
            pace: Duration::ZERO,
        };
        let t0 = tokio::time::Instant::now();
        assert_eq!(next_batch(&*d, policy).await, vec![1]);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(next_batch(&*d, policy).await, vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn items_of_a_burst_join_the_batch() {
        let d = Arc::new(Diode::new(100));
        d.push(0);
        let w = d.clone();
        // A producer mid-burst: one item each time it gets to run.
        tokio::spawn(async move {
            for i in 1..5 {
                w.push(i);
                tokio::task::yield_now().await;
            }
        });
        let policy = BatchPolicy {
            max_items: 10,
            linger: Duration::from_millis(5),
            pace: Duration::ZERO,
        };
        assert_eq!(next_batch(&*d, policy).await, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_flow_travels_one_batch_per_pace() {
        let d = Arc::new(Diode::new(1000));
        let w = d.clone();
        // One item a millisecond (tokio's timer resolution), 100 in all.
        tokio::spawn(async move {
            for i in 0..100 {
                w.push(i);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let policy = BatchPolicy {
            max_items: 1000,
            linger: Duration::from_millis(50),
            pace: Duration::from_millis(10),
        };
        let mut batcher = Batcher::new(policy);
        let t0 = tokio::time::Instant::now();
        let first = batcher.next(&*d).await;
        assert_eq!(
            (first, t0.elapsed()),
            (vec![0], Duration::ZERO),
            "the first goes at once"
        );
        let mut sizes = Vec::new();
        let mut got = 1;
        while got < 100 {
            let before = tokio::time::Instant::now();
            let b = batcher.next(&*d).await;
            assert!(
                before.elapsed() <= Duration::from_millis(10),
                "waited past the pace"
            );
            got += b.len();
            sizes.push(b.len());
        }
        assert_eq!(got, 100);
        // 10 items per pace: batches of about 10, not of 1.
        assert!(
            sizes.len() <= 11,
            "{} batches for 99 items: {sizes:?}",
            sizes.len()
        );
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&n| n >= 9),
            "{sizes:?}"
        );

        // Unpaced, the same flow goes one item per batch.
        let unpaced = BatchPolicy {
            pace: Duration::ZERO,
            ..policy
        };
        let w = d.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                w.push(i);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let mut batcher = Batcher::new(unpaced);
        for _ in 0..20 {
            assert_eq!(batcher.next(&*d).await.len(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_never_delays_an_item_after_a_quiet_spell() {
        let d = Arc::new(Diode::new(100));
        let policy = BatchPolicy {
            max_items: 10,
            linger: Duration::from_millis(5),
            pace: Duration::from_millis(1),
        };
        let mut batcher = Batcher::new(policy);
        d.push(1);
        assert_eq!(batcher.next(&*d).await, vec![1]);
        tokio::time::sleep(Duration::from_millis(3)).await;
        d.push(2);
        let t0 = tokio::time::Instant::now();
        assert_eq!(batcher.next(&*d).await, vec![2]);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // A full batch does not wait for the pace either.
        for i in 0..10 {
            d.push(i);
        }
        assert_eq!(batcher.next(&*d).await.len(), 10);
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }
}

/// Largest encoded batch Spillway sends, well under the 4 MiB that gRPC
/// receivers accept by default.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Cuts `items` into runs whose `size` adds up to at most `max_bytes` (an
/// item larger than that travels alone).
pub fn chunk_by_bytes<T>(
    items: Vec<T>,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(&item);
        if !current.is_empty() && bytes + n > max_bytes {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += n;
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod chunk_tests {
    #[test]
    fn chunks_respect_the_byte_limit() {
        let chunks = super::chunk_by_bytes(vec![4, 4, 4, 9, 1, 1], 8, |n| *n);
        assert_eq!(chunks, vec![vec![4, 4], vec![4], vec![9], vec![1, 1]]);
        assert!(super::chunk_by_bytes(Vec::<usize>::new(), 8, |n| *n).is_empty());
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use prost::Message as _;
    use spillway_proto::v2::{EnvelopeBatch, log::Type};

    fn log(n: usize) -> Envelope {
        Envelope::log(n as i64 + 1, "s", "0", vec![b'x'; n], Type::Err)
    }

    #[test]
    fn batches_are_cut_at_the_byte_limit_and_decode_in_order() {
        let envelopes: Vec<Envelope> = [10, 10, 10, 300, 10, 20_000, 10].map(log).to_vec();
        let lens: Vec<usize> = envelopes.iter().map(entry_len).collect();
        // Room for three small entries; the 300-byte one goes alone, the
        // 20 KB one is too large for a message.
        let max_bytes = lens[0] * 3;
        let max_entry = lens[3];
        for (name, (batches, dropped)) in [
            ("prost", encode_batches(&envelopes, max_entry, max_bytes)),
            (
                "bytes",
                encode_batches(
                    &envelopes
                        .iter()
                        .map(|e| Bytes::from(e.encode_to_vec()))
                        .collect::<Vec<_>>(),
                    max_entry,
                    max_bytes,
                ),
            ),
        ] {
            assert_eq!(dropped, 1, "{name}");
            let decoded: Vec<Vec<Envelope>> = batches
                .iter()
                .map(|b| {
                    let d = EnvelopeBatch::decode(b.bytes.clone()).unwrap().batch;
                    assert_eq!(d.len(), b.envelopes);
                    assert!(b.bytes.len() <= max_bytes || b.envelopes == 1);
                    d
                })
                .collect();
            let e = |i: usize| envelopes[i].clone();
            assert_eq!(
                decoded,
                vec![vec![e(0), e(1), e(2)], vec![e(3)], vec![e(4), e(6)]],
                "{name}"
            );
            // The bytes are what prost writes for the same batch.
            assert_eq!(
                batches[0].bytes,
                EnvelopeBatch {
                    batch: vec![e(0), e(1), e(2)]
                }
                .encode_to_vec()
            );
        }
        assert_eq!(
            encode_batches(&[log(20_000)], max_entry, max_bytes),
            (vec![], 1)
        );
        assert_eq!(
            encode_batches::<Bytes>(&[], max_entry, max_bytes),
            (vec![], 0)
        );
    }
}
