//! The idle-node benchmark (binary `panoptes-bench-idle`, see `docs/benchmarks.md`): CPU per
//! thread of nodes that have nothing to do, to show that no thread spins.
//!
//! One development broker; an ingest node with no cameras, an at-least-once worker and an
//! exactly-once worker, each owning an empty frames partition of its own topics. After they
//! settle, the CPU ticks of every thread (`/proc/<pid>/task/<tid>/stat`, `utime + stime`) are
//! taken at the start and the end of a window; the report lists each process's total and its
//! busiest threads. An idle node should cost next to nothing; the reference is the
//! development broker's own idle cost in the same window (its librdkafka mock threads wake
//! on timers too).

pub mod run;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::scaffold::{BenchReport, RunInfo, Table, markdown_header, result_sections};
use super::sys;

/// One thread's CPU over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadCpu {
    /// Thread name (`/proc/<pid>/task/<tid>/comm`).
    pub name: String,
    /// Thread id.
    pub tid: u32,
    /// Clock ticks used in the window.
    pub ticks: u64,
}

/// One process over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessCpu {
    /// What it is (`ingest`, `worker (at-least-once)`, ...).
    pub role: String,
    /// Ticks of all its threads in the window.
    pub ticks: u64,
    /// Threads that used any CPU, busiest first.
    pub threads: Vec<ThreadCpu>,
    /// Threads it had at the end.
    pub thread_count: usize,
}

impl ProcessCpu {
    /// Share of one core used in a window of `window_s` at `hz` ticks per second, in percent.
    pub fn core_percent(&self, window_s: f64, hz: f64) -> f64 {
        if window_s > 0.0 {
            self.ticks as f64 / hz / window_s * 100.0
        } else {
            0.0
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Date, command line and build profile.
    #[serde(flatten)]
    pub run: RunInfo,
    /// Machine facts.
    pub machine: sys::MachineInfo,
    /// Measured window, seconds.
    pub window_s: f64,
    /// Clock ticks per second.
    pub hz: u64,
    /// Per process.
    pub processes: Vec<ProcessCpu>,
}

/// `(tid, name, ticks)` of every thread of `pid`; threads that exit meanwhile are skipped.
pub fn thread_ticks(pid: u32) -> Result<Vec<(u32, String, u64)>> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let path = entry.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(path.join("stat")),
            std::fs::read_to_string(path.join("comm")),
        ) else {
            continue;
        };
        if let Some(ticks) = sys::parse_stat_cpu_ticks(&stat) {
            out.push((tid, comm.trim().to_string(), ticks));
        }
    }
    Ok(out)
}

/// The window's use per thread from two [`thread_ticks`] samples.
pub fn window(
    role: &str,
    before: &[(u32, String, u64)],
    after: &[(u32, String, u64)],
) -> ProcessCpu {
    let start: BTreeMap<u32, u64> = before.iter().map(|(t, _, k)| (*t, *k)).collect();
    let mut threads: Vec<ThreadCpu> = after
        .iter()
        .map(|(tid, name, k)| ThreadCpu {
            name: name.clone(),
            tid: *tid,
            ticks: k.saturating_sub(start.get(tid).copied().unwrap_or(0)),
        })
        .filter(|t| t.ticks > 0)
        .collect();
    threads.sort_by(|a, b| b.ticks.cmp(&a.ticks).then(a.tid.cmp(&b.tid)));
    ProcessCpu {
        role: role.to_string(),
        ticks: threads.iter().map(|t| t.ticks).sum(),
        threads,
        thread_count: after.len(),
    }
}

/// Measures `procs` (`(role, pid)`) over `window`.
pub fn measure(procs: &[(String, u32)], window_len: Duration) -> Result<(f64, Vec<ProcessCpu>)> {
    let before: Vec<_> = procs
        .iter()
        .map(|(_, pid)| thread_ticks(*pid))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    std::thread::sleep(window_len);
    let after: Vec<_> = procs
        .iter()
        .map(|(_, pid)| thread_ticks(*pid))
        .collect::<Result<_>>()?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((
        secs,
        procs
            .iter()
            .zip(before.iter().zip(&after))
            .map(|((role, _), (b, a))| window(role, b, a))
            .collect(),
    ))
}

impl BenchReport for IdleReport {
    const STEM: &'static str = "idle-bench";

    fn summary_table(&self) -> String {
        let hz = self.hz as f64;
        let mut table = Table::new(&[
            &format!("idle node, {:.0} s window", self.window_s),
            ">CPU ticks",
            ">% of one core",
            ">threads",
            "busiest threads (ticks)",
        ]);
        for p in &self.processes {
            let busiest: Vec<String> = p
                .threads
                .iter()
                .take(4)
                .map(|t| format!("`{}` {}", t.name, t.ticks))
                .collect();
            table.row(&[
                p.role.clone(),
                p.ticks.to_string(),
                format!("{:.2}", p.core_percent(self.window_s, hz)),
                p.thread_count.to_string(),
                busiest.join(", "),
            ]);
        }
        table.finish()
    }

    fn to_markdown(&self) -> String {
        let mut s = markdown_header(
            "Idle nodes: CPU per thread",
            &self.run,
            &self.machine,
            &format!("{} clock ticks per second", self.hz),
        );
        let mut samples = String::new();
        for p in &self.processes {
            let _ = writeln!(samples, "\n{}:\n", p.role);
            let mut t = Table::new(&["thread", ">tid", ">ticks"]);
            for th in &p.threads {
                t.row(&[th.name.clone(), th.tid.to_string(), th.ticks.to_string()]);
            }
            samples.push_str(&t.finish());
        }
        s.push_str(&result_sections(&self.summary_table(), &samples));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_subtracts_per_thread_and_sorts() {
        let before = vec![(1, "main".to_string(), 10), (2, "poll".to_string(), 5)];
        let after = vec![
            (1, "main".to_string(), 10),
            (2, "poll".to_string(), 9),
            (3, "new".to_string(), 2),
        ];
        let p = window("x", &before, &after);
        assert_eq!(p.ticks, 6);
        assert_eq!(p.thread_count, 3);
        let names: Vec<_> = p.threads.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["poll", "new"]);
        assert!((p.core_percent(10.0, 100.0) - 0.6).abs() < 1e-9);
    }

    #[test]
    fn this_process_has_threads() {
        let me = thread_ticks(std::process::id()).unwrap();
        assert!(!me.is_empty());
    }
}
