//! The benchmark report: a markdown file (`docs/benchmarks.md`) and its PNG
//! charts, made from what `spillway-bench run` measured.
//!
//! [`write_report`] is the entry point; [`render_markdown`] makes the text
//! alone (no file is touched), from the numbers of [`crate::analysis`], the
//! charts of [`crate::charts`] and the micro-benchmarks of
//! [`crate::micro`].

use std::ffi::OsString;
use std::path::{Component, Path};

use anyhow::Context as _;

use crate::analysis::{self, Config, DOCKER, EBPF, MAX_LOSS_PCT, NONE};
use crate::charts::{self, ChartKind};
use crate::format::{self, NA};
use crate::micro::{self, MicroResults};
use crate::results::{Machine, Overhead, RunResult};
use crate::scenarios::{self, MAXRATE, SHORTLIVED, Shape};

/// What the report is made from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// Every end-to-end run (`results.json`).
    pub runs: &'a [RunResult],
    /// The overhead on non-container writes (`overhead.json`), if measured.
    pub overhead: Option<&'a Overhead>,
    /// The machine the runs were made on (`machine.json`).
    pub machine: &'a Machine,
    /// Criterion's output directory (`target/criterion`); it need not exist.
    pub criterion_dir: &'a Path,
    /// Hand-written findings (the contents of the notes file), copied
    /// verbatim under "Findings".
    pub notes: Option<&'a str>,
    /// Results measured before (`docs/benchmarks/before/`), shown in
    /// "before" columns next to the comparable new figures.
    pub before: Option<Before<'a>>,
}

/// The results of an earlier invocation (the baseline).
#[derive(Clone, Copy, Debug)]
pub struct Before<'a> {
    pub runs: &'a [RunResult],
    pub overhead: Option<&'a Overhead>,
}

/// A chart as the markdown links it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartLink {
    pub kind: ChartKind,
    pub line_bytes: u32,
    /// Alt text.
    pub title: String,
    /// The PNG's path relative to the markdown file's folder, `/`-separated.
    pub href: String,
}

/// Where the hand-written findings start in the markdown.
pub const FINDINGS_BEGIN: &str = "<!-- BEGIN FINDINGS: copied verbatim from the hand-written notes file; edit that file, not this section -->";
/// Where they end.
pub const FINDINGS_END: &str = "<!-- END FINDINGS -->";

/// Writes `md_path` (markdown) and PNG charts into `charts_dir` (linked
/// from the markdown by a path relative to `md_path`'s folder). Both
/// folders are created if needed; the markdown is replaced atomically.
pub fn write_report(inputs: &Inputs, md_path: &Path, charts_dir: &Path) -> anyhow::Result<()> {
    let md_dir = match md_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let charts = charts::write_charts(&scenarios::paced_runs(inputs.runs), charts_dir)?;
    let links: Vec<ChartLink> = charts
        .into_iter()
        .map(|c| ChartLink {
            kind: c.kind,
            line_bytes: c.line_bytes,
            href: relative_link(md_dir, &c.path),
            title: c.title,
        })
        .collect();
    let micro = micro::read_criterion_dir(inputs.criterion_dir);
    let text = render_markdown(inputs, &links, micro.as_ref());

    std::fs::create_dir_all(md_dir)
        .with_context(|| format!("cannot create {}", md_dir.display()))?;
    let tmp = md_path.with_extension("md.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, md_path).with_context(|| format!("cannot write {}", md_path.display()))
}

/// The path of `to` relative to the folder `from_dir`, `/`-separated, for
/// a markdown link (in `<…>` when it has spaces). Both are made absolute
/// against the current directory first; symbolic links are not resolved.
pub fn relative_link(from_dir: &Path, to: &Path) -> String {
    /// The path made absolute, as names (the root as `/`), `.` and `..`
    /// resolved.
    fn parts(p: &Path) -> Vec<OsString> {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut out: Vec<OsString> = Vec::new();
        for c in abs.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    if out.len() > 1 {
                        out.pop();
                    }
                }
                Component::RootDir => out.push("/".into()),
                Component::Normal(name) => out.push(name.to_owned()),
                Component::Prefix(prefix) => out.push(prefix.as_os_str().to_owned()),
            }
        }
        out
    }
    let (from, to) = (parts(from_dir), parts(to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut link: Vec<String> = vec!["..".to_owned(); from.len() - common];
    link.extend(
        to[common..]
            .iter()
            .map(|c| c.to_string_lossy().into_owned()),
    );
    let link = link.join("/");
    if link.contains(' ') {
        format!("<{link}>")
    } else {
        link
    }
}

/// Appends a line (or an empty line) to a `String`.
macro_rules! w {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Appends a markdown table; columns from `right_from` on are
/// right-aligned (the numbers).
fn table(out: &mut String, header: &[&str], right_from: usize, rows: &[Vec<String>]) {
    w!(out, "| {} |", header.join(" | "));
    let rule: Vec<&str> = (0..header.len())
        .map(|i| if i >= right_from { "--:" } else { "---" })
        .collect();
    w!(out, "| {} |", rule.join(" | "));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| format::cell(c)).collect();
        w!(out, "| {} |", cells.join(" | "));
    }
    w!(out);
}

/// The name a source goes by in the text.
fn source_name(source: &str) -> String {
    charts::source_label(source)
}

/// The whole markdown report.
pub fn render_markdown(
    inputs: &Inputs,
    charts: &[ChartLink],
    micro: Option<&MicroResults>,
) -> String {
    let mut out = String::new();
    // The runs at an offered rate; the scenario suites have their sections.
    let paced = scenarios::paced_runs(inputs.runs);
    let before_paced = inputs.before.map(|b| scenarios::paced_runs(b.runs));
    intro(&mut out, inputs);
    targets_section(&mut out, inputs, &paced, before_paced.as_deref());
    before_after_section(&mut out, inputs);
    maxrate_section(&mut out, inputs.runs);
    shortlived_section(&mut out, inputs.runs);
    findings_section(&mut out, inputs.notes);
    reproduce_section(&mut out);
    machine_section(&mut out, inputs.machine);
    method_section(&mut out);
    held_section(&mut out, &paced, before_paced.as_deref());
    cpu_section(&mut out, &paced);
    charts_section(&mut out, charts);
    runs_section(&mut out, &paced);
    overhead_section(
        &mut out,
        inputs.overhead,
        inputs.before.and_then(|b| b.overhead),
    );
    micro_section(&mut out, inputs.criterion_dir, micro);
    out
}

