//! CPU time and memory of every process a run involves, read from `/proc`.
//!
//! A thread samples every 100 ms: the processes the harness started (by
//! pid) and the ones it finds by name (dockerd, containerd, every
//! containerd-shim, every emitter). CPU is `utime + stime` from
//! `/proc/<pid>/stat`, counted from the first sample of the run (0 for a
//! process that starts during the run); a process that exits keeps its last
//! reading, so short-lived shims and emitters are counted too. Memory is the
//! peak of the group's summed `VmRSS` over the samples.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const PERIOD: Duration = Duration::from_millis(100);

/// Which group a process found by its name (`comm`, at most 15 bytes)
/// belongs to.
fn group_of(comm: &str) -> Option<&'static str> {
    match comm {
        "dockerd" => Some("dockerd"),
        "containerd" => Some("containerd"),
        c if c.starts_with("containerd-shim") => Some("containerd-shim"),
        // Run as `/emitter` in the containers.
        "emitter" | "spillway-emitte" => Some("emitters"),
        _ => None,
    }
}

/// Per-group CPU seconds and peak RSS (MiB) over a run.
#[derive(Debug, Default)]
pub struct Usage {
    pub cpu_s: BTreeMap<String, f64>,
    pub rss_mb: BTreeMap<String, f64>,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Usage>,
}

impl Sampler {
    /// Starts sampling `named` (group, pid) and the processes found by name.
    pub fn start(named: Vec<(String, u32)>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || sample(&named, &stop)
        });
        Sampler { stop, thread }
    }

    /// Takes a last sample and returns the run's usage.
    pub fn finish(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

#[derive(Default)]
struct Seen {
    group: String,
    first_ticks: u64,
    last_ticks: u64,
}

fn sample(named: &[(String, u32)], stop: &AtomicBool) -> Usage {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let mut seen: HashMap<u32, Seen> = HashMap::new();
    let mut peak_rss: BTreeMap<String, f64> = BTreeMap::new();
    let mut first = true;
    loop {
        let last = stop.load(Ordering::Relaxed);
        let mut rss: BTreeMap<String, f64> = BTreeMap::new();
        let found = named.iter().cloned().chain(by_name());
        for (group, pid) in found {
            let Some(stat) = Stat::read(pid) else {
                continue;
            };
            let entry = seen.entry(pid).or_insert_with(|| Seen {
                group: group.clone(),
                // Processes there at the first sample count from it; the
                // ones that start later count from zero.
                first_ticks: if first { stat.ticks } else { 0 },
                last_ticks: 0,
            });
            entry.last_ticks = stat.ticks;
            *rss.entry(group).or_default() += stat.rss_pages as f64 * page / (1 << 20) as f64;
        }
        for (group, mib) in rss {
            let peak = peak_rss.entry(group).or_default();
            *peak = peak.max(mib);
        }
        first = false;
        if last {
            break;
        }
        std::thread::sleep(PERIOD);
    }
    let mut usage = Usage {
        rss_mb: peak_rss,
        ..Usage::default()
    };
    for s in seen.values() {
        *usage.cpu_s.entry(s.group.clone()).or_default() +=
            s.last_ticks.saturating_sub(s.first_ticks) as f64 / ticks_per_s;
    }
    usage
}

/// Processes of the groups found by name, from a scan of `/proc`.
fn by_name() -> Vec<(String, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some((group_of(comm.trim_end())?.to_owned(), pid))
    })
    .collect()
}

/// The fields of `/proc/<pid>/stat` and `statm` the sampler needs.
struct Stat {
    /// utime + stime, in clock ticks.
    ticks: u64,
    rss_pages: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        Some(Stat {
            ticks: parse_ticks(&stat)?,
            rss_pages: statm.split_whitespace().nth(1)?.parse().ok()?,
        })
    }
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces: fields are counted after its `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // state is field 3
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        let line = "4242 (containerd-shim (x) y) S 1 4242 1 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 12 0 99 123456 789 18446744073709551615";
        assert_eq!(parse_ticks(line), Some(325));
        assert_eq!(parse_ticks("garbage"), None);
    }

    #[test]
    fn groups_by_command_name() {
        assert_eq!(group_of("dockerd"), Some("dockerd"));
        assert_eq!(group_of("containerd"), Some("containerd"));
        assert_eq!(group_of("containerd-shim"), Some("containerd-shim"));
        assert_eq!(group_of("spillway-emitte"), Some("emitters"));
        assert_eq!(group_of("spillway-router"), None);
        assert_eq!(group_of("bash"), None);
    }

    #[test]
    fn measures_this_process() {
        let sampler = Sampler::start(vec![("me".into(), std::process::id())]);
        // Burn some CPU so that at least one tick is counted.
        let until = std::time::Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let usage = sampler.finish();
        assert!(usage.cpu_s["me"] > 0.0, "{usage:?}");
        assert!(usage.rss_mb["me"] > 1.0, "{usage:?}");
    }
}
