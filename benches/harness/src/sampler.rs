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

use procfs::process::{Process, Stat};

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
    let ticks_per_s = procfs::ticks_per_second().max(1) as f64;
    let page = procfs::page_size().max(1) as f64;
    let mut seen: HashMap<u32, Seen> = HashMap::new();
    let mut peak_rss: BTreeMap<String, f64> = BTreeMap::new();
    let mut first = true;
    loop {
        let last = stop.load(Ordering::Relaxed);
        let mut rss: BTreeMap<String, f64> = BTreeMap::new();
        let found = named.iter().cloned().chain(by_name());
        for (group, pid) in found {
            let Some(stat) = Reading::of(pid) else {
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
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| {
        let p = p.ok()?;
        let comm = p.stat().ok()?.comm;
        Some((group_of(&comm)?.to_owned(), u32::try_from(p.pid()).ok()?))
    })
    .collect()
}

/// What the sampler needs of `/proc/<pid>/stat` and `statm`.
struct Reading {
    /// utime + stime, in clock ticks.
    ticks: u64,
    rss_pages: u64,
}

impl Reading {
    fn of(pid: u32) -> Option<Reading> {
        let p = Process::new(i32::try_from(pid).ok()?).ok()?;
        Some(Reading {
            ticks: ticks(&p.stat().ok()?),
            rss_pages: p.statm().ok()?.resident,
        })
    }
}

/// utime + stime, in clock ticks.
fn ticks(stat: &Stat) -> u64 {
    stat.utime + stat.stime
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        use procfs::FromRead as _;
        let line = "4242 (containerd-shim (x) y) S 1 4242 1 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 12 0 99 123456 789 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
        let stat = Stat::from_read(line.as_bytes()).unwrap();
        assert_eq!(stat.comm, "containerd-shim (x) y");
        assert_eq!(ticks(&stat), 325);
        assert!(Stat::from_read("garbage".as_bytes()).is_err());
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