fn or_unknown(s: &str) -> &str {
    if s.trim().is_empty() { "unknown" } else { s }
}

fn intro(out: &mut String, inputs: &Inputs) {
    let m = inputs.machine;
    w!(out, "# Spillway benchmarks");
    w!(out);
    w!(
        out,
        "<!-- Generated by `cargo xtask bench --report` (crate spillway-bench-report) from target/bench/*.json and \
         target/criterion: edits here are lost at the next run, except through the notes file (see Findings). -->"
    );
    w!(out);
    w!(
        out,
        "End-to-end throughput, loss, latency, CPU and memory of Spillway's container-log collector with its eBPF \
         capture (`{EBPF}`) and with the Docker logs API (`{DOCKER}`, the way logspout reads logs), against no \
         collector at all (`{NONE}`); then the micro-benchmarks of the hot paths."
    );
    w!(out);
    let suites = analysis::suites(inputs.runs);
    let suites = if suites.is_empty() {
        String::new()
    } else {
        format!(" (suites: {})", suites.join(", "))
    };
    let when = if m.date.trim().is_empty() {
        String::new()
    } else {
        format!(" {}", m.date)
    };
    w!(
        out,
        "Measured{when} on {}, {} cores ([machine](#machine)): {} end-to-end runs{suites}.",
        or_unknown(&m.cpu),
        m.cores,
        inputs.runs.len(),
    );
    w!(out);
}

fn targets_section(
    out: &mut String,
    inputs: &Inputs,
    paced: &[RunResult],
    before_paced: Option<&[RunResult]>,
) {
    w!(out, "## Targets");
    w!(out);
    let before =
        before_paced.map(|runs| analysis::targets(runs, inputs.before.and_then(|b| b.overhead)));
    let rows: Vec<Vec<String>> = analysis::targets(paced, inputs.overhead)
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let mut row = vec![
                (i + 1).to_string(),
                t.target.to_owned(),
                t.measured,
                t.verdict.to_string(),
            ];
            if let Some(before) = &before {
                row.push(before.get(i).map_or_else(
                    || NA.to_owned(),
                    |b| format!("{} ({})", b.measured, b.verdict),
                ));
            }
            row
        })
        .collect();
    let mut header = vec!["#", "Target", "Measured", "Result"];
    if before.is_some() {
        header.push("Before (baseline)");
    }
    table(out, &header, 5, &rows);
    if before.is_some() {
        w!(
            out,
            "**Before (baseline)**: the same targets from the results in `docs/benchmarks/before/`, measured \
             before the capture rework."
        );
        w!(out);
    }
    w!(
        out,
        "Targets 2, 3 and 5 use the eBPF runs of 100 B lines at that rate (the `target` suite), or of any line size \
         when there are none. Target 1 is checked in every configuration where both eBPF and Docker ran, CPU per \
         line at the highest rate both held; see [the highest rates held](#highest-rate-held-at--01--loss) and \
         [CPU per line](#cpu-per-line)."
    );
    w!(out);
}

fn before_after_section(out: &mut String, inputs: &Inputs) {
    w!(out, "## Before and after the capture rework");
    w!(out);
    w!(
        out,
        "**Before**: the figures of issue 11 (\"the benchmark says it\"), measured on this 2-core VM before the \
         capture rework; they are not recomputed from any file. **Now**: the same figures from this report's runs \
         (the `{MAXRATE}` and `{SHORTLIVED}` suites below, the target points, the sweep and the overhead). Every \
         source of a row ran in the same invocation, one after the other. {NA}: not measured."
    );
    w!(out);
    let rows: Vec<Vec<String>> = scenarios::before_after_rows(inputs.runs, inputs.overhead)
        .into_iter()
        .map(Vec::from)
        .collect();
    table(
        out,
        &[
            "Figure",
            "Before: no collector",
            "Before: Docker API",
            "Before: eBPF",
            "Now: no collector",
            "Now: Docker API",
            "Now: eBPF",
        ],
        1,
        &rows,
    );
}

/// The sources of scenario runs as table headings.
fn source_headings(first: &str, runs: &[&RunResult]) -> Vec<String> {
    let mut header = vec![first.to_owned()];
    header.extend(runs.iter().map(|r| source_name(&r.source)));
    header
}

fn maxrate_section(out: &mut String, runs: &[RunResult]) {
    w!(out, "## Maximum write rate");
    w!(out);
    let shapes = scenarios::shapes(runs, MAXRATE);
    if shapes.is_empty() {
        w!(out, "Not run (suite `{MAXRATE}`).");
        w!(out);
        return;
    }
    w!(
        out,
        "Each emitter writes its lines as fast as it can (one `write(2)` per line, no pacing), every source in the \
         same invocation. **App write rate**: the lines/s the emitters achieved by their own clocks, from the first \
         write of any to the last write of any; **vs no collector**: over the same figure without a collector: how \
         much capturing slows the application. **Lag after the last write**: when the consumer got its last line \
         minus when the last line was written (negative: the last lines were lost). The run waits for a source \
         that lags until nothing new arrived for a few seconds (bounded), so lag is measured rather than counted as \
         loss; **wait ended** says how: every line arrived (`all`), nothing new for the idle time (`idle`), or the \
         bound (`limit`). **Drops by stage**: Spillway's own drop counters. Collector CPU per line divides by the \
         distinct lines delivered."
    );
    w!(out);
    for shape in shapes {
        let of = scenarios::shape_runs(runs, MAXRATE, shape);
        let alone = of.iter().copied().find(|r| r.source == NONE);
        w!(out, "### {}", capitalised(&shape.describe()));
        w!(out);
        let header = source_headings("", &of);
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let row = |label: &str, f: &dyn Fn(&RunResult) -> String| {
            let mut row = vec![label.to_owned()];
            row.extend(of.iter().map(|r| f(r)));
            row
        };
        let collector = |r: &RunResult| r.source != NONE;
        let na = || NA.to_owned();
        let body = vec![
            row("App write rate, lines/s", &|r| format::opt_rate(r.app_lps)),
            row("vs no collector", &|r| {
                scenarios::write_ratio(r, alone).map_or_else(na, |x| format!("{x:.2}×"))
            }),
            row("Lines delivered / sent", &|r| {
                if collector(r) {
                    format!("{} / {}", r.delivered, r.sent)
                } else {
                    format!("{NA} / {}", r.sent)
                }
            }),
            row("Lines lost (%)", &|r| {
                if collector(r) {
                    format!("{} ({})", r.lost, format::opt_pct(r.loss_pct))
                } else {
                    na()
                }
            }),
            row("Drops by stage", &|r| {
                if collector(r) {
                    scenarios::drops(r)
                } else {
                    na()
                }
            }),
            row("Duplicates", &|r| {
                if collector(r) {
                    r.dup.to_string()
                } else {
                    na()
                }
            }),
            row("Wrong or missing tags", &|r| {
                r.wrong_tags.map_or_else(na, |w| w.to_string())
            }),
            row("Lag after the last write", &|r| {
                r.lag_ms.map_or_else(na, |ms| format::nanos(ms * 1e6))
            }),
            row("Wait ended", &|r| r.drain_end.clone().unwrap_or_else(na)),
            row(
                "p50 / p99 write → consumer, ms",
                &|r| match (r.p50_ms, r.p99_ms) {
                    (None, None) => na(),
                    (p50, p99) => format!("{} / {}", format::opt_ms(p50), format::opt_ms(p99)),
                },
            ),
            row("Collector CPU per line, µs", &|r| {
                format::opt_sig3(scenarios::collector_us_per_line(r))
            }),
            row("Collector peak RSS, MiB", &|r| {
                analysis::collector_rss_mib(r).map_or_else(na, |m| format!("{m:.1}"))
            }),
            row("Total CPU, s", &|r| {
                if r.cpu_s.is_empty() {
                    na()
                } else {
                    format!("{:.2}", r.cpu_total())
                }
            }),
        ];
        table(out, &header, 1, &body);
        let groups = scenarios::cpu_groups(&of);
        if !groups.is_empty() {
            w!(out, "CPU seconds by process over the run:");
            w!(out);
            let header = source_headings("Process", &of);
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let body: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    row(g, &|r| {
                        r.cpu_s.get(g).map_or_else(na, |s| format!("{s:.2}"))
                    })
                })
                .collect();
            table(out, &header, 1, &body);
        }
    }
}

