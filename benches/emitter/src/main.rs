//! `spillway-emitter`: the benchmarks' load generator.
//!
//! Writes `--count` lines of `--size` bytes (newline included) to stdout,
//! one `write(2)` per line as a line-buffered application would, paced at
//! `--rate` lines per second (0: as fast as it can). Each line is
//!
//! ```text
//! seq=<n> ts=<unix nanos at the write> xxxx…\n
//! ```
//!
//! numbered from 0, so a consumer can count losses and duplicates per
//! emitter and measure latency from the write. With `--start-file` all the
//! emitters of a run wait until that file exists, so they start together
//! however long their containers took to start.
//!
//! With `--src NAME` each line also carries `src=NAME` after its time
//! stamp, so a consumer can tell which emitter wrote a line whatever the
//! envelope says (and check the envelope's container tags against it).
//! With `--report-file PATH` the emitter writes, once done, what its own
//! clock measured: `first=<unix ns of the first write> last=<… of the last
//! write> lines=<count>` (the app's own write rate, and the time of the
//! last write that a consumer's lag is measured from).
//!
//! Built statically by `cargo xtask bench` and bind-mounted into containers
//! of the busybox test image.

use std::fs::File;
use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd as _;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: spillway-emitter --count N [--rate LINES_PER_S] [--size BYTES] \
                     [--start-file PATH] [--src NAME] [--report-file PATH] [--stderr]";

#[derive(Debug, PartialEq)]
struct Args {
    count: u64,
    /// Lines per second; 0 = as fast as possible.
    rate: u64,
    /// Bytes per line including the newline.
    size: usize,
    /// Wait until this file exists before writing.
    start_file: Option<String>,
    /// Write to stderr instead of stdout.
    stderr: bool,
    /// Written into every line as `src=<name>`.
    src: Option<String>,
    /// Where to write the [`Report`] once done.
    report_file: Option<String>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        count: 0,
        rate: 0,
        size: 64,
        start_file: None,
        stderr: false,
        src: None,
        report_file: None,
    };
    let mut count = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "--stderr" {
            parsed.stderr = true;
            continue;
        }
        if flag == "--start-file" {
            parsed.start_file = Some(args.next().ok_or("--start-file needs a value")?);
            continue;
        }
        if flag == "--src" {
            let src = args.next().ok_or("--src needs a value")?;
            if src.is_empty() || src.contains(char::is_whitespace) {
                return Err("--src must be one word".into());
            }
            parsed.src = Some(src);
            continue;
        }
        if flag == "--report-file" {
            parsed.report_file = Some(args.next().ok_or("--report-file needs a value")?);
            continue;
        }
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--count" => count = Some(value()?),
            "--rate" => parsed.rate = value()?,
            "--size" => parsed.size = usize::try_from(value()?).map_err(|e| e.to_string())?,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    parsed.count = count.ok_or("--count is required")?;
    if parsed.size < 2 {
        return Err("--size must be at least 2 (one byte and the newline)".into());
    }
    Ok(parsed)
}

