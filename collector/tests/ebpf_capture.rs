//! Runs the real eBPF capture: loads and attaches the programs, writes
//! from child processes and from this process, and checks what arrives.
//!
//! Needs root and the embedded program (`cargo xtask build-ebpf`, then
//! build). Without them the tests print why and pass, except under the
//! strict flag (`cargo xtask test`), where they must run.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spillway_collector::capture::ebpf::kernel::{
    self as ebpf, Capture, DropReason, Handler, InodeKey, Record,
};

/// A [`Record`] with its data copied out of the ring.
#[derive(Debug, Clone)]
struct Rec {
    timestamp: i64,
    key: InodeKey,
    cookie: u32,
    cgroup: u64,
    tgid: u32,
    fd: u32,
    offset: u32,
    len: u32,
    total: u32,
    data: Vec<u8>,
}

struct ToChannel(Sender<Rec>);

impl Handler for ToChannel {
    fn record(&mut self, r: &Record<'_>, _now: Instant) {
        let _ = self.0.send(Rec {
            timestamp: r.timestamp,
            key: r.key,
            cookie: r.cookie,
            cgroup: r.cgroup,
            tgid: r.tgid,
            fd: r.fd,
            offset: r.offset,
            len: r.len,
            total: r.total,
            data: r.data.to_vec(),
        });
    }

    fn tick(&mut self, _now: Instant) -> bool {
        false
    }
}

/// A loaded capture with running loops, or `None` (skip) when this host
/// can't run it and the strict flag is off.
fn start() -> Option<(Capture, Receiver<Rec>)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        spillway_testenv::skip("eBPF capture", "needs root");
        return None;
    }
    if let Err(why) = ebpf::check_support() {
        spillway_testenv::skip("eBPF capture", &why);
        return None;
    }
    let opts = ebpf::Options {
        loops: 2,
        ring_bytes: ebpf::Options::DEFAULT_RING_BYTES,
    };
    let capture = Capture::load(opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(capture.loops(), 2);
    // These tests register pipes of this (host) process: the program
    // looks at host processes' writes only when told to.
    capture.set_host_streams(true).unwrap();
    let (tx, rx) = channel();
    capture
        .spawn_loops(move |_| ToChannel(tx.clone()))
        .expect("spawning the ring loops");
    Some((capture, rx))
}

/// Records that `keep` accepts, received until `done` holds for them (then
/// 50 ms more, to catch anything that should not be there) or `timeout`.
fn collect(
    rx: &Receiver<Rec>,
    keep: impl Fn(&Rec) -> bool,
    done: impl Fn(&[Rec]) -> bool,
    timeout: Duration,
) -> Vec<Rec> {
    let mut deadline = Instant::now() + timeout;
    let mut finishing = false;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(r) if keep(&r) => got.push(r),
            Ok(_) => {}
            Err(_) => break,
        }
        if !finishing && done(&got) {
            finishing = true;
            deadline = Instant::now() + Duration::from_millis(50);
        }
    }
    got
}

fn never(_: &[Rec]) -> bool {
    false
}

