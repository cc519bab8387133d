//! Reading one CRI log file: records in, lines out, and where it got to.
//!
//! A [`Tailer`] holds its file open, so it reads on after the file was
//! renamed (rotation) or deleted (its pod was removed), until it has read
//! everything. The bytes read but not yet ended by a newline (the runtime
//! is writing the record) wait in `carry`; everything before `done` was
//! handled. Each stream's `P` records are joined by an [`Assembler`]
//! until the `F` record that ends the line, so a line is sent whole, or in
//! 16 KiB pieces (`partial=true` but the last), as other sources send it.
//!
//! A file shorter than what was read, or whose first bytes changed, was
//! truncated (copytruncate rotation): it is read again from its start.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::cri::{self, Record};
use super::positions::{FileId, Fingerprint, OpenLine, Position};
use crate::container::{EnvelopeTemplate, Stream};
use crate::lines::{Assembler, Line, MAX_LINE};

/// The longest record taken: a runtime cuts lines at 16 KiB (the kubelet's
/// and CRI-O's limit), so a record never needs much more than that.
/// Longer ones are skipped and counted as `too_long`.
pub const MAX_RECORD: usize = 4 * MAX_LINE;

/// Counts of records skipped, for the source's metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Not in the CRI format.
    pub malformed: u64,
    /// Longer than [`MAX_RECORD`].
    pub too_long: u64,
}

/// One log file being read.
pub struct Tailer {
    file: File,
    pub id: FileId,
    /// Where it was last seen.
    pub path: PathBuf,
    /// Its path still names it (set by each scan of the directory).
    pub current: bool,
    pub template: Arc<EnvelopeTemplate>,
    pub shard: usize,
    fingerprint: Fingerprint,
    /// Every record before this offset was handled.
    done: u64,
    /// The bytes from `done` on that were read: a record without its
    /// newline yet.
    carry: Vec<u8>,
    /// Skipping the rest of a record longer than [`MAX_RECORD`].
    discarding: bool,
    /// stdout, stderr.
    streams: [Joiner; 2],
    /// After a restart: what was sent before it, not to send again.
    replay: Option<Replay>,
    /// Read everything the file had at the last read.
    pub at_eof: bool,
    /// When data was last read, or the path stopped naming the file
    /// (set by the source).
    pub last_news: Instant,
    /// Lines read but not yet handed on.
    pub pending: Vec<(Stream, Line)>,
}

/// Joins one stream's `P` records.
#[derive(Default)]
struct Joiner {
    lines: Assembler,
    /// The line being joined.
    open: Option<OpenLine>,
}

/// What a saved position says was sent before the restart.
struct Replay {
    done: u64,
    open: [Option<OpenLine>; 2],
    /// Pieces of each stream's open line still to skip.
    skip: [u32; 2],
}

impl Tailer {
    /// Starts reading `file` at `saved` (a position saved for this file),
    /// else at its start.
    pub fn new(
        file: File,
        id: FileId,
        path: PathBuf,
        template: Arc<EnvelopeTemplate>,
        shard: usize,
        saved: Option<&Position>,
    ) -> Tailer {
        let mut t = Tailer {
            file,
            id,
            path,
            current: true,
            template,
            shard,
            fingerprint: Fingerprint::default(),
            done: 0,
            carry: Vec::new(),
            discarding: false,
            streams: Default::default(),
            replay: None,
            at_eof: false,
            last_news: Instant::now(),
            pending: Vec::new(),
        };
        if let Some(p) = saved {
            t.fingerprint = p.fingerprint;
            t.done = p.resume_at();
            t.replay = Some(Replay {
                done: p.done,
                open: p.open,
                skip: p.open.map(|o| o.map_or(0, |o| o.pieces_sent)),
            });
        }
        t
    }

    /// The file's first bytes (up to [`Fingerprint::BYTES`]).
    pub fn head(file: &File) -> std::io::Result<Vec<u8>> {
        let mut head = vec![0; Fingerprint::BYTES];
        let mut n = 0;
        while n < head.len() {
            match file.read_at(&mut head[n..], n as u64)? {
                0 => break,
                m => n += m,
            }
        }
        head.truncate(n);
        Ok(head)
    }