fn shortlived_section(out: &mut String, runs: &[RunResult]) {
    w!(out, "## Short-lived containers");
    w!(out);
    let shapes = scenarios::shapes(runs, SHORTLIVED);
    if shapes.is_empty() {
        w!(out, "Not run (suite `{SHORTLIVED}`).");
        w!(out);
        return;
    }
    w!(
        out,
        "The containers are created first, then all started at once (`docker start` of a share of them from each \
         of 10 threads); each prints its lines of 100 B as soon as it starts, as fast as it can, and exits. A \
         collector must notice each container as it starts and attach to it before it is gone. **Right tags**: \
         delivered lines whose envelope names the container that wrote it (each line says which emitter wrote it): \
         source id and tag `container_name` its name, tag `container_id` its id; a line with a missing or wrong \
         one counts as wrong. **Before**: the issue's figure (measured before the capture rework), for 200 \
         containers × 10 lines."
    );
    w!(out);
    let mut body = Vec::new();
    for shape in shapes {
        for r in scenarios::shape_runs(runs, SHORTLIVED, shape) {
            let collector = r.source != NONE;
            let before = if shape
                == (Shape {
                    containers: 200,
                    lines_per_container: 10,
                    line_bytes: 100,
                }) {
                scenarios::ISSUE_BEFORE[7]
            } else {
                scenarios::BeforeFigure {
                    figure: "",
                    none: NA,
                    docker: NA,
                    ebpf: NA,
                }
            };
            let na = || NA.to_owned();
            body.push(vec![
                source_name(&r.source),
                r.containers.to_string(),
                shape.lines_per_container.to_string(),
                r.sent.to_string(),
                if collector {
                    r.delivered.to_string()
                } else {
                    na()
                },
                scenarios::right_tags(r).map_or_else(na, |n| n.to_string()),
                r.wrong_tags.map_or_else(na, |n| n.to_string()),
                if collector { r.lost.to_string() } else { na() },
                if collector { r.dup.to_string() } else { na() },
                r.lag_ms.map_or_else(na, |ms| format::nanos(ms * 1e6)),
                r.drain_end.clone().unwrap_or_else(na),
                match r.source.as_str() {
                    NONE => before.none,
                    DOCKER => before.docker,
                    EBPF => before.ebpf,
                    _ => NA,
                }
                .to_owned(),
            ]);
        }
    }
    table(
        out,
        &[
            "Source",
            "Containers",
            "Lines each",
            "Sent",
            "Delivered",
            "Right tags",
            "Wrong or missing tags",
            "Lost",
            "Dup",
            "Lag after the last write",
            "Wait ended",
            "Before: captured",
        ],
        1,
        &body,
    );
}

fn findings_section(out: &mut String, notes: Option<&str>) {
    w!(out, "## Findings");
    w!(out);
    w!(out, "{FINDINGS_BEGIN}");
    match notes.map(str::trim_end).filter(|n| !n.trim().is_empty()) {
        Some(notes) => w!(out, "{notes}"),
        None => w!(
            out,
            "_No findings written yet: write them in the notes file given to `spillway-bench report --notes` and \
             regenerate the report._"
        ),
    }
    w!(out, "{FINDINGS_END}");
    w!(out);
}

fn reproduce_section(out: &mut String) {
    w!(out, "## How to reproduce");
    w!(out);
    w!(out, "```sh");
    w!(out, "cargo xtask bench --report");
    w!(out, "```");
    w!(out);
    w!(
        out,
        "This prepares the host (dockerd, the busybox image, the eBPF program; the eBPF source needs \
         root), builds the binaries (release) and the static emitter, runs the criterion micro-benchmarks (into \
         `target/criterion/`) and the end-to-end plan (the suites `maxrate`, `shortlived`, `targets`, `sweep` and \
         `overhead`, in that order) into `target/bench/` (`results.json`, `overhead.json`, `machine.json`), then \
         writes this file and its charts from those files, with the baseline in `docs/benchmarks/before/` as the \
         \"before\" columns. With `--no-run` it only writes the report from the last results. \
         `cargo xtask bench --quick` is the CI smoke test (suite `quick`, plus one container × 20,000 lines at \
         full speed and 20 short-lived containers × 10 lines): a few short runs whose counts must add up \
         (delivered + missing = sent, no duplicates, every line with its container's tags), not a measurement of \
         speed."
    );
    w!(out);
    w!(
        out,
        "`spillway-bench run` takes the plan's options after `--`, e.g. `cargo xtask bench --report -- --suites \
         maxrate,shortlived --maxrate-lines 300000 --maxrate-containers 1,10 --shortlived-containers 200`; \
         `--no-sweep`, `--no-targets`, `--no-overhead`, `--no-maxrate`, `--no-shortlived` drop a suite; \
         `--lag-idle` and `--lag-limit` (seconds) bound the wait for a lagging source."
    );
    w!(out);
}