/// The concatenated data of `recs` with `cookie`.
fn stream(recs: &[Rec], cookie: u32) -> String {
    let bytes: Vec<u8> = recs
        .iter()
        .filter(|r| r.cookie == cookie)
        .flat_map(|r| r.data.iter().copied())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The concatenated data of `recs` for `key` with `cookie` (one inode's
/// records come from one ring, in order; different inodes' may interleave).
fn stream_of(recs: &[Rec], key: InodeKey, cookie: u32) -> String {
    let mine: Vec<Rec> = recs.iter().filter(|r| r.key == key).cloned().collect();
    stream(&mine, cookie)
}

fn assert_recent(recs: &[Rec]) {
    let now = spillway_proto::now_nanos();
    for r in recs {
        assert!(
            (now - r.timestamp).abs() < 1_000_000_000,
            "timestamp {} is not within 1 s of now ({now}): {r:?}",
            r.timestamp
        );
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

/// Reads `r` to the end on a thread (writers to a full pipe would block).
fn drain(r: OwnedFd) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        std::fs::File::from(r).read_to_end(&mut all).unwrap();
        all
    })
}

fn key_of_fd(pid: u32, fd: i32) -> InodeKey {
    ebpf::inode_of(Path::new(&format!("/proc/{pid}/fd/{fd}"))).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spillway-ebpf-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spawn(cmd: &mut Command, out: OwnedFd, err: OwnedFd) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// A child's stdout and stderr pipes, registered after it started, are
/// captured with their cookies, whichever way it writes to them; its writes
/// to a regular file and a socket are not.
#[test]
fn captures_a_childs_registered_stdout_and_stderr() {
    let Some((capture, rx)) = start() else { return };
    let dir = temp_dir("child");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket_reader = std::thread::spawn(move || {
        let mut got = String::new();
        listener
            .accept()
            .unwrap()
            .0
            .read_to_string(&mut got)
            .unwrap();
        got
    });
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let script = format!(
        "sleep 0.5
echo out
echo err >&2
cat /nonexistent-spillway-test
echo via-dev-stdout > /dev/stdout
echo not-captured-file > {file}
exec 3<>/dev/tcp/127.0.0.1/{port}; echo not-captured-socket >&3; exec 3>&-
echo done",
        file = dir.join("regular").display()
    );
    let mut child = spawn(Command::new("bash").args(["-c", &script]), out_w, err_w);
    let pid = child.id();
    let (out_key, err_key) = (key_of_fd(pid, 1), key_of_fd(pid, 2));
    capture.register(out_key, 11).unwrap();
    capture.register(err_key, 12).unwrap();
    let (out, err) = (drain(out_r), drain(err_r));
    assert!(child.wait().unwrap().success());
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert_eq!(socket_reader.join().unwrap(), "not-captured-socket\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("regular")).unwrap(),
        "not-captured-file\n"
    );

    let recs = collect(
        &rx,
        |_| true,
        |got| stream(got, 11).ends_with("done\n"),
        Duration::from_secs(2),
    );
    assert!(
        !recs
            .iter()
            .any(|r| r.data.windows(12).any(|w| w == b"not-captured")),
        "a write to a regular file or socket was captured"
    );
    let recs: Vec<Rec> = recs
        .into_iter()
        .filter(|r| r.key == out_key || r.key == err_key)
        .collect();
    assert_eq!(stream(&recs, 11), String::from_utf8(out).unwrap());
    assert_eq!(stream(&recs, 11), "out\nvia-dev-stdout\ndone\n");
    assert_eq!(stream(&recs, 12), String::from_utf8(err).unwrap());
    // `echo >&2` is dup2(2, 1) + write(1); cat's error goes through fd 2.
    assert!(stream(&recs, 12).starts_with("err\ncat: /nonexistent-spillway-test"));
    for r in &recs {
        assert!(r.cookie == 11 || r.cookie == 12, "unexpected record {r:?}");
        let key = if r.cookie == 11 { out_key } else { err_key };
        assert_eq!(r.key, key);
        assert_eq!((r.offset, r.len, r.total), (0, r.data.len() as u32, r.len));
    }
    assert!(
        recs.iter()
            .any(|r| r.cookie == 12 && r.fd == 2 && r.tgid != pid)
    );
    let out_rec = recs.iter().find(|r| r.data == b"out\n").unwrap();
    assert_eq!((out_rec.tgid, out_rec.fd), (pid, 1));
    assert_recent(&recs);
    let _ = std::fs::remove_dir_all(dir);
}

/// This process's own writes: writev pieces, 16 KiB records, the 64 KiB
/// cap with its `truncated` count, and no capture of unregistered files
/// and sockets.
#[test]
fn splits_records_and_truncates_at_64_kib() {
    let Some((capture, rx)) = start() else { return };
    let before = capture.kernel_drops();
    let (r, w) = pipe();
    let reader = drain(r);
    let key = key_of_fd(std::process::id(), w.as_raw_fd());
    capture.register(key, 21).unwrap();
    let w_fd = w.as_raw_fd() as u32;
    let mut w = std::fs::File::from(w);

    let parts: [&[u8]; 3] = [b"wr", b"itev-", b"works\n"];
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: iov points at 3 live buffers.
    assert_eq!(unsafe { libc::writev(w.as_raw_fd(), iov.as_ptr(), 3) }, 13);
    let medium: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    w.write_all(&medium).unwrap();
    let big: Vec<u8> = (0..70_000u32).map(|i| b'A' + (i % 26) as u8).collect();
    // One write(2) of 70000 bytes (the reader keeps the pipe from blocking forever).
    // SAFETY: big is a live buffer of big.len() bytes.
    let n = unsafe { libc::write(w.as_raw_fd(), big.as_ptr().cast(), big.len()) };
    assert_eq!(n, 70_000);

    let dir = temp_dir("self");
    std::fs::write(dir.join("regular"), b"self-not-captured-file").unwrap();
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.write_all(b"self-not-captured-socket").unwrap();
    let mut buf = [0u8; 64];
    assert!(b.read(&mut buf).unwrap() > 0);
    drop(w);
    assert_eq!(reader.join().unwrap().len(), 13 + 20_000 + 70_000);

    let captured = |got: &[Rec]| {
        got.iter()
            .filter(|r| r.cookie == 21)
            .map(|r| r.data.len())
            .sum::<usize>()
    };
    let recs = collect(
        &rx,
        |_| true,
        |got| captured(got) == 13 + 20_000 + 64 * 1024,
        Duration::from_secs(2),
    );
    assert!(
        !recs
            .iter()
            .any(|r| r.data.windows(17).any(|w| w == b"self-not-captured")),
        "a write to a regular file or socket was captured"
    );
    let mine: Vec<&Rec> = recs.iter().filter(|r| r.cookie == 21).collect();
    let shape: Vec<(u32, u32, u32)> = mine.iter().map(|r| (r.offset, r.len, r.total)).collect();
    assert_eq!(
        shape,
        [
            (0, 2, 13),
            (2, 5, 13),
            (7, 6, 13),
            (0, 16384, 20000),
            (16384, 3616, 20000),
            (0, 16384, 70000),
            (16384, 16384, 70000),
            (32768, 16384, 70000),
            (49152, 16384, 70000),
        ]
    );
    let data: Vec<u8> = mine.iter().flat_map(|r| r.data.iter().copied()).collect();
    assert_eq!(&data[..13], b"writev-works\n");
    assert_eq!(&data[13..20_013], &medium[..]);
    assert_eq!(&data[20_013..], &big[..64 * 1024]);
    for r in &mine {
        assert_eq!((r.key, r.tgid, r.fd), (key, std::process::id(), w_fd));
    }
    assert_recent(&recs);

    let after = capture.kernel_drops();
    assert!(
        after.get(DropReason::Truncated) > before.get(DropReason::Truncated),
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.lost(), before.lost());
    let _ = std::fs::remove_dir_all(dir);
}

/// A process in a new pid namespace (like a container's) is captured
/// before anything is registered ("unclaimed", cookie 0) through fd 1 and
/// 2; registering switches to the cookie; ignoring stops it; a regular
/// file on fd 1 is never captured.
#[test]
fn captures_unclaimed_container_stdio() {
    let Some((capture, rx)) = start() else { return };
    if !Path::new("/usr/bin/unshare").exists() && !Path::new("/bin/unshare").exists() {
        spillway_testenv::skip("unclaimed capture", "unshare (util-linux) is missing");
        return;
    }
    let dir = temp_dir("ns");
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let out_key = key_of_fd(std::process::id(), out_w.as_raw_fd());
    let err_key = key_of_fd(std::process::id(), err_w.as_raw_fd());
    let script = format!(
        "echo early; cat /nonexistent-spillway-test; echo unclaimed-file > {file}
sleep 1; echo second
sleep 1; echo third",
        file = dir.join("regular").display()
    );
    let mut child = spawn(
        Command::new("unshare").args(["--pid", "--fork", "sh", "-c", &script]),
        out_w,
        err_w,
    );
    let (out, err) = (drain(out_r), drain(err_r));
    let mine = |r: &Rec| r.key == out_key || r.key == err_key;

    let first = collect(
        &rx,
        |_| true,
        |got| {
            stream_of(got, out_key, 0) == "early\n"
                && stream_of(got, err_key, 0).ends_with("directory\n")
        },
        Duration::from_secs(5),
    );
    assert!(
        !first
            .iter()
            .any(|r| r.data.windows(14).any(|w| w == b"unclaimed-file")),
        "a write to a regular file on fd 1 was captured"
    );
    let first: Vec<Rec> = first.into_iter().filter(|r| mine(r)).collect();
    let err_text = "cat: /nonexistent-spillway-test: No such file or directory\n";
    assert_eq!(stream_of(&first, out_key, 0), "early\n", "{first:?}");
    assert_eq!(stream_of(&first, err_key, 0), err_text, "{first:?}");
    let early = first.iter().find(|r| r.data == b"early\n").unwrap();
    assert_eq!((early.key, early.fd, early.cookie), (out_key, 1, 0));
    // Unbuffered stderr: cat writes its message in pieces, through fd 2.
    assert!(
        first
            .iter()
            .any(|r| (r.key, r.fd, r.cookie) == (err_key, 2, 0))
    );
    assert_ne!(early.tgid, std::process::id());
    assert_recent(&first);
    // Stamped with the writer's cgroup (this test's own), whose name the
    // program noted for the unclaimed write.
    assert_eq!(
        capture.cgroup_name(early.cgroup).as_deref(),
        Some(own_cgroup_name().as_str()),
        "cgroup {}",
        early.cgroup
    );

    capture.register(out_key, 31).unwrap();
    let second = collect(
        &rx,
        mine,
        |got| stream(got, 31) == "second\n",
        Duration::from_secs(3),
    );
    assert_eq!(stream(&second, 31), "second\n", "{second:?}");
    assert_eq!(stream(&second, 0), "");

    capture.unregister(out_key);
    capture.ignore(out_key);
    assert!(child.wait().unwrap().success());
    let third = collect(&rx, mine, never, Duration::from_millis(300));
    assert!(third.is_empty(), "ignored inode captured: {third:?}");
    assert_eq!(out.join().unwrap(), b"early\nsecond\nthird\n");
    assert_eq!(err.join().unwrap(), err_text.as_bytes());
    assert_eq!(
        std::fs::read_to_string(dir.join("regular")).unwrap(),
        "unclaimed-file\n"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The last component of this process's cgroup path in the hierarchy the
/// program reads (`/` for the root cgroup).
fn own_cgroup_name() -> String {
    let file = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let hierarchy = ebpf::cgroup::detect(Path::new("/sys/fs/cgroup")).unwrap();
    let path = file
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = match &hierarchy {
                ebpf::cgroup::Hierarchy::Unified => controllers.is_empty(),
                ebpf::cgroup::Hierarchy::Controller(c) => controllers.split(',').any(|x| x == c),
            };
            ours.then(|| path.to_owned())
        })
        .next()
        .unwrap();
    match path.rsplit('/').next() {
        Some("") | None => "/".to_owned(),
        Some(last) => last.to_owned(),
    }
}

/// A host process's writes (initial pid namespace) are rejected before
/// the inode is looked at, unless userspace said a registered stream
/// belongs to one (`--pid host` containers).
#[test]
fn host_writes_only_with_host_streams() {
    let Some((capture, rx)) = start() else { return };
    let (r, w) = pipe();
    let reader = drain(r);
    let key = key_of_fd(std::process::id(), w.as_raw_fd());
    capture.register(key, 51).unwrap();
    let mut w = std::fs::File::from(w);
    capture.set_host_streams(false).unwrap();
    w.write_all(b"not captured\n").unwrap();
    capture.set_host_streams(true).unwrap();
    w.write_all(b"captured\n").unwrap();
    drop(w);
    assert_eq!(reader.join().unwrap(), b"not captured\ncaptured\n");
    let got = collect(
        &rx,
        |r| r.cookie == 51,
        |got| stream(got, 51).contains("captured"),
        Duration::from_secs(3),
    );
    // Positive control first: the same pipe is captured once allowed.
    assert_eq!(stream(&got, 51), "captured\n", "{got:?}");
}

/// Many small writes: all arrive, in order (one ring per inode), and none
/// is lost (the default ring holds the burst), so a loss is a failure even
/// when counted.
#[test]
fn keeps_order_under_load() {
    let Some((capture, rx)) = start() else { return };
    const N: usize = 50_000;
    let before = capture.kernel_drops();
    let (r, w) = pipe();
    let reader = drain(r);
    let key = key_of_fd(std::process::id(), w.as_raw_fd());
    capture.register(key, 41).unwrap();
    let mut w = std::fs::File::from(w);
    for i in 0..N {
        w.write_all(format!("{i:>99}\n").as_bytes()).unwrap();
    }
    drop(w);
    assert_eq!(reader.join().unwrap().len(), N * 100);
    let recs = collect(
        &rx,
        |r| r.cookie == 41,
        |got| got.len() == N,
        Duration::from_secs(10),
    );
    let lost = capture.kernel_drops().lost() - before.lost();
    let seqs: Vec<usize> = recs
        .iter()
        .map(|r| {
            assert_eq!((r.offset, r.len, r.total), (0, 100, 100));
            std::str::from_utf8(&r.data)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "records out of order");
    // The default rings hold this burst whole: nothing may be lost, and
    // what the kernel counts must agree with what arrived.
    assert_eq!((seqs.len(), lost), (N, 0), "records lost");
}

/// The program copies what a write really wrote, read at the syscall's
/// exit: a partial write gives only its bytes, a write that fails
/// (`EAGAIN` on a full non-blocking pipe) gives none, and the retry that
/// then succeeds is captured once.
#[test]
fn captures_what_was_written_not_what_was_asked() {
    let Some((capture, rx)) = start() else { return };
    let (r, w) = pipe();
    // One page of pipe buffer, and writes that must not block.
    // SAFETY: fcntl on an open descriptor.
    unsafe {
        assert!(libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) >= 4096);
        let flags = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
        assert_eq!(
            libc::fcntl(w.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK),
            0
        );
    }
    let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) } as usize;
    let key = key_of_fd(std::process::id(), w.as_raw_fd());
    capture.register(key, 31).unwrap();

    let write = |data: &[u8]| {
        // SAFETY: `data` is a live buffer of data.len() bytes.
        let n = unsafe { libc::write(w.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        (n >= 0).then_some(n as usize)
    };
    let big: Vec<u8> = (0..size * 2).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(write(&big), Some(size), "a partial write fills the pipe");
    assert_eq!(write(b"retried\n"), None, "the pipe is full: EAGAIN");
    let mut pipe_data = vec![0u8; size];
    let mut r = std::fs::File::from(r);
    r.read_exact(&mut pipe_data).unwrap();
    assert_eq!(write(b"retried\n"), Some(8));

    let recs = collect(
        &rx,
        |r| r.cookie == 31,
        |got| got.iter().map(|r| r.data.len()).sum::<usize>() >= size + 8,
        Duration::from_secs(2),
    );
    let captured = stream(&recs, 31);
    assert_eq!(captured.len(), size + 8, "{} records", recs.len());
    assert_eq!(captured.as_bytes()[..size], big[..size]);
    assert_eq!(
        &captured[size..],
        "retried\n",
        "the failed write left nothing"
    );
    assert_eq!(recs.last().unwrap().total, 8);
}
