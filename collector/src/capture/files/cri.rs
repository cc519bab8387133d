//! The CRI log format, as containerd and CRI-O write it (and the kubelet
//! reads it): one record per line,
//!
//! ```text
//! 2026-12-01T00:53:02.123456789Z stdout F hello world
//! <RFC 3339 time>                <stream> <tags> <content>
//! ```
//!
//! `stream` is `stdout` or `stderr`; `tags` is `F` (the record ends a line)
//! or `P` (a piece: the runtime cut a long line, the next records of the
//! same stream continue it), possibly followed by further `:`-separated
//! tags, which are ignored. The content is the rest of the record, as the
//! container wrote it, without the newline.

use crate::container::Stream;
use crate::runtime::docker::time::parse_rfc3339;

/// One parsed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the runtime read the bytes, ns since the epoch.
    pub timestamp: i64,
    pub stream: Stream,
    /// `P`: a piece of a line the next record of `stream` continues.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Why a record is not in the CRI format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The first field is not an RFC 3339 time.
    Timestamp,
    /// The second field is neither `stdout` nor `stderr`.
    Stream,
    /// The third field does not start with the tag `F` or `P`.
    Tag,
}

/// Parses one record (`line` without its newline).
pub fn parse(line: &[u8]) -> Result<Record<'_>, Malformed> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let timestamp = fields
        .next()
        .and_then(parse_rfc3339)
        .ok_or(Malformed::Timestamp)?;
    let stream = match fields.next() {
        Some(b"stdout") => Stream::Stdout,
        Some(b"stderr") => Stream::Stderr,
        _ => return Err(Malformed::Stream),
    };
    let partial = match fields.next().map(|t| t.split(|&b| b == b':').next()) {
        Some(Some(b"F")) => false,
        Some(Some(b"P")) => true,
        _ => return Err(Malformed::Tag),
    };
    Ok(Record {
        timestamp,
        stream,
        partial,
        // "<ts> stdout F" with nothing after the tag is an empty line.
        content: fields.next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `date -u -d 2026-11-21T00:07:53Z +%s` = 1795219673
    const T: i64 = 1_795_219_673_840_214_398;

    #[test]
    fn full_and_partial_records() {
        assert_eq!(
            parse(b"2026-11-21T00:07:53.840214398Z stdout F hello world"),
            Ok(Record {
                timestamp: T,
                stream: Stream::Stdout,
                partial: false,
                content: b"hello world",
            })
        );
        let r = parse(b"2026-11-21T00:07:53.840214398Z stderr P  two  spaces ").unwrap();
        assert_eq!((r.stream, r.partial), (Stream::Stderr, true));
        assert_eq!(r.content, b" two  spaces ", "content is kept byte for byte");
    }

    #[test]
    fn local_offsets_further_tags_and_empty_lines() {
        // CRI-O writes the local offset.
        let r = parse(b"2026-11-21T01:07:53.840214398+01:00 stdout F:x y").unwrap();
        assert_eq!((r.timestamp, r.partial, r.content), (T, false, &b"y"[..]));
        assert_eq!(
            parse(b"2026-11-21T00:07:53.840214398Z stdout F ")
                .unwrap()
                .content,
            b""
        );
        assert_eq!(
            parse(b"2026-11-21T00:07:53.840214398Z stdout F")
                .unwrap()
                .content,
            b""
        );
        let binary = parse(b"2026-11-21T00:07:53.840214398Z stdout F \xff\x00\r").unwrap();
        assert_eq!(binary.content, b"\xff\x00\r");
    }

    #[test]
    fn malformed_records_say_why() {
        assert_eq!(parse(b""), Err(Malformed::Timestamp));
        assert_eq!(parse(b"hello world"), Err(Malformed::Timestamp));
        assert_eq!(
            parse(b"2026-11-21T00:07:53Z stdin F x"),
            Err(Malformed::Stream)
        );
        assert_eq!(parse(b"2026-11-21T00:07:53Z stdout"), Err(Malformed::Tag));
        assert_eq!(
            parse(b"2026-11-21T00:07:53Z stdout X y"),
            Err(Malformed::Tag)
        );
        assert_eq!(
            parse(b"2026-11-21T00:07:53Z stdout FP y"),
            Err(Malformed::Tag)
        );
        assert_eq!(parse(b"\xff\xfe stdout F y"), Err(Malformed::Timestamp));
    }
}
