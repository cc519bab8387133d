//! A description of the machine, for the report.

use spillway_bench_report::results::Machine;
use spillway_e2e::docker::docker;

pub fn describe(profile: &str) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix(':'))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    let mem_kib: f64 = field(&read("/proc/meminfo"), "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0.0);
    let os_release = read("/etc/os-release").replace('=', ":");
    Machine {
        cpu: field(&cpuinfo, "model name"),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        memory_gib: mem_kib / (1 << 20) as f64,
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
