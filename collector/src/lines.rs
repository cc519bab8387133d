//! Lines out of a byte stream.
//!
//! A container's output arrives in writes (or Docker API frames) that need
//! not line up with lines: one write may hold many lines, or part of one.
//! An [`Assembler`] per container stream cuts the bytes into lines:
//!
//! - a line ends at `\n`, which is removed (with a `\r` before it, as a TTY
//!   writes `\r\n`); every other byte passes through unchanged, UTF-8 or not;
//! - a line longer than [`MAX_LINE`] is cut into [`MAX_LINE`]-byte pieces,
//!   each marked `partial` except the last;
//! - a line still incomplete after a short time is flushed as it is
//!   ([`Assembler::flush_if_older`]), so a prompt without a newline shows.
//!
//! A line's timestamp is that of the write holding its first byte.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// The longest payload of one envelope.
pub const MAX_LINE: usize = 16 * 1024;

/// How long an incomplete line waits for the rest before it is flushed.
pub const PARTIAL_LINE_TIMEOUT: Duration = Duration::from_millis(500);

/// One line, or one piece of a line longer than [`MAX_LINE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub payload: Bytes,
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
    /// A piece of a longer line; the last piece is not partial.
    pub partial: bool,
}

/// Cuts one stream's bytes into [`Line`]s.
#[derive(Debug, Default)]
pub struct Assembler {
    buf: BytesMut,
    /// Timestamp of the incomplete line in `buf`.
    timestamp: i64,
    /// When the incomplete line in `buf` began, for the flush timeout.
    started: Option<Instant>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data`, written at `timestamp` (ns since the epoch), and hands
    /// every line it completes to `out`.
    pub fn push(&mut self, data: &[u8], timestamp: i64, now: Instant, mut out: impl FnMut(Line)) {
        let mut rest = data;
        while !rest.is_empty() {
            let (content, newline) = match memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = &rest[content.len() + usize::from(newline)..];
            self.append(content, timestamp, now, &mut out);
            if newline {
                if self.buf.last() == Some(&b'\r') {
                    self.buf.truncate(self.buf.len() - 1);
                }
                self.emit(false, &mut out);
            }
        }
    }

    /// Appends bytes without a newline, cutting [`MAX_LINE`] pieces.
    fn append(
        &mut self,
        mut content: &[u8],
        timestamp: i64,
        now: Instant,
        out: &mut impl FnMut(Line),
    ) {
        if content.is_empty() {
            if self.started.is_none() {
                // An empty line still has a timestamp.
                self.timestamp = timestamp;
            }
            return;
        }
        loop {
            if self.started.is_none() {
                self.timestamp = timestamp;
                self.started = Some(now);
            }
            if self.buf.len() > MAX_LINE {
                // The `\r` held after a full piece did not end the line.
                self.emit_full_piece(out);
            }
            let room = MAX_LINE - self.buf.len();
            if content.len() <= room {
                self.buf.extend_from_slice(content);
                return;
            }
            if content.len() == room + 1 && content[room] == b'\r' {
                // A full piece and a `\r`, which a `\n` may follow: held,
                // so that a line of exactly MAX_LINE bytes written with
                // `\r\n` is one piece, not a full one and an empty one.
                self.buf.extend_from_slice(content);
                return;
            }
            // More than fits: the piece is full and the line goes on.
            self.buf.extend_from_slice(&content[..room]);
            content = &content[room..];
            self.emit(true, out);
        }
    }

    /// Hands out the first [`MAX_LINE`] bytes as a partial piece, keeping
    /// the rest (a held `\r`) for the next piece.
    fn emit_full_piece(&mut self, out: &mut impl FnMut(Line)) {
        out(Line {
            payload: self.buf.split_to(MAX_LINE).freeze(),
            timestamp: self.timestamp,
            partial: true,
        });
    }

    fn emit(&mut self, partial: bool, out: &mut impl FnMut(Line)) {
        if self.buf.len() > MAX_LINE {
            // A `\r` held after a full piece, and no `\n` came.
            self.emit_full_piece(out);
        }
        out(Line {
            payload: self.buf.split().freeze(),
            timestamp: self.timestamp,
            partial,
        });
        self.started = None;
    }

    /// Flushes an incomplete line that began more than `timeout` ago.
    pub fn flush_if_older(&mut self, timeout: Duration, now: Instant, mut out: impl FnMut(Line)) {
        if self
            .started
            .is_some_and(|s| now.saturating_duration_since(s) >= timeout)
        {
            self.emit(false, &mut out);
        }
    }

    /// Flushes an incomplete line now (its stream ended).
    pub fn flush(&mut self, mut out: impl FnMut(Line)) {
        if self.started.is_some() {
            self.emit(false, &mut out);
        }
    }

    /// Whether an incomplete line is waiting.
    pub fn is_empty(&self) -> bool {
        self.started.is_none()
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(writes: &[(&[u8], i64)]) -> (Vec<Line>, Assembler) {
        let mut a = Assembler::new();
        let mut lines = vec![];
        let now = Instant::now();
        for (data, ts) in writes {
            a.push(data, *ts, now, |l| lines.push(l));
        }
        (lines, a)
    }

    fn text(lines: &[Line]) -> Vec<(String, i64, bool)> {
        lines
            .iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.payload).into_owned(),
                    l.timestamp,
                    l.partial,
                )
            })
            .collect()
    }

    #[test]
    fn one_write_many_lines_and_lines_across_writes() {
        let (lines, a) = run(&[(b"a\nb\npar", 1), (b"t", 2), (b"ial\n\nlast", 3)]);
        assert_eq!(
            text(&lines),
            vec![
                ("a".into(), 1, false),
                ("b".into(), 1, false),
                ("partial".into(), 1, false),
                ("".into(), 3, false),
            ]
        );
        assert!(!a.is_empty(), "\"last\" waits for its newline");
    }

    #[test]
    fn crlf_and_binary_bytes() {
        let (lines, _) = run(&[(b"tty line\r\n", 1), (b"\xff\xfe\x00bin\n", 2)]);
        assert_eq!(&lines[0].payload[..], b"tty line");
        assert_eq!(&lines[1].payload[..], b"\xff\xfe\x00bin");
    }

    #[test]
    fn long_lines_are_cut_into_partial_pieces() {
        let long = vec![b'x'; 100 * 1024];
        // Written in uneven chunks, then the newline.
        let writes: Vec<(&[u8], i64)> = long.chunks(7000).map(|c| (c, 5)).collect();
        let (mut all, mut a) = run(&writes);
        a.push(b"\n", 6, Instant::now(), |l| all.push(l));
        assert_eq!(all.len(), 7, "6 full pieces and the rest");
        assert!(
            all[..6]
                .iter()
                .all(|l| l.partial && l.payload.len() == MAX_LINE)
        );
        assert!(!all[6].partial);
        assert_eq!(all[6].payload.len(), 100 * 1024 - 6 * MAX_LINE);
        let total: usize = all.iter().map(|l| l.payload.len()).sum();
        assert_eq!(total, 100 * 1024, "nothing lost");
    }

    #[test]
    fn a_line_of_exactly_max_line_is_not_partial() {
        let exact = vec![b'y'; MAX_LINE];
        let (lines, _) = run(&[(&exact, 1), (b"\n", 2)]);
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].partial);
    }

    /// Found while writing the `lines` fuzz target's model of the rule
    /// (the input is in fuzz/corpus/lines/): a line of exactly
    /// [`MAX_LINE`] bytes ended by `\r\n` came out as a full partial piece
    /// and an empty last one.
    #[test]
    fn a_line_of_exactly_max_line_ended_by_crlf_is_one_piece() {
        let exact = vec![b'y'; MAX_LINE];
        let mut whole = exact.clone();
        whole.extend_from_slice(b"\r\n");
        for writes in [
            vec![(&whole[..], 1)],
            vec![(&exact[..], 1), (&b"\r"[..], 2), (&b"\n"[..], 3)],
            vec![(&exact[..], 1), (&b"\r\n"[..], 2)],
        ] {
            let (lines, a) = run(&writes);
            assert_eq!(lines.len(), 1, "{:?}", text(&lines).len());
            assert_eq!(lines[0].payload, exact);
            assert!(!lines[0].partial);
            assert_eq!(lines[0].timestamp, 1);
            assert!(a.is_empty());
        }
        // A `\r` that does not end the line starts the next piece; one
        // left at the end is flushed as it is.
        let (mut lines, mut a) = run(&[(&exact, 1), (b"\r", 2), (b"z\n", 3)]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].partial && lines[0].payload.len() == MAX_LINE);
        assert_eq!(
            (&lines[1].payload[..], lines[1].partial),
            (&b"\rz"[..], false)
        );
        lines.clear();
        a.push(&exact, 4, Instant::now(), |l| lines.push(l));
        a.push(b"\r", 5, Instant::now(), |l| lines.push(l));
        a.flush(|l| lines.push(l));
        assert_eq!(lines.len(), 2);
        assert!(lines[0].partial && lines[0].payload.len() == MAX_LINE);
        assert_eq!(
            (&lines[1].payload[..], lines[1].partial),
            (&b"\r"[..], false)
        );
    }

    #[test]
    fn incomplete_lines_are_flushed_after_the_timeout() {
        let mut a = Assembler::new();
        let t0 = Instant::now();
        let mut lines = vec![];
        a.push(b"prompt> ", 1, t0, |l| lines.push(l));
        a.flush_if_older(PARTIAL_LINE_TIMEOUT, t0 + Duration::from_millis(10), |l| {
            lines.push(l)
        });
        assert!(lines.is_empty(), "too early");
        a.flush_if_older(PARTIAL_LINE_TIMEOUT, t0 + PARTIAL_LINE_TIMEOUT, |l| {
            lines.push(l)
        });
        assert_eq!(text(&lines), vec![("prompt> ".into(), 1, false)]);
        assert!(a.is_empty());
    }
}