fn machine_section(out: &mut String, m: &Machine) {
    w!(out, "## Machine");
    w!(out);
    let rows = vec![
        vec!["CPU".to_owned(), or_unknown(&m.cpu).to_owned()],
        vec![
            "Cores".to_owned(),
            if m.cores == 0 {
                "unknown".to_owned()
            } else {
                m.cores.to_string()
            },
        ],
        vec!["Memory".to_owned(), format!("{:.1} GiB", m.memory_gib)],
        vec!["OS".to_owned(), or_unknown(&m.os).to_owned()],
        vec!["Kernel".to_owned(), or_unknown(&m.kernel).to_owned()],
        vec!["Docker".to_owned(), or_unknown(&m.docker).to_owned()],
        vec![
            "Build profile".to_owned(),
            or_unknown(&m.profile).to_owned(),
        ],
        vec!["Date".to_owned(), or_unknown(&m.date).to_owned()],
    ];
    table(out, &["", ""], 2, &rows);
}

fn method_section(out: &mut String) {
    w!(out, "## What is measured and how");
    w!(out);
    w!(
        out,
        "**Runs.** Each run starts `containers` emitter containers that together write the offered rate of lines of \
         `line_bytes` bytes (newline included) to stdout for a fixed time; each line carries its sequence number and \
         the time it was written. The collector (source `{EBPF}` or `{DOCKER}`) sends them through the router and \
         the RLP to a consumer in the harness, which counts them. Source `{NONE}` runs the same emitters without a \
         collector: the cost of the emitters, dockerd and containerd alone. The `sweep` suite climbs the offered \
         rate (10k, 25k, 50k, 100k, 200k… lines/s) for each line size and container count until every collector \
         loses more than {MAX_LOSS_PCT} %; the `target` suite measures the targets' points. The `{MAXRATE}` suite \
         writes a fixed number of lines as fast as the emitters can, and the `{SHORTLIVED}` suite starts many \
         containers together that print a few lines and exit (see their sections); they are not part of the \
         tables and charts of rates below. Each emitter also writes `src=<its number>` into its lines, so every \
         delivered line is checked against the container that wrote it (source id and tags)."
    );
    w!(out);
    w!(
        out,
        "**Loss** = lines the emitters wrote (`sent`) − distinct lines delivered, in % of `sent`. Duplicates \
         (`dup`, extra copies of a line already delivered) do not make up for lost lines. A run **holds** its rate \
         when it loses at most {MAX_LOSS_PCT} %, the emitters managed at least 90 % of the offered rate (else the \
         host, or Docker's log pipe, could not take the rate and the run says nothing about the collector), and \
         the collector kept up: it delivered at least 90 % of the emitted lines/s (the Docker-API source can \
         otherwise lose nothing in a 5 s run by falling seconds behind the log file, which it could not \
         sustain)."
    );
    w!(out);
    w!(
        out,
        "**Delivered lines/s** = distinct lines delivered over the time from the first write to the last delivery. \
         **Emitted lines/s** = lines written over the time the emitters took."
    );
    w!(out);
    w!(
        out,
        "**Latency** = the consumer's receive time − the emitter's timestamp written in the line (one host, one \
         clock): the whole path from the write through dockerd or the kernel, the collector, the router and the RLP. \
         p50, p99 and max are over every delivered line."
    );
    w!(out);
    w!(
        out,
        "**CPU** = `utime + stime` from `/proc/<pid>/stat` over the run, per process group (collector, router, \
         rlp, dockerd, containerd, containerd-shim, emitters, consumer), sampled every 100 ms; a process that exits \
         keeps its last reading. Total CPU is the sum of the groups. CPU per line divides by distinct delivered \
         lines: CPU seconds per million lines, the same number as CPU ms per 1,000 lines."
    );
    w!(out);
    w!(
        out,
        "**Memory** = the peak resident set size (VmRSS) of a process group over the run, sampled every 100 ms."
    );
    w!(out);
}

fn held_section(out: &mut String, runs: &[RunResult], before: Option<&[RunResult]>) {
    w!(out, "## Highest rate held at ≤ 0.1 % loss");
    w!(out);
    let rows = analysis::held_table(runs, MAX_LOSS_PCT);
    let before_rows = before.map(|b| analysis::held_table(b, MAX_LOSS_PCT));
    if rows.is_empty() {
        w!(out, "No collector runs.");
        w!(out);
        return;
    }
    w!(
        out,
        "The highest offered rate (lines/s) at which a run of the source held. \"≥\": every run held, so the limit \
         is higher (the sweep stopped for another reason: the emitters alone could not write more, or the rates ran \
         out). \"none (from X)\": no run held, down to the lowest rate tried. {NA}: not run."
    );
    w!(out);
    let sources = analysis::collector_sources(runs);
    let mut header: Vec<String> = vec!["Line size".into(), "Containers".into()];
    header.extend(sources.iter().map(|s| source_name(s)));
    header.push("eBPF / Docker".into());
    if before_rows.is_some() {
        header.extend(sources.iter().map(|s| format!("{} before", source_name(s))));
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                format!("{} B", row.config.line_bytes),
                row.config.containers.to_string(),
            ];
            cells.extend(sources.iter().map(|s| {
                row.by_source
                    .get(s)
                    .map_or_else(|| NA.to_owned(), |h| h.to_string())
            }));
            cells.push(
                row.ebpf_over_docker
                    .map_or_else(|| NA.to_owned(), |r| r.to_string()),
            );
            if let Some(before_rows) = &before_rows {
                let old = before_rows.iter().find(|b| b.config == row.config);
                cells.extend(sources.iter().map(|s| {
                    old.and_then(|b| b.by_source.get(s))
                        .map_or_else(|| NA.to_owned(), |h| h.to_string())
                }));
            }
            cells
        })
        .collect();
    table(out, &header, 1, &body);
    if before_rows.is_some() {
        w!(
            out,
            "**before**: the baseline in `docs/benchmarks/before/`, measured before the capture rework \
             ({NA}: that configuration was not run then)."
        );
        w!(out);
    }
}

