//! A description of the machine, for the report.

use procfs::{CpuInfo, Current as _, Meminfo};
use spillway_bench_report::results::Machine;
use spillway_e2e::docker::docker;

pub fn describe(profile: &str) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix(':'))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let cpu = CpuInfo::current()
        .ok()
        .and_then(|c| c.model_name(0).map(str::to_owned))
        .unwrap_or_default();
    let mem_bytes = Meminfo::current().map_or(0, |m| m.mem_total);
    let os_release = read("/etc/os-release").replace('=', ":");
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_gib: mem_bytes as f64 / (1u64 << 30) as f64,
        // As written: procfs has it only as a parsed number
        // (`KernelVersion`), without the distribution's suffix.
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        os: field(&os_release, "PRETTY_NAME"),
        docker: docker(&["version", "--format", "{{.Server.Version}}"]).1,
        profile: profile.to_owned(),
        date: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn describes_this_machine() {
        let m = super::describe("dev");
        assert!(m.cores >= 1);
        assert!(m.memory_gib > 0.1);
        assert!(!m.kernel.is_empty());
        assert_eq!(m.profile, "dev");
    }
}
