//! The scaffold every benchmark shares: the common flags, the facts of a run (date, command
//! line, build profile, machine), the statistics, the Markdown tables, and the end of a run
//! ([`BenchReport`], [`publish`]: the summary table on stdout, the JSON + Markdown report pair
//! under `--out`), so that `panoptes-bench-ingest`, `panoptes-bench-worker` and
//! `panoptes-bench-failover` read and report the same way.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;

use super::sys::{self, MachineInfo};

/// Flags every benchmark takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Directory for the JSON and Markdown reports.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports"))]
    pub out: PathBuf,
    /// A short run for CI smoke use (explicit options win).
    #[arg(long)]
    pub quick: bool,
    /// Exit with status 3 if the result misses the benchmark's target.
    #[arg(long)]
    pub check: bool,
}

/// What a report says about the run itself.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// When the run started (UTC).
    pub date: String,
    /// The command line, as typed (shell-quoted).
    pub command: String,
    /// Cargo profile of the benchmark and the binaries it starts.
    pub profile: String,
}

impl RunInfo {
    /// The run starting now; `profile_note` is appended to the dev profile's description.
    pub fn now(profile_note: &str) -> Self {
        Self {
            date: sys::utc_timestamp(SystemTime::now()),
            command: command_line(std::env::args()),
            profile: profile(profile_note),
        }
    }
}

/// The build profile as reports name it.
fn profile(note: &str) -> String {
    if cfg!(debug_assertions) {
        format!("dev (workspace opt-level 1, dependencies opt-level 2, debug assertions on{note})")
    } else {
        "release".into()
    }
}

/// The arguments joined into a command line a shell would run as given.
pub fn command_line(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A figure of merit's target: a ratio (or time) a result must stay under or reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// The bound.
    pub bound: f64,
    /// `true`: results at or above the bound meet it; `false`: results at or under it do.
    pub higher_is_better: bool,
}

impl Target {
    /// Whether `value` meets the target.
    pub fn met_by(&self, value: f64) -> bool {
        if self.higher_is_better {
            value >= self.bound
        } else {
            value <= self.bound
        }
    }

    /// `≥ 0.85` or `≤ 1.25`.
    pub fn describe(&self) -> String {
        let op = if self.higher_is_better { '≥' } else { '≤' };
        format!("{op} {:.2}", self.bound)
    }
}

/// Median of `values` (mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Nearest-rank `q`-quantile of sorted values; `None` if empty.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A Markdown table built row by row.
#[derive(Debug, Clone)]
pub struct Table {
    text: String,
}

impl Table {
    /// A table with these column headers; a header starting with `>` is a right-aligned
    /// (numeric) column, the `>` itself is not printed.
    pub fn new(columns: &[&str]) -> Self {
        let mut text = String::from("|");
        let mut rule = String::from("|");
        for c in columns {
            let (name, rule_cell) = match c.strip_prefix('>') {
                Some(name) => (name, "---:|"),
                None => (*c, "---|"),
            };
            let _ = write!(text, " {name} |");
            rule.push_str(rule_cell);
        }
        text.push('\n');
        text.push_str(&rule);
        text.push('\n');
        Self { text }
    }

    /// Appends one row.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        self.text.push('|');
        for c in cells {
            let _ = write!(self.text, " {} |", c.as_ref());
        }
        self.text.push('\n');
    }

    /// The table's text, ending in a newline.
    pub fn finish(self) -> String {
        self.text
    }
}

/// The opening of every Markdown report: title, date, command, profile, machine, load.
/// `machine_extra` ends the machine line (the GStreamer version, the device).
pub fn markdown_header(title: &str, run: &RunInfo, m: &MachineInfo, machine_extra: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(s, "- Date: {}", run.date);
    let _ = writeln!(s, "- Command: `{}`", run.command);
    let _ = writeln!(s, "- Profile: {}", run.profile);
    let _ = writeln!(
        s,
        "- Machine: {} CPUs, {}; {}; {machine_extra}",
        m.nproc, m.cpu_model, m.kernel
    );
    let _ = writeln!(s, "- Load average at start: {}", m.loadavg_at_start);
    s
}

/// The two sections every benchmark report has after its header: `## Result` (the summary
/// table) and `## Samples` (every measurement).
pub fn result_sections(summary: &str, samples: &str) -> String {
    format!("## Result\n\n{summary}\n## Samples\n\n{samples}")
}

/// A benchmark's report as the scaffold hands it on: a JSON document, a Markdown rendering
/// and the table a run prints when it ends.
pub trait BenchReport: Serialize {
    /// Stem of the report pair under `--out`: `<STEM>.json` and `<STEM>.md`.
    const STEM: &'static str;

    /// The headline table (Markdown): what the binary prints to stdout.
    fn summary_table(&self) -> String;

    /// The full Markdown report.
    fn to_markdown(&self) -> String;
}

/// The end of every benchmark run: prints the summary table, writes the report pair under
/// `--out` and says where.
pub fn publish(common: &CommonArgs, report: &impl BenchReport) -> Result<()> {
    println!("{}", report.summary_table());
    let (json, md) = write_reports(&common.out, report, &report.to_markdown())?;
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(())
}

/// Writes `<STEM>.json` (pretty, newline-terminated) and `<STEM>.md` under `out`, creating
/// the folder; returns both paths.
fn write_reports<R: BenchReport>(
    out: &Path,
    report: &R,
    markdown: &str,
) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stem = R::STEM;
    let json = out.join(format!("{stem}.json"));
    let md = out.join(format!("{stem}.md"));
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
    Ok((json, md))
}

/// With `--check`, ends the process with status 3 when the target was missed, saying why.
pub fn exit_if_missed(common: &CommonArgs, met: bool, why: &str) {
    if common.check && !met {
        eprintln!("{why}");
        std::process::exit(3);
    }
}

/// The `/metrics` text of a node's HTTP server, if it answers 200.
pub fn metrics_text(http: &str) -> Option<String> {
    let (status, text) = panoptes_testkit::get_text(&format!("{http}/metrics"))?;
    (status == 200).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ranks() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(10));
        assert_eq!(nearest_rank(&v, 0.99), Some(20));
        assert_eq!(nearest_rank::<u64>(&[], 0.5), None);
        assert_eq!(nearest_rank(&[7], 0.99), Some(7));
    }

    #[test]
    fn tables_align_numeric_columns() {
        let mut t = Table::new(&["round", ">frames"]);
        t.row(&["1", "42"]);
        assert_eq!(t.finish(), "| round | frames |\n|---|---:|\n| 1 | 42 |\n");
    }

    #[test]
    fn targets_and_quoting() {
        let under = Target {
            bound: 1.25,
            higher_is_better: false,
        };
        assert!(under.met_by(1.25) && !under.met_by(1.3));
        assert_eq!(under.describe(), "≤ 1.25");
        assert_eq!(
            command_line(["bench".to_string(), "--out".into(), "a b".into()]),
            "bench --out 'a b'"
        );
    }
}