fn cpu_section(out: &mut String, runs: &[RunResult]) {
    w!(out, "## CPU per line");
    w!(out);
    let rows = analysis::cpu_table(runs);
    if rows.is_empty() {
        w!(out, "No collector runs.");
        w!(out);
        return;
    }
    w!(
        out,
        "**Collector**: the collector process's CPU seconds per million delivered lines. **Added**: (total CPU of \
         the run − total CPU of the `{NONE}` run with the same line size, containers and offered rate) per million \
         delivered lines: what collecting costs the whole host, including what the Docker logs API makes dockerd \
         do, the router, the RLP and the consumer ({NA} without such a `{NONE}` run). Both in CPU seconds per \
         million lines (= CPU ms per 1,000 lines). **/ eBPF**: the source's figure over eBPF's at the same point."
    );
    w!(out);
    for source in analysis::collector_sources(runs)
        .iter()
        .filter(|s| *s != EBPF)
    {
        let of = |f: fn(&analysis::CpuRow) -> Option<f64>| {
            let values: Vec<f64> = rows
                .iter()
                .filter(|r| r.run.source == *source)
                .filter_map(f)
                .collect();
            (analysis::median(values.iter().copied()), values.len())
        };
        let (collector, n_collector) = of(|r| r.vs_ebpf_collector);
        let (added, n_added) = of(|r| r.vs_ebpf_added);
        if collector.is_some() || added.is_some() {
            w!(
                out,
                "Median {} / eBPF: collector CPU per line {} (over {n_collector} points), added CPU per line {} (over \
                 {n_added} points).",
                source_name(source),
                collector.map_or_else(|| NA.to_owned(), format::ratio),
                added.map_or_else(|| NA.to_owned(), format::ratio),
            );
            w!(out);
        }
    }
    // One line per configuration, rate (and suite), a pair of columns per
    // source, then the ratios to eBPF.
    let sources = analysis::collector_sources(runs);
    let with_suite = analysis::suites(rows.iter().map(|r| r.run)).len() > 1;
    let mut keys: Vec<(Config, f64, &str)> = Vec::new();
    for r in &rows {
        let key = (Config::of(r.run), r.run.offered_lps, r.run.suite.as_str());
        if !keys
            .iter()
            .any(|k| k.0 == key.0 && analysis::same_rate(k.1, key.1) && k.2 == key.2)
        {
            keys.push(key);
        }
    }
    let mut header: Vec<String> = vec!["Line size".into(), "Containers".into()];
    if with_suite {
        header.push("Suite".into());
    }
    let right_from = header.len();
    header.push("Offered lines/s".into());
    for s in &sources {
        header.push(format!("{} collector", source_name(s)));
        header.push(format!("{} added", source_name(s)));
    }
    let others: Vec<&String> = sources.iter().filter(|s| *s != EBPF).collect();
    let with_ratios = sources.iter().any(|s| s == EBPF);
    if with_ratios {
        for s in &others {
            header.push(format!("{} / eBPF collector", source_name(s)));
            header.push(format!("{} / eBPF added", source_name(s)));
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut lossy = false;
    let body: Vec<Vec<String>> = keys
        .iter()
        .map(|&(config, rate, suite)| {
            let row_of = |source: &str| {
                rows.iter().find(|r| {
                    r.run.source == source
                        && Config::of(r.run) == config
                        && analysis::same_rate(r.run.offered_lps, rate)
                        && r.run.suite == suite
                })
            };
            let mut cells = vec![
                format!("{} B", config.line_bytes),
                config.containers.to_string(),
            ];
            if with_suite {
                cells.push(suite.to_owned());
            }
            cells.push(format::rate(rate));
            for s in &sources {
                let row = row_of(s);
                for value in [
                    row.and_then(|r| r.collector_per_mline),
                    row.and_then(|r| r.added_per_mline),
                ] {
                    let mut cell = format::opt_sig3(value);
                    if value.is_some() && row.is_some_and(|r| !r.run.holds(MAX_LOSS_PCT)) {
                        cell.push_str(" †");
                        lossy = true;
                    }
                    cells.push(cell);
                }
            }
            if with_ratios {
                for s in &others {
                    let row = row_of(s);
                    for value in [
                        row.and_then(|r| r.vs_ebpf_collector),
                        row.and_then(|r| r.vs_ebpf_added),
                    ] {
                        cells.push(value.map_or_else(|| NA.to_owned(), format::ratio));
                    }
                }
            }
            cells
        })
        .collect();
    table(out, &header, right_from, &body);
    if lossy {
        w!(
            out,
            "†: the run did not hold its rate (it lost more than {MAX_LOSS_PCT} %, the emitters fell short, \
             or the collector fell behind)."
        );
        w!(out);
    }
}

fn charts_section(out: &mut String, charts: &[ChartLink]) {
    w!(out, "## Charts");
    w!(out);
    if charts.is_empty() {
        w!(out, "No charts: no collector runs.");
        w!(out);
        return;
    }
    let mut sizes: Vec<u32> = charts.iter().map(|c| c.line_bytes).collect();
    sizes.dedup();
    for size in sizes {
        w!(out, "### {size} B lines");
        w!(out);
        for c in charts.iter().filter(|c| c.line_bytes == size) {
            w!(out, "![{}]({})", c.title.replace(['[', ']'], ""), c.href);
            w!(out);
        }
    }
}

fn runs_section(out: &mut String, runs: &[RunResult]) {
    w!(out, "## Runs");
    w!(out);
    if runs.is_empty() {
        w!(out, "No end-to-end runs.");
        w!(out);
        return;
    }
    w!(
        out,
        "Every run, by line size and container count. Rates in lines/s; CPU in seconds over the run; collector CPU \
         per 1,000 delivered lines in ms; RSS is the collector's peak. Held: ✓ when the run held its rate (see \
         above)."
    );
    w!(out);
    let sources = analysis::sources(runs);
    for config in analysis::configs(runs) {
        let of_config: Vec<&RunResult> = sources
            .iter()
            .flat_map(|s| analysis::runs_of(runs, s, config))
            .collect();
        let suites = analysis::suites(of_config.iter().copied());
        let with_suite = suites.len() > 1;
        w!(
            out,
            "### {} ({})",
            capitalised(&config.describe()),
            suites.join(", ")
        );
        w!(out);
        let mut header = vec!["Source"];
        if with_suite {
            header.push("Suite");
        }
        let right_from = header.len();
        header.extend([
            "Offered",
            "Emitted",
            "Delivered",
            "Loss %",
            "Dup",
            "p50 ms",
            "p99 ms",
            "max ms",
            "Collector CPU s",
            "Total CPU s",
            "Collector CPU ms / 1k lines",
            "Collector RSS MiB",
            "Held",
        ]);
        let body: Vec<Vec<String>> = of_config.iter().map(|r| run_row(r, with_suite)).collect();
        table(out, &header, right_from, &body);
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// One line of a [`runs_section`] table.
fn run_row(r: &RunResult, with_suite: bool) -> Vec<String> {
    let mut cells = vec![source_name(&r.source)];
    if with_suite {
        cells.push(r.suite.clone());
    }
    let collector = r.source != NONE;
    cells.extend([
        format::rate(r.offered_lps),
        format::rate(r.emitted_lps),
        format::opt_rate(r.delivered_lps),
        format::opt_pct(r.loss_pct),
        if collector {
            r.dup.to_string()
        } else {
            NA.to_owned()
        },
        format::opt_ms(r.p50_ms),
        format::opt_ms(r.p99_ms),
        format::opt_ms(r.max_ms),
        analysis::collector_cpu_s(r).map_or_else(|| NA.to_owned(), |c| format!("{c:.2}")),
        if r.cpu_s.is_empty() {
            NA.to_owned()
        } else {
            format!("{:.2}", r.cpu_total())
        },
        format::opt_sig3(analysis::collector_cpu_per_mline(r)),
        analysis::collector_rss_mib(r).map_or_else(|| NA.to_owned(), |m| format!("{m:.1}")),
        match (collector, r.holds(MAX_LOSS_PCT)) {
            (false, _) => NA.to_owned(),
            (true, true) => "✓".to_owned(),
            (true, false) => "✗".to_owned(),
        },
    ]);
    cells
}

fn overhead_section(out: &mut String, overhead: Option<&Overhead>, before: Option<&Overhead>) {
    w!(out, "## Overhead on non-container writes");
    w!(out);
    let Some(o) = overhead else {
        w!(
            out,
            "Not measured (no `overhead.json`: the measurement needs a collector source, and root for eBPF)."
        );
        w!(out);
        return;
    };
    let ebpf = !o.with_ns.is_empty();
    let docker = !o.with_docker_ns.is_empty();
    let floor = !o.with_floor_ns.is_empty();
    w!(
        out,
        "A host process (not in a container) writes {} messages of {} B to a pipe, without a collector{}, with the \
         collector's eBPF capture attached{}: the collector's program runs at every syscall exit of the machine, and \
         for a write that is not a container's it only reads the writer's pid-namespace level{}. Repetitions \
         alternate (without, with, …) so that drift of the machine hits every side alike; the medians are compared.",
        o.writes,
        o.write_bytes,
        if floor {
            ", with a program that does nothing attached to the same raw tracepoint (`sys_exit`: the floor that \
             any syscall hook pays on this kernel)"
        } else {
            ""
        },
        if docker {
            " and with the collector reading the Docker logs API"
        } else {
            ""
        },
        if docker {
            " (the Docker-API source hooks no write: it is the control)"
        } else {
            ""
        },
    );
    w!(out);
    let reps = o
        .without_ns
        .len()
        .max(o.with_ns.len())
        .max(o.with_docker_ns.len())
        .max(o.with_floor_ns.len());
    let ns = |v: Option<&f64>| v.map_or_else(|| NA.to_owned(), |v| format!("{v:.1}"));
    let mut header = vec!["Repetition", "Without, ns per write"];
    if floor {
        header.push("No-op hook, ns per write");
    }
    if ebpf {
        header.push("With eBPF, ns per write");
    }
    if docker {
        header.push("With Docker API, ns per write");
    }
    let row = |label: String,
               without: Option<&f64>,
               f: Option<&f64>,
               e: Option<&f64>,
               d: Option<&f64>| {
        let mut row = vec![label, ns(without)];
        if floor {
            row.push(ns(f));
        }
        if ebpf {
            row.push(ns(e));
        }
        if docker {
            row.push(ns(d));
        }
        row
    };
    let mut body: Vec<Vec<String>> = (0..reps)
        .map(|i| {
            row(
                (i + 1).to_string(),
                o.without_ns.get(i),
                o.with_floor_ns.get(i),
                o.with_ns.get(i),
                o.with_docker_ns.get(i),
            )
        })
        .collect();
    let median = |v: &[f64]| analysis::median(v.iter().copied());
    body.push(row(
        "median".to_owned(),
        median(&o.without_ns).as_ref(),
        median(&o.with_floor_ns).as_ref(),
        median(&o.with_ns).as_ref(),
        median(&o.with_docker_ns).as_ref(),
    ));
    let pct = |p: Option<f64>| p.map_or_else(|| NA.to_owned(), |p| format!("{p:+.1} %"));
    body.push({
        let mut r = vec!["overhead".to_owned(), NA.to_owned()];
        if floor {
            r.push(pct(o.floor_overhead_pct));
        }
        if ebpf {
            r.push(pct(Some(o.overhead_pct)));
        }
        if docker {
            r.push(pct(o.docker_overhead_pct));
        }
        r
    });
    if let Some(b) = before {
        let mut r = vec![
            "before (baseline), median".to_owned(),
            ns(median(&b.without_ns).as_ref()),
        ];
        if floor {
            r.push(match median(&b.with_floor_ns) {
                Some(m) => format!("{m:.1} ({})", pct(b.floor_overhead_pct)),
                None => NA.to_owned(),
            });
        }
        if ebpf {
            r.push(match median(&b.with_ns) {
                Some(m) if !b.with_ns.is_empty() => {
                    format!("{m:.1} ({:+.1} %)", b.overhead_pct)
                }
                _ => NA.to_owned(),
            });
        }
        if docker {
            r.push(match median(&b.with_docker_ns) {
                Some(m) => format!("{m:.1} ({})", pct(b.docker_overhead_pct)),
                None => NA.to_owned(),
            });
        }
        body.push(r);
    }
    table(out, &header, 1, &body);
    if ebpf {
        w!(
            out,
            "Overhead with eBPF: **{:+.1} %** (target: under {} %){}.",
            o.overhead_pct,
            analysis::TARGET_MAX_OVERHEAD_PCT,
            match o.floor_overhead_pct {
                Some(f) => format!(
                    "; a program that does nothing at the same hook costs {f:+.1} % by itself"
                ),
                None => String::new(),
            }
        );
    } else {
        w!(out, "The eBPF source was not measured (it needs root).");
    }
    if before.is_some() {
        w!(out);
        w!(
            out,
            "The baseline row is `docs/benchmarks/before/overhead.json`, measured before the capture rework (the \
             issue gave 319 ns alone, Docker API +2 %, eBPF 1116 ns, +250 %; see [before and \
             after](#before-and-after-the-capture-rework))."
        );
    }
    w!(out);
}

fn micro_section(out: &mut String, dir: &Path, micro: Option<&MicroResults>) {
    w!(out, "## Micro-benchmarks");
    w!(out);
    let Some(micro) = micro else {
        w!(
            out,
            "The micro-benchmarks were not run (no `{}`; `cargo bench -p spillway-microbench` makes it).",
            dir.display()
        );
        w!(out);
        return;
    };
    if micro.benches.is_empty() {
        w!(out, "No criterion results in `{}`.", dir.display());
        w!(out);
    } else {
        w!(
            out,
            "Criterion's mean time per iteration, and the throughput it makes when the benchmark declares one."
        );
        w!(out);
        let body: Vec<Vec<String>> = micro
            .benches
            .iter()
            .map(|b| {
                vec![
                    b.group.clone(),
                    b.function.clone().unwrap_or_else(|| NA.to_owned()),
                    b.parameter.clone().unwrap_or_else(|| NA.to_owned()),
                    format::nanos(b.mean_ns),
                    b.throughput
                        .and_then(|t| t.rate(b.mean_ns))
                        .unwrap_or_else(|| NA.to_owned()),
                ]
            })
            .collect();
        table(
            out,
            &["Group", "Function", "Parameter", "Mean", "Throughput"],
            3,
            &body,
        );
    }
    if !micro.unreadable.is_empty() {
        let list: Vec<String> = micro
            .unreadable
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect();
        w!(out, "Could not read: {}.", list.join(", "));
        w!(out);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::fixtures;

    /// A fresh folder under the system's temporary folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "spillway-bench-report-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn machine() -> Machine {
        Machine {
            cpu: "Test CPU @ 3 GHz".into(),
            cores: 2,
            memory_gib: 7.8,
            kernel: "6.1.0".into(),
            os: "Debian GNU/Linux 12".into(),
            docker: "27.0".into(),
            profile: "release".into(),
            date: "2025-01-01T00:00:00Z".into(),
        }
    }

    /// A criterion benchmark directory (`<dir>/new/*.json`).
    fn criterion_bench(dir: &Path, benchmark: &str, mean_ns: f64) {
        let new = dir.join("new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("benchmark.json"), benchmark).unwrap();
        let estimates = format!(
            r#"{{"mean":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0}},"point_estimate":{mean_ns},"standard_error":0.1}},"median":{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0}},"point_estimate":{mean_ns},"standard_error":0.1}}}}"#
        );
        std::fs::write(new.join("estimates.json"), estimates).unwrap();
    }

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_link(Path::new("/a/docs"), Path::new("/a/docs/benchmarks/x.png")),
            "benchmarks/x.png"
        );
        assert_eq!(
            relative_link(Path::new("/a/docs"), Path::new("/a/charts/x.png")),
            "../charts/x.png"
        );
        assert_eq!(
            relative_link(Path::new("/a/./docs/"), Path::new("/a/b/../docs/x.png")),
            "x.png"
        );
        assert_eq!(
            relative_link(Path::new("/a"), Path::new("/a/my charts/x.png")),
            "<my charts/x.png>"
        );
    }

    #[test]
    fn writes_markdown_and_charts() {
        let tmp = TempDir::new("full");
        let criterion = tmp.0.join("criterion");
        criterion_bench(
            &criterion.join("envelope").join("encode").join("64"),
            r#"{"group_id":"envelope","function_id":"encode","value_str":"64","throughput":{"Elements":1},"full_id":"envelope/encode/64","directory_name":"envelope/encode/64","title":"envelope/encode/64"}"#,
            250.0,
        );
        criterion_bench(
            &criterion.join("router_match"),
            r#"{"group_id":"router_match","function_id":null,"value_str":null,"throughput":null,"full_id":"router_match","directory_name":"router_match","title":"router_match"}"#,
            1500.0,
        );
        // Criterion's HTML report is not a benchmark.
        std::fs::create_dir_all(criterion.join("report")).unwrap();

        let runs = fixtures::runs();
        let overhead = fixtures::overhead();
        let machine = machine();
        let notes =
            "### Where eBPF loses lines\n\nAbove 100k lines/s of 64 B lines | ring buffer full.\n";
        let inputs = Inputs {
            runs: &runs,
            overhead: Some(&overhead),
            machine: &machine,
            criterion_dir: &criterion,
            notes: Some(notes),
            before: None,
        };
        let md_path = tmp.0.join("docs").join("benchmarks.md");
        let charts_dir = tmp.0.join("docs").join("benchmarks");
        write_report(&inputs, &md_path, &charts_dir).unwrap();

        let md = std::fs::read_to_string(&md_path).unwrap();
        for needle in [
            "# Spillway benchmarks",
            "cargo xtask bench --report",
            "| CPU | Test CPU @ 3 GHz |",
            "## Targets",
            "| 1 | eBPF holds ≥ 5×",
            "✅ met",
            "## Highest rate held at ≤ 0.1 % loss",
            "| 64 B | 1 | 100k | 10k | 10× |",
            "| 512 B | 10 | ≥ 25k | – | – |",
            "## CPU per line",
            "| 64 B | 1 | sweep | 10k | 2.00 | 3.00 | 5.00 | 20.0 | 2.5× | 6.7× |",
            "| 64 B | 1 | sweep | 25k | 2.00 | 3.00 | 5.10 † | 20.4 † | 2.6× | 6.8× |",
            "†: the run did not hold its rate",
            "### 64 B lines, 1 container (sweep)",
            "| Source | Offered | Emitted | Delivered | Loss % | Dup |",
            "| eBPF | 200k | 200k | 190k | 5.00 | 0 |",
            "### 100 B lines, 10 containers (target)",
            "## Overhead on non-container writes",
            "| median | 505.0 | 511.0 |",
            "**+1.2 %**",
            "| envelope | encode | 64 | 250 ns | 4M elem/s |",
            "| router_match | – | – | 1.50 µs | – |",
            FINDINGS_BEGIN,
            notes.trim_end(),
            FINDINGS_END,
        ] {
            assert!(md.contains(needle), "no {needle:?} in:\n{md}");
        }
        // The notes come verbatim, between the markers.
        let findings = &md[md.find(FINDINGS_BEGIN).unwrap()..md.find(FINDINGS_END).unwrap()];
        assert!(findings.contains("64 B lines | ring buffer full."));

        let mut pngs = 0;
        for size in [64, 100, 512] {
            for kind in ["throughput", "loss", "cpu"] {
                let name = format!("{kind}-{size}B.png");
                let path = charts_dir.join(&name);
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                assert!(len > 1000, "{} is missing or empty", path.display());
                assert!(
                    md.contains(&format!("(benchmarks/{name})")),
                    "no link to {name}"
                );
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
                pngs += 1;
            }
        }
        assert_eq!(pngs, 9);
        assert!(!md_path.with_extension("md.tmp").exists());
    }

    #[test]
    fn writes_a_report_without_data() {
        let tmp = TempDir::new("empty");
        let machine = Machine::default();
        let inputs = Inputs {
            runs: &[],
            overhead: None,
            machine: &machine,
            criterion_dir: &tmp.0.join("no-criterion"),
            notes: None,
            before: None,
        };
        let md_path = tmp.0.join("benchmarks.md");
        let charts_dir = tmp.0.join("charts");
        write_report(&inputs, &md_path, &charts_dir).unwrap();
        let md = std::fs::read_to_string(&md_path).unwrap();
        for needle in [
            "## Targets",
            "not measured",
            "No findings written yet",
            "No collector runs.",
            "No end-to-end runs.",
            "Not measured (no `overhead.json`",
            "The micro-benchmarks were not run",
            "## Before and after the capture rework",
            "| App write rate, 1 container × 300,000 lines of 100 B as fast as it can, lines/s | 343k | 229k | 100k | – | – | – |",
            "## Maximum write rate",
            "Not run (suite `maxrate`).",
            "## Short-lived containers",
            "Not run (suite `shortlived`).",
        ] {
            assert!(md.contains(needle), "no {needle:?} in:\n{md}");
        }
        assert_eq!(std::fs::read_dir(&charts_dir).unwrap().count(), 0);
    }

    #[test]
    fn partial_runs_render() {
        // Only `none` runs, and Docker without eBPF: no panic, no ratio.
        let runs: Vec<RunResult> = fixtures::runs()
            .into_iter()
            .filter(|r| r.source != EBPF)
            .collect();
        let machine = machine();
        let inputs = Inputs {
            runs: &runs,
            overhead: None,
            machine: &machine,
            criterion_dir: Path::new("/nonexistent"),
            notes: Some("  \n"),
            before: None,
        };
        let md = render_markdown(&inputs, &[], None);
        assert!(md.contains("| 64 B | 1 | 10k | – |"), "{md}");
        assert!(md.contains("No findings written yet"));
        assert!(
            md.contains("| no collector | 10k | 10k | – | – | – |"),
            "{md}"
        );
    }

    #[test]
    fn renders_the_scenarios_and_the_baseline() {
        let mut runs = fixtures::runs();
        runs.extend(fixtures::scenario_runs());
        let overhead = fixtures::overhead_with_docker();
        // The baseline: the rate runs, eBPF holding less.
        let before_runs: Vec<RunResult> = fixtures::runs()
            .into_iter()
            .map(|mut r| {
                if r.source == EBPF && r.offered_lps > 30e3 {
                    r.loss_pct = Some(5.0);
                }
                r
            })
            .collect();
        let before_overhead = Overhead {
            without_ns: vec![319.0],
            with_ns: vec![1116.0],
            overhead_pct: 250.0,
            ..Overhead::default()
        };
        let machine = machine();
        let inputs = Inputs {
            runs: &runs,
            overhead: Some(&overhead),
            machine: &machine,
            criterion_dir: Path::new("/nonexistent"),
            notes: None,
            before: Some(Before {
                runs: &before_runs,
                overhead: Some(&before_overhead),
            }),
        };
        let md = render_markdown(&inputs, &[], None);
        for needle in [
            // Before and after.
            "| Figure | Before: no collector | Before: Docker API | Before: eBPF | Now: no collector | Now: Docker API | Now: eBPF |",
            "| App write rate, 1 container × 300,000 lines of 100 B as fast as it can, lines/s | 343k | 229k | 100k | 400k | 300k (0.8× of none) | 200k (0.5× of none) |",
            "| Host process, 64 B pipe write | 319 ns | +2 % | 1116 ns (+250 %) | 505 ns | +0.2 % | 511 ns (+1.2 %) |",
            "| 200 containers printing 10 lines and exiting: lines captured | – | all | 13 | – | 2000 of 2000 (200 × 10), 2000 with the right tags | 13 of 2000 (200 × 10), 10 with the right tags |",
            // Max rate, side by side with ratios.
            "### 1 container × 300,000 lines of 100 B",
            "|  | no collector | Docker API | eBPF |",
            "| App write rate, lines/s | 400k | 300k | 200k |",
            "| vs no collector | 1.00× | 0.75× | 0.50× |",
            "| Lines delivered / sent | – / 300000 | 300000 / 300000 | 270000 / 300000 |",
            "| Drops by stage | – | 0 | capture/ring_full 30000 |",
            "| Lag after the last write | – | 1.80 s | 50.0 ms |",
            "| Collector CPU per line, µs | – | 7.00 | 6.67 |",
            "| collector | – | 2.10 | 1.80 |",
            "### 10 containers × 30,000 lines of 100 B",
            // Short-lived.
            "| Docker API | 200 | 10 | 2000 | 2000 | 2000 | 0 | 0 | 0 | 1.80 s | all | all |",
            "| eBPF | 200 | 10 | 2000 | 13 | 10 | 3 | 1987 | 0 | 50.0 ms | all | 13 |",
            // The baseline's columns.
            "Before (baseline)",
            "| eBPF before | Docker API before |",
            "| 64 B | 1 | 100k | 10k | 10× | 25k | 10k |",
            "| median | 505.0 | 511.0 | 506.0 |",
            "| overhead | – | +1.2 % | +0.2 % |",
            "| before (baseline), median | 319.0 | 1116.0 (+250.0 %) | – |",
        ] {
            assert!(md.contains(needle), "no {needle:?} in:\n{md}");
        }
        // The scenario runs stay out of the rate tables.
        assert!(!md.contains("| 100 B | 1 |"), "{md}");
    }
}
