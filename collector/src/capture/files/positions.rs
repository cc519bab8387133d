//! Where the files source got to in each log file, kept in the state
//! directory so that a restarted collector resumes there.
//!
//! A file is known by its identity, device and inode, which rotation by
//! rename keeps and a new file does not share, plus a fingerprint of its
//! first bytes: an inode number reused by a later file (the old one was
//! deleted) does not match it.
//!
//! The file is written whole, to a temporary file that is synced and then
//! renamed over the old one: a crash leaves the old or the new positions,
//! never a mix.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "files-positions.json";

/// A file's identity: the same across renames, different for a new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A hash of a file's first `len` bytes (up to [`Fingerprint::BYTES`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    /// How many of a file's first bytes are hashed: a CRI record's time
    /// (with nanoseconds) and the start of its line.
    pub const BYTES: usize = 256;

    /// The fingerprint of `head`, a file's first bytes (at most
    /// [`Fingerprint::BYTES`] are used).
    pub fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(Self::BYTES)];
        Fingerprint {
            len: head.len() as u32,
            hash: spillway_plumbing::fnv::hash(head, spillway_plumbing::fnv::OFFSET),
        }
    }
}

/// A line of one stream that was still being joined (`P` records) at the
/// saved position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenLine {
    /// Where its first record starts.
    pub start: u64,
    /// How many 16 KiB pieces of it were already sent.
    pub pieces_sent: u32,
}

/// Where the source got to in one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub id: FileId,
    pub fingerprint: Fingerprint,
    /// Every record before this offset was handled (sent, or counted as
    /// malformed).
    pub done: u64,
    /// Lines still open at `done`, for stdout and stderr: reading resumes
    /// at the first one's start and sends only what was not yet sent.
    pub open: [Option<OpenLine>; 2],
    /// The file's path when saved (for people reading the file).
    pub path: PathBuf,
}

impl Position {
    /// Where reading resumes: the start of the oldest open line, else
    /// `done`.
    pub fn resume_at(&self) -> u64 {
        self.open
            .iter()
            .flatten()
            .map(|o| o.start)
            .fold(self.done, u64::min)
    }
}

#[derive(Serialize, Deserialize)]
struct Saved {
    files: Vec<Position>,
}

/// The positions file of a state directory.
pub struct Store {
    file: PathBuf,
}

impl Store {
    /// The store in `state_dir` (created if missing).
    pub fn new(state_dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        Ok(Store {
            file: state_dir.join(FILE_NAME),
        })
    }

    /// The saved positions; none when there is no file yet. A file that
    /// cannot be read or parsed is logged and ignored (every file is then
    /// read from its start).
    pub fn load(&self) -> Vec<Position> {
        let text = match std::fs::read(&self.file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(
                    "cannot read {}: {e}; reading log files from their start",
                    self.file.display()
                );
                return Vec::new();
            }
        };
        match serde_json::from_slice::<Saved>(&text) {
            Ok(saved) => saved.files,
            Err(e) => {
                tracing::warn!(
                    "{} is not a positions file ({e}); reading log files from their start",
                    self.file.display()
                );
                Vec::new()
            }
        }
    }

    /// Replaces the saved positions with `positions`, atomically.
    pub fn save(&self, positions: Vec<Position>) -> Result<(), String> {
        let text = serde_json::to_vec(&Saved { files: positions }).expect("positions serialise");
        let tmp = self.file.with_extension("json.tmp");
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.file)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot save positions to {}: {e}", self.file.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("spillway-positions-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn position(ino: u64, done: u64) -> Position {
        Position {
            id: FileId { dev: 8, ino },
            fingerprint: Fingerprint::of(b"2026-12-01T00:00:00Z stdout F a"),
            done,
            open: [
                None,
                Some(OpenLine {
                    start: 10,
                    pieces_sent: 2,
                }),
            ],
            path: "/var/log/pods/a_b_c/d/0.log".into(),
        }
    }

    #[test]
    fn saved_positions_load_back_and_replace_the_old_ones() {
        let d = dir("roundtrip");
        let store = Store::new(&d).unwrap();
        assert_eq!(store.load(), vec![], "nothing saved yet");
        store.save(vec![position(1, 100), position(2, 5)]).unwrap();
        assert_eq!(store.load(), vec![position(1, 100), position(2, 5)]);
        store.save(vec![position(2, 7)]).unwrap();
        assert_eq!(store.load(), vec![position(2, 7)], "replaced, not merged");
        assert!(!d.join("files-positions.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_file_means_no_positions() {
        let d = dir("damaged");
        let store = Store::new(&d).unwrap();
        std::fs::write(d.join(FILE_NAME), b"{\"files\": [tru").unwrap();
        assert_eq!(store.load(), vec![]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reading_resumes_at_the_oldest_open_line() {
        let mut p = position(1, 100);
        assert_eq!(p.resume_at(), 10);
        p.open = [
            Some(OpenLine {
                start: 4,
                pieces_sent: 0,
            }),
            None,
        ];
        assert_eq!(p.resume_at(), 4);
        p.open = [None, None];
        assert_eq!(p.resume_at(), 100);
    }

    #[test]
    fn fingerprints_cover_the_first_bytes_only() {
        let long = vec![b'a'; 1000];
        assert_eq!(Fingerprint::of(&long), Fingerprint::of(&long[..256]));
        assert_eq!(Fingerprint::of(&long).len, 256);
        assert_ne!(Fingerprint::of(b"abc"), Fingerprint::of(b"abd"));
        assert_ne!(Fingerprint::of(b"ab"), Fingerprint::of(b"abc"));
    }
}
