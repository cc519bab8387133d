//! Files named by route options (`ca=`, `cert=`, `key=`): read only when
//! they are regular files, and only up to [`MAX_BYTES`].
//!
//! A route's options come from whoever may call the routes API, so a path
//! may name a FIFO (a read that never returns), `/dev/zero` (endless) or
//! `/dev/urandom` (endless, and busy). The file is opened with
//! `O_NONBLOCK`, so that opening a FIFO does not wait for a writer, and
//! checked on the open descriptor before anything is read. Reading is
//! blocking IO: callers run it off the async runtime (the routes API builds
//! routes in `spawn_blocking`).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// The largest file a route option may name: PEM bundles are a few hundred
/// KiB at most.
pub const MAX_BYTES: u64 = 1 << 20;

/// Reads the file that option `option` names; the error names the option,
/// the path and the reason.
pub fn read_option_file(option: &str, path: &str) -> Result<Vec<u8>, String> {
    let fail = |why: String| format!("option {option}={path:?}: {why}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(fail(format!(
            "not a regular file (a {})",
            kind(&meta.file_type())
        )));
    }
    if meta.len() > MAX_BYTES {
        return Err(fail(format!("larger than {MAX_BYTES} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between the check and the read: never past the limit.
    (&file)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(fail(format!("larger than {MAX_BYTES} bytes")));
    }
    Ok(bytes)
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("spillway-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small.pem");
        std::fs::write(&small, b"pem").unwrap();
        assert_eq!(
            read_option_file("ca", small.to_str().unwrap()).unwrap(),
            b"pem"
        );
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![0u8; MAX_BYTES as usize + 1]).unwrap();
        let e = read_option_file("ca", big.to_str().unwrap()).unwrap_err();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
        for (path, what) in [
            ("/dev/zero", "character device"),
            ("/dev/urandom", "character device"),
            (dir.to_str().unwrap(), "directory"),
        ] {
            let e = read_option_file("key", path).unwrap_err();
            assert!(
                e.starts_with(&format!("option key={path:?}")) && e.contains(what),
                "{e}"
            );
        }
        let e = read_option_file("ca", "/does/not/exist").unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
