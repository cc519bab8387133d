//! The collector's line assembler (`lines::Assembler`): a container's
//! writes cut into lines.
//!
//! Input: the bytes a container wrote; each `0x1e` byte ends one write
//! (and is not written), so the writes need not line up with lines.
//!
//! Invariants: the lines do not depend on how the bytes were split into
//! writes; no line holds a `\n` or is longer than `MAX_LINE`; a piece marked
//! partial is exactly `MAX_LINE` long; the pieces of each line are that
//! line as written, without its `\n` and a `\r` before it (so the
//! assembler never emits more bytes than it got); the last piece of a
//! line longer than `MAX_LINE` is not empty.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use spillway_collector::lines::{Assembler, Line, MAX_LINE};

fn assemble<'a>(writes: impl Iterator<Item = &'a [u8]>) -> Vec<Line> {
    let mut a = Assembler::new();
    let mut lines = Vec::new();
    let now = Instant::now();
    for (i, w) in writes.enumerate() {
        a.push(w, i as i64, now, |l| lines.push(l));
    }
    a.flush(|l| lines.push(l));
    assert!(a.is_empty());
    lines
}

fuzz_target!(|data: &[u8]| {
    let written: Vec<u8> = data.iter().copied().filter(|&b| b != 0x1e).collect();
    let lines = assemble(data.split(|&b| b == 0x1e));
    let at_once = assemble(std::iter::once(&written[..]));
    let shape = |ls: &[Line]| -> Vec<(Vec<u8>, bool)> {
        ls.iter().map(|l| (l.payload.to_vec(), l.partial)).collect()
    };
    assert_eq!(shape(&lines), shape(&at_once), "depends on the writes");

    // What each line is, read straight from the bytes.
    let mut expected: Vec<&[u8]> = written.split(|&b| b == b'\n').collect();
    if expected.last().is_some_and(|l| l.is_empty()) {
        // Ended by a newline: nothing after it.
        expected.pop();
    }
    let terminated = written.ends_with(b"\n");
    let total = expected.len();
    let mut pieces = lines.iter();
    for (n, want) in expected.into_iter().enumerate() {
        let last = n + 1 == total;
        let want = if !last || terminated {
            want.strip_suffix(b"\r").unwrap_or(want)
        } else {
            want
        };
        let mut got = Vec::new();
        let mut count = 0;
        loop {
            let piece = pieces.next().unwrap_or_else(|| panic!("line {n} missing"));
            assert!(piece.payload.len() <= MAX_LINE);
            assert!(!piece.payload.contains(&b'\n'));
            got.extend_from_slice(&piece.payload);
            count += 1;
            if !piece.partial {
                assert!(
                    count == 1 || !piece.payload.is_empty(),
                    "line {n}: an empty last piece after {} partial ones",
                    count - 1
                );
                break;
            }
            assert_eq!(piece.payload.len(), MAX_LINE, "a short partial piece");
        }
        assert_eq!(got, want, "line {n}");
    }
    assert!(pieces.next().is_none(), "more lines than written");
});
