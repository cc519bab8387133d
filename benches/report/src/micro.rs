//! The micro-benchmarks' results, read from criterion's output directory
//! (criterion 0.7: `target/criterion/<group>/<function>[/<param>]/new/`
//! holds `benchmark.json`, the benchmark's ids and throughput, and
//! `estimates.json`, whose `mean.point_estimate` is in nanoseconds).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::format;

/// Work done by one iteration of a benchmark, as declared to criterion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Throughput {
    /// Bytes, reported in binary units (KiB/s).
    Bytes(u64),
    /// Bytes, reported in decimal units (kB/s).
    BytesDecimal(u64),
    Elements(u64),
    Bits(u64),
}

impl Throughput {
    /// Reads criterion's serialization: `{"Bytes": 1024}` (or a list of
    /// them: the first is taken).
    fn from_json(value: &Value) -> Option<Throughput> {
        if let Some(list) = value.as_array() {
            return list.iter().find_map(Throughput::from_json);
        }
        let (kind, n) = value.as_object()?.iter().next()?;
        let n = n.as_u64()?;
        match kind.as_str() {
            "Bytes" => Some(Throughput::Bytes(n)),
            "BytesDecimal" => Some(Throughput::BytesDecimal(n)),
            "Elements" => Some(Throughput::Elements(n)),
            "Bits" => Some(Throughput::Bits(n)),
            _ => None,
        }
    }

    /// The rate at one iteration per `mean_ns`: `1.23 GiB/s`, `4.5M elem/s`.
    pub fn rate(&self, mean_ns: f64) -> Option<String> {
        if mean_ns <= 0.0 || !mean_ns.is_finite() {
            return None;
        }
        let per_s = |n: u64| n as f64 / (mean_ns * 1e-9);
        Some(match *self {
            Throughput::Bytes(n) => format::bytes_per_s(per_s(n), false),
            Throughput::BytesDecimal(n) => format::bytes_per_s(per_s(n), true),
            Throughput::Elements(n) => format!("{} elem/s", format::si(per_s(n))),
            Throughput::Bits(n) => format!("{}bit/s", format::si(per_s(n))),
        })
    }
}

/// One criterion benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct MicroBench {
    pub group: String,
    pub function: Option<String>,
    pub parameter: Option<String>,
    /// Mean time per iteration, ns.
    pub mean_ns: f64,
    pub throughput: Option<Throughput>,
}

/// Everything found under criterion's directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MicroResults {
    /// By group, function and parameter (numbers in numeric order).
    pub benches: Vec<MicroBench>,
    /// `new/` directories whose files could not be read or parsed.
    pub unreadable: Vec<PathBuf>,
}

/// Reads every benchmark under `dir`; `None` when `dir` does not exist
/// (the micro-benchmarks were not run).
pub fn read_criterion_dir(dir: &Path) -> Option<MicroResults> {
    if !dir.is_dir() {
        return None;
    }
    let mut out = MicroResults::default();
    walk(dir, &mut out);
    out.benches.sort_by(|a, b| {
        a.group
            .cmp(&b.group)
            .then_with(|| natural_cmp(a.function.as_deref(), b.function.as_deref()))
            .then_with(|| natural_cmp(a.parameter.as_deref(), b.parameter.as_deref()))
    });
    out.unreadable.sort();
    Some(out)
}

/// Orders numbers numerically and everything else as text.
fn natural_cmp(a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
    match (
        a.and_then(|a| a.parse::<f64>().ok()),
        b.and_then(|b| b.parse::<f64>().ok()),
    ) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => a.cmp(&b),
    }
}

fn walk(dir: &Path, out: &mut MicroResults) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    for sub in subdirs {
        match sub.file_name().and_then(|n| n.to_str()) {
            // Criterion's HTML, and the previous run's figures.
            Some("report" | "base" | "change") => {}
            Some("new") => {
                if sub.join("benchmark.json").is_file() || sub.join("estimates.json").is_file() {
                    match read_bench(&sub) {
                        Some(bench) => out.benches.push(bench),
                        None => out.unreadable.push(sub),
                    }
                }
            }
            _ => walk(&sub, out),
        }
    }
}

/// Reads one `new/` directory.
fn read_bench(new_dir: &Path) -> Option<MicroBench> {
    let read = |name: &str| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(new_dir.join(name)).ok()?).ok()
    };
    let benchmark = read("benchmark.json")?;
    let estimates = read("estimates.json")?;
    let text = |key: &str| {
        benchmark
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Some(MicroBench {
        group: text("group_id")?,
        function: text("function_id"),
        // Criterion calls it `value_str`.
        parameter: text("value_str").or_else(|| text("value_string")),
        mean_ns: estimates.get("mean")?.get("point_estimate")?.as_f64()?,
        throughput: benchmark.get("throughput").and_then(Throughput::from_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_rates() {
        assert_eq!(
            Throughput::Elements(1000).rate(1000.0).as_deref(),
            Some("1G elem/s")
        );
        assert_eq!(
            Throughput::Bytes(1024).rate(1e9).as_deref(),
            Some("1.00 KiB/s")
        );
        assert_eq!(Throughput::Bits(8).rate(1e3).as_deref(), Some("8Mbit/s"));
        assert_eq!(Throughput::Elements(1).rate(0.0), None);
        let json: Value = serde_json::from_str(r#"{"Elements": 64}"#).unwrap();
        assert_eq!(Throughput::from_json(&json), Some(Throughput::Elements(64)));
        let json: Value = serde_json::from_str(r#"[{"BytesDecimal": 5}]"#).unwrap();
        assert_eq!(
            Throughput::from_json(&json),
            Some(Throughput::BytesDecimal(5))
        );
        assert_eq!(Throughput::from_json(&Value::Null), None);
    }

    #[test]
    fn missing_dir_is_none() {
        assert_eq!(
            read_criterion_dir(Path::new("/nonexistent/criterion")),
            None
        );
    }
}