    /// Whether `saved` is a position in this same file: its fingerprint
    /// matches the file's first bytes and the file is not shorter.
    pub fn matches(head: &[u8], size: u64, saved: &Position) -> bool {
        let len = saved.fingerprint.len as usize;
        head.len() >= len
            && Fingerprint::of(&head[..len]) == saved.fingerprint
            && size >= saved.resume_at()
    }

    /// Reads up to `budget` bytes of new records; returns how many bytes
    /// it read. Lines go to `pending`; skipped records are counted in
    /// `skipped`.
    pub fn read(&mut self, budget: usize, skipped: &mut Skipped) -> std::io::Result<usize> {
        let size = self.file.metadata()?.size();
        let mut offset = self.done + self.carry.len() as u64;
        if size < offset || (size > offset && self.rewritten()?) {
            self.truncated();
            offset = 0;
        }
        let want = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(budget);
        let old = self.carry.len();
        self.carry.resize(old + want, 0);
        let mut got = 0;
        while got < want {
            match self
                .file
                .read_at(&mut self.carry[old + got..], offset + got as u64)?
            {
                0 => break,
                n => got += n,
            }
        }
        self.carry.truncate(old + got);
        self.at_eof = offset + (got as u64) >= size;
        if got > 0 {
            self.last_news = Instant::now();
            if (self.fingerprint.len as usize) < Fingerprint::BYTES {
                self.fingerprint = Fingerprint::of(&Self::head(&self.file)?);
            }
            self.records(skipped);
        }
        Ok(got)
    }

    /// Whether the first bytes are no longer those fingerprinted: the
    /// file was truncated and written again since the last read.
    fn rewritten(&self) -> std::io::Result<bool> {
        let len = self.fingerprint.len as usize;
        if len == 0 {
            return Ok(false);
        }
        let head = Self::head(&self.file)?;
        Ok(head.len() < len || Fingerprint::of(&head[..len]) != self.fingerprint)
    }

    /// Starts over at the file's start: it was truncated.
    fn truncated(&mut self) {
        tracing::debug!(
            "{} was truncated; reading it from its start",
            self.path.display()
        );
        self.flush();
        self.done = 0;
        self.carry.clear();
        self.discarding = false;
        self.replay = None;
        self.fingerprint = Fingerprint::default();
    }

    /// Handles every complete record in `carry`.
    fn records(&mut self, skipped: &mut Skipped) {
        let carry = std::mem::take(&mut self.carry);
        let now = Instant::now();
        let mut pos = 0;
        while let Some(nl) = carry[pos..].iter().position(|&b| b == b'\n') {
            let (start, end) = (self.done, self.done + nl as u64 + 1);
            let record = &carry[pos..pos + nl];
            if std::mem::take(&mut self.discarding) {
                // The end of a record already counted as too long.
            } else if record.len() > MAX_RECORD {
                skipped.too_long += 1;
            } else {
                match cri::parse(record) {
                    Ok(r) => self.record(start, end, r, now),
                    Err(why) => {
                        tracing::debug!(
                            "{}: a malformed record ({why:?}) at byte {start}",
                            self.path.display()
                        );
                        skipped.malformed += 1;
                    }
                }
            }
            self.done = end;
            pos += nl + 1;
        }
        let rest = &carry[pos..];
        if rest.len() > MAX_RECORD {
            if !self.discarding {
                skipped.too_long += 1;
            }
            self.discarding = true;
            self.done += rest.len() as u64;
            self.carry.clear();
        } else {
            self.carry = rest.to_vec();
        }
    }

    /// One record at `start..end`.
    fn record(&mut self, start: u64, end: u64, r: Record<'_>, now: Instant) {
        let s = index(r.stream);
        let mut skip = None;
        if self.replay.as_ref().is_some_and(|r| end > r.done) {
            self.replay = None;
        }
        if let Some(replay) = &mut self.replay {
            if replay.open[s].is_some_and(|o| start >= o.start) {
                // A piece of a line that was open: joined again, and the
                // pieces already sent are skipped.
                skip = Some(&mut replay.skip[s]);
            } else {
                // Sent before the restart.
                return;
            }
        }
        let joiner = &mut self.streams[s];
        if r.partial && joiner.open.is_none() {
            joiner.open = Some(OpenLine {
                start,
                pieces_sent: 0,
            });
        }
        let pending = &mut self.pending;
        let open = &mut joiner.open;
        let mut out = |line: Line| {
            if let Some(o) = open.as_mut() {
                o.pieces_sent += 1;
            }
            match skip.as_deref_mut() {
                Some(n) if *n > 0 => *n -= 1,
                _ => pending.push((r.stream, line)),
            }
        };
        joiner.lines.push(r.content, r.timestamp, now, &mut out);
        if !r.partial {
            joiner.lines.push(b"\n", r.timestamp, now, &mut out);
            joiner.open = None;
        }
    }