/// Fills `line` with line `seq`, written at `ts`: the header (with
/// `src=<src>` when given), then `x` padding up to `size` bytes with the
/// newline (longer only if the header itself is).
fn fill(line: &mut Vec<u8>, seq: u64, ts: u64, src: Option<&str>, size: usize) {
    line.clear();
    write!(line, "seq={seq} ts={ts} ").expect("writing to a Vec");
    if let Some(src) = src {
        write!(line, "src={src} ").expect("writing to a Vec");
    }
    if line.len() + 1 < size {
        line.resize(size - 1, b'x');
    }
    line.push(b'\n');
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// When line `seq` is due, from the start.
fn due(seq: u64, rate: u64) -> Duration {
    Duration::from_nanos((u128::from(seq) * 1_000_000_000 / u128::from(rate)) as u64)
}

/// What the emitter measured itself, written to `--report-file`.
#[derive(Debug, PartialEq)]
struct Report {
    /// Unix ns of the first and the last write (0 when nothing was written).
    first: u64,
    last: u64,
    lines: u64,
}

impl Report {
    fn line(&self) -> String {
        format!(
            "first={} last={} lines={}\n",
            self.first, self.last, self.lines
        )
    }
}

fn run(args: &Args) -> std::io::Result<Report> {
    if let Some(path) = &args.start_file {
        while !std::path::Path::new(path).exists() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // The raw descriptor, unbuffered: one write(2) per line. ManuallyDrop:
    // the descriptor is not ours to close.
    let fd = if args.stderr { 2 } else { 1 };
    // SAFETY: fd 1 / 2 are open for the life of the process.
    let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let mut line = Vec::with_capacity(args.size.max(64));
    let start = Instant::now();
    let mut report = Report {
        first: 0,
        last: 0,
        lines: 0,
    };
    let src = args.src.as_deref();
    let mut seq = 0;
    while seq < args.count {
        if args.rate > 0 {
            let due = due(seq, args.rate);
            let elapsed = start.elapsed();
            if elapsed < due {
                std::thread::sleep(due - elapsed);
            }
        }
        // Everything due now goes out before the next sleep.
        let elapsed = start.elapsed();
        loop {
            let ts = unix_nanos();
            fill(&mut line, seq, ts, src, args.size);
            out.write_all(&line)?;
            if seq == 0 {
                report.first = ts;
            }
            report.last = ts;
            seq += 1;
            if seq == args.count || (args.rate > 0 && due(seq, args.rate) > elapsed) {
                break;
            }
        }
    }
    report.lines = seq;
    Ok(report)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("spillway-emitter: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let report = match run(&args) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("spillway-emitter: write failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.report_file {
        // Through a temporary file: a reader never sees half a report.
        let tmp = format!("{path}.tmp");
        if let Err(e) =
            std::fs::write(&tmp, report.line()).and_then(|()| std::fs::rename(&tmp, path))
        {
            eprintln!("spillway-emitter: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        assert_eq!(
            args(&[
                "--count",
                "5",
                "--rate",
                "100",
                "--size",
                "512",
                "--start-file",
                "/go"
            ]),
            Ok(Args {
                count: 5,
                rate: 100,
                size: 512,
                start_file: Some("/go".into()),
                stderr: false,
                src: None,
                report_file: None,
            })
        );
        let a = args(&["--count", "1", "--src", "b-3", "--report-file", "/r"]).unwrap();
        assert_eq!(a.src.as_deref(), Some("b-3"));
        assert_eq!(a.report_file.as_deref(), Some("/r"));
        assert!(args(&["--count", "1", "--src", "a b"]).is_err());
        assert!(args(&["--count", "1", "--src"]).is_err());
        assert!(args(&["--count", "1", "--stderr"]).unwrap().stderr);
        assert!(args(&[]).unwrap_err().contains("--count"));
        assert!(args(&["--count", "x"]).unwrap_err().contains("--count"));
        assert!(
            args(&["--count", "1", "--bogus"])
                .unwrap_err()
                .contains("--bogus")
        );
        assert!(args(&["--count", "1", "--size", "1"]).is_err());
    }

    #[test]
    fn lines_have_the_asked_size_and_parse_back() {
        let mut line = Vec::new();
        for size in [64, 100, 512, 4096] {
            fill(&mut line, 12345, 1_763_700_000_123_456_789, None, size);
            assert_eq!(line.len(), size);
            assert_eq!(line.last(), Some(&b'\n'));
            assert!(line.starts_with(b"seq=12345 ts=1763700000123456789 xx"));
            fill(
                &mut line,
                12345,
                1_763_700_000_123_456_789,
                Some("r-199"),
                size,
            );
            assert_eq!(line.len(), size);
            assert!(line.starts_with(b"seq=12345 ts=1763700000123456789 src=r-199 xx"));
        }
        // Too small for the header: the header and the newline.
        fill(&mut line, 1, 2, None, 4);
        assert_eq!(line, b"seq=1 ts=2 \n");
    }

    #[test]
    fn report_line() {
        let r = Report {
            first: 1,
            last: 2,
            lines: 3,
        };
        assert_eq!(r.line(), "first=1 last=2 lines=3\n");
    }

    #[test]
    fn schedule_is_exact() {
        assert_eq!(due(0, 1000), Duration::ZERO);
        assert_eq!(due(1000, 1000), Duration::from_secs(1));
        assert_eq!(due(3, 2), Duration::from_millis(1500));
    }
}
