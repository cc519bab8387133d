//! A TTY container's console stream, cut back into Docker's messages.

use bytes::{Bytes, BytesMut};

/// The pieces Docker cuts longer lines into (its log copier's buffer).
const DOCKER_PIECE: usize = 16 * 1024;

/// The longest timestamp Docker writes before a message.
const TIMESTAMP_MAX: usize = "2006-01-02T15:04:05.000000000+07:00".len();

/// Cuts a TTY container's console stream, which has no framing, back into
/// Docker's messages: `<timestamp> ` and then a line up to its `\n`, or a
/// [`DOCKER_PIECE`]-byte piece of a longer line (which has no `\n`).
#[derive(Debug, Default)]
pub(super) struct TtyMessages {
    buf: BytesMut,
}

impl TtyMessages {
    pub(super) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole message; at the end of the stream (`eof`), the rest.
    pub(super) fn next(&mut self, eof: bool) -> Option<Bytes> {
        if self.buf.is_empty() {
            return None;
        }
        let body = match self
            .buf
            .iter()
            .take(TIMESTAMP_MAX + 1)
            .position(|&b| b == b' ')
        {
            Some(space) => space + 1,
            // The timestamp is still arriving.
            None if self.buf.len() <= TIMESTAMP_MAX && !eof => return None,
            // Not a timestamp: cut at the newline as below.
            None => 0,
        };
        let rest = &self.buf[body..];
        let len = match rest[..rest.len().min(DOCKER_PIECE)]
            .iter()
            .position(|&b| b == b'\n')
        {
            Some(newline) => newline + 1,
            None if rest.len() >= DOCKER_PIECE => DOCKER_PIECE,
            None if eof => rest.len(),
            None => return None,
        };
        Some(self.buf.split_to(body + len).freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tty(chunks: &[&[u8]], eof: bool) -> Vec<Vec<u8>> {
        let mut t = TtyMessages::default();
        let mut out = vec![];
        for chunk in chunks {
            t.push(chunk);
            while let Some(m) = t.next(false) {
                out.push(m.to_vec());
            }
        }
        while let Some(m) = t.next(eof) {
            out.push(m.to_vec());
        }
        out
    }

    const TS: &[u8] = b"2026-11-21T00:07:58.441506936Z ";

    #[test]
    fn tty_lines_split_at_newlines_wherever_the_chunks_end() {
        let stream = [TS, b"hello\r\n", TS, b"world\r\n", TS, b"no eol"].concat();
        let want = vec![
            [TS, b"hello\r\n"].concat(),
            [TS, b"world\r\n"].concat(),
            [TS, b"no eol"].concat(),
        ];
        assert_eq!(tty(&[&stream], true), want);
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(tty(&bytewise, true), want);
        assert_eq!(tty(&[&stream], false), want[..2], "waits for the rest");
    }

    #[test]
    fn tty_long_lines_come_as_docker_pieces() {
        // What Docker sends for a 20000-byte line: a full piece, then the
        // rest with its own timestamp, in one console chunk.
        let x = vec![b'x'; 20_000];
        let stream = [TS, &x[..DOCKER_PIECE], TS, &x[DOCKER_PIECE..], b"\r\n"].concat();
        let got = tty(&[&stream], false);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], [TS, &x[..DOCKER_PIECE]].concat());
        assert_eq!(got[1], [TS, &x[DOCKER_PIECE..], b"\r\n"].concat());
    }

    #[test]
    fn tty_garbage_is_cut_at_newlines_not_dropped() {
        let got = tty(&[b"this is not a timestamp at all, no\nok\n"], true);
        assert_eq!(
            got,
            vec![
                b"this is not a timestamp at all, no\n".to_vec(),
                b"ok\n".to_vec()
            ]
        );
    }
}