    /// Sends what is left: a last record without its newline, and lines
    /// still being joined (the file ends, or was truncated).
    pub fn flush(&mut self) {
        if !self.carry.is_empty() && !self.discarding {
            let mut skipped = Skipped::default();
            self.carry.push(b'\n');
            self.records(&mut skipped);
        }
        for (stream, joiner) in [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .zip(&mut self.streams)
        {
            let pending = &mut self.pending;
            joiner.lines.flush(|line| pending.push((stream, line)));
            joiner.open = None;
        }
    }

    /// Where this file is, to save.
    pub fn position(&self) -> Position {
        Position {
            id: self.id,
            fingerprint: self.fingerprint,
            done: self.done,
            open: [self.streams[0].open, self.streams[1].open],
            path: self.path.clone(),
        }
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    use spillway_routes::ContainerInfo;

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, content: &[u8]) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("spillway-tail-{name}-{}.log", std::process::id()));
            std::fs::write(&path, content).unwrap();
            TempFile(path)
        }

        fn append(&self, content: &[u8]) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.0)
                .unwrap();
            f.write_all(content).unwrap();
        }

        fn tailer(&self, saved: Option<&Position>) -> Tailer {
            let file = File::open(&self.0).unwrap();
            let meta = file.metadata().unwrap();
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            let template = EnvelopeTemplate::from_parts(
                "s".into(),
                "i".into(),
                Default::default(),
                ContainerInfo::default(),
            );
            Tailer::new(file, id, self.0.clone(), Arc::new(template), 0, saved)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn text(lines: &[(Stream, Line)]) -> Vec<(Stream, String, i64, bool)> {
        lines
            .iter()
            .map(|(s, l)| {
                let payload = String::from_utf8_lossy(&l.payload);
                let payload = if payload.len() > 40 {
                    format!("{}..({} bytes)", &payload[..10], payload.len())
                } else {
                    payload.into_owned()
                };
                (*s, payload, l.timestamp, l.partial)
            })
            .collect()
    }

    fn record(second: u32, stream: &str, tag: &str, content: &str) -> String {
        format!("2026-12-01T00:00:{second:02}.000000001Z {stream} {tag} {content}\n")
    }

    const S: i64 = 1_796_083_200_000_000_001; // 2026-12-01T00:00:00.000000001Z

    #[test]
    fn records_become_lines_with_partial_records_joined() {
        let content = [
            record(0, "stdout", "F", "one"),
            record(1, "stderr", "P", "par"),
            record(2, "stdout", "P", "x"),
            "not a record\n".to_owned(),
            record(3, "stderr", "P", "ti"),
            record(4, "stderr", "F", "al"),
            record(5, "stdout", "F", ""),
            record(6, "stdout", "F", "unfinished"),
        ]
        .concat();
        // The last record's newline is not written yet.
        let f = TempFile::new("join", &content.as_bytes()[..content.len() - 1]);
        let mut t = f.tailer(None);
        let mut skipped = Skipped::default();
        t.read(usize::MAX, &mut skipped).unwrap();
        assert_eq!(
            skipped,
            Skipped {
                malformed: 1,
                too_long: 0
            }
        );
        assert_eq!(
            text(&t.pending),
            vec![
                (Stream::Stdout, "one".into(), S, false),
                (Stream::Stderr, "partial".into(), S + 1_000_000_000, false),
                (Stream::Stdout, "x".into(), S + 2_000_000_000, false),
            ]
        );
        t.pending.clear();
        f.append(b"\n");
        t.read(usize::MAX, &mut skipped).unwrap();
        assert_eq!(
            text(&t.pending),
            vec![(
                Stream::Stdout,
                "unfinished".into(),
                S + 6_000_000_000,
                false
            )]
        );
        assert!(t.at_eof);
    }

    #[test]
    fn over_long_records_are_skipped_and_counted() {
        let long = "x".repeat(MAX_RECORD + 10);
        let content = [
            record(0, "stdout", "F", &long),
            record(1, "stdout", "F", "after"),
        ]
        .concat();
        let f = TempFile::new("long", content.as_bytes());
        let mut t = f.tailer(None);
        let mut skipped = Skipped::default();
        // In small reads, so that the long record spans several.
        while t.read(10_000, &mut skipped).unwrap() > 0 {}
        assert_eq!(
            skipped,
            Skipped {
                malformed: 0,
                too_long: 1
            }
        );
        assert_eq!(
            text(&t.pending),
            vec![(Stream::Stdout, "after".into(), S + 1_000_000_000, false)]
        );
    }

    /// Everything a file gives when read in one go.
    fn all_lines(f: &TempFile) -> Vec<(Stream, Line)> {
        let mut t = f.tailer(None);
        t.read(usize::MAX, &mut Skipped::default()).unwrap();
        t.pending
    }

    #[test]
    fn a_restart_at_any_point_resumes_exactly() {
        // Long lines joined from pieces (each over 16 KiB, so that some
        // pieces are sent before the line ends), interleaved streams.
        let piece = "p".repeat(10_000);
        let content = [
            record(0, "stdout", "F", "first"),
            record(1, "stdout", "P", &piece),
            record(2, "stderr", "F", "err 1"),
            record(3, "stdout", "P", &piece),
            record(4, "stderr", "P", "e-"),
            record(5, "stdout", "P", &piece),
            record(6, "stderr", "F", "joined"),
            record(7, "stdout", "F", "end"),
            record(8, "stdout", "F", "last"),
        ]
        .concat();
        let f = TempFile::new("restart", content.as_bytes());
        let whole = all_lines(&f);
        assert_eq!(whole.len(), 6, "{:?}", text(&whole));
        for cut in (0..content.len()).step_by(997).chain([content.len()]) {
            let mut before = f.tailer(None);
            before.read(cut, &mut Skipped::default()).unwrap();
            // The position is saved before the lines are handed on.
            let saved = before.position();
            let mut after = f.tailer(Some(&saved));
            after.read(usize::MAX, &mut Skipped::default()).unwrap();
            let mut got = before.pending;
            got.extend(after.pending);
            assert_eq!(text(&got), text(&whole), "restarted after {cut} bytes");
        }
    }

    #[test]
    fn a_truncated_file_is_read_again_from_its_start() {
        let f = TempFile::new("truncate", record(0, "stdout", "F", "before").as_bytes());
        let mut t = f.tailer(None);
        let mut skipped = Skipped::default();
        t.read(usize::MAX, &mut skipped).unwrap();
        // Shorter than what was read.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f.0)
            .unwrap()
            .set_len(0)
            .unwrap();
        f.append(record(1, "stdout", "F", "a").as_bytes());
        t.read(usize::MAX, &mut skipped).unwrap();
        // Longer than what was read, but other first bytes.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f.0)
            .unwrap()
            .set_len(0)
            .unwrap();
        f.append(
            [
                record(2, "stdout", "F", "bbbbbbbbbbbb"),
                record(3, "stdout", "F", "c"),
            ]
            .concat()
            .as_bytes(),
        );
        t.read(usize::MAX, &mut skipped).unwrap();
        let payloads: Vec<String> = text(&t.pending).into_iter().map(|l| l.1).collect();
        assert_eq!(payloads, ["before", "a", "bbbbbbbbbbbb", "c"]);
        assert_eq!(skipped, Skipped::default());
    }

    #[test]
    fn a_saved_position_matches_only_its_own_file() {
        let f = TempFile::new("match", record(0, "stdout", "F", "x").as_bytes());
        let mut t = f.tailer(None);
        t.read(usize::MAX, &mut Skipped::default()).unwrap();
        let saved = t.position();
        let file = File::open(&f.0).unwrap();
        let size = file.metadata().unwrap().len();
        assert!(Tailer::matches(&Tailer::head(&file).unwrap(), size, &saved));
        // Another file (an inode reused) of the same size.
        std::fs::write(&f.0, record(0, "stdout", "F", "y")).unwrap();
        assert!(!Tailer::matches(
            &Tailer::head(&file).unwrap(),
            size,
            &saved
        ));
        // The same file, but shorter than the position.
        std::fs::write(&f.0, &record(0, "stdout", "F", "x")[..5]).unwrap();
        assert!(!Tailer::matches(&Tailer::head(&file).unwrap(), 5, &saved));
    }
}
