//! What a benchmark reads from the operating system: CPU time of one process, whole-machine
//! CPU use, machine facts, and a UTC timestamp. Linux only (`/proc`). Used by both the
//! ingest and the worker benchmark.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Failure to read a `/proc` file or to make sense of it.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// The file could not be read (for a process: it has exited).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file did not have the expected layout.
    #[error("unexpected format of {0}")]
    Format(String),
}

fn read(path: &str) -> Result<String, SysError> {
    std::fs::read_to_string(path).map_err(|source| SysError::Read {
        path: path.to_string(),
        source,
    })
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
///
/// These cover every thread of the process but not its children. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time used so far by process `pid` (all its threads), in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> Result<u64, SysError> {
    let path = format!("/proc/{pid}/stat");
    let text = read(&path)?;
    parse_stat_cpu_ticks(&text).ok_or(SysError::Format(path))
}

/// Resident memory of process `pid` in KiB, if it is running.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident memory (`VmHWM`) of process `pid` in KiB, if it is running.
pub fn process_peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak resident memory of process `pid` (one of ours) to its current RSS
/// (`echo 5 > /proc/<pid>/clear_refs`, Linux 4.0+), so that a later
/// [`process_peak_rss_kib`] covers only what happened since. `false` if the kernel refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Clock ticks per second for `/proc` CPU times, and where the figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClockTicks {
    /// Ticks per second.
    pub per_second: u64,
    /// `true` if `getconf CLK_TCK` answered, `false` if 100 was assumed.
    pub from_getconf: bool,
}

/// Asks `getconf CLK_TCK`; assumes 100 (the Linux value on every mainstream architecture)
/// if that fails.
pub fn clock_ticks() -> ClockTicks {
    let answer = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .filter(|&v| v > 0);
    match answer {
        Some(per_second) => ClockTicks {
            per_second,
            from_getconf: true,
        },
        None => ClockTicks {
            per_second: 100,
            from_getconf: false,
        },
    }
}

/// Whole-machine CPU counters from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemCpu {
    /// Ticks spent doing anything but idle and iowait, summed over all CPUs.
    pub busy: u64,
    /// All ticks, summed over all CPUs.
    pub total: u64,
}

impl SystemCpu {
    /// Fraction of the machine's CPU capacity that was busy between `earlier` and `self`.
    pub fn busy_fraction_since(&self, earlier: &SystemCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            0.0
        } else {
            self.busy.saturating_sub(earlier.busy) as f64 / total as f64
        }
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<SystemCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest times are already in user/nice).
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some(SystemCpu {
        busy: total - idle,
        total,
    })
}

/// Reads the whole-machine CPU counters.
pub fn system_cpu() -> Result<SystemCpu, SysError> {
    parse_proc_stat(&read("/proc/stat")?).ok_or_else(|| SysError::Format("/proc/stat".into()))
}

/// Facts about the machine that go into every report.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// CPUs this process may run on (`nproc`).
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `uname -sr`.
    pub kernel: String,
    /// First line of `gst-launch-1.0 --version` after the banner (the GStreamer version).
    pub gstreamer: String,
    /// `/proc/loadavg` when the run started.
    pub loadavg_at_start: String,
}

fn command_text(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Collects [`MachineInfo`]; facts that cannot be read are `"unknown"`.
pub fn machine_info() -> MachineInfo {
    let unknown = || "unknown".to_string();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(unknown);
    let gstreamer = command_text("gst-launch-1.0", &["--version"])
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("GStreamer "))
                .map(str::to_string)
        })
        .unwrap_or_else(unknown);
    MachineInfo {
        nproc: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(0),
        cpu_model,
        kernel: command_text("uname", &["-sr"])
            .map(|t| t.trim().to_string())
            .unwrap_or_else(unknown),
        gstreamer,
        loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| unknown()),
    }
}

/// `time` as an RFC 3339 UTC timestamp with seconds, e.g. `2025-01-31T12:00:00Z`.
pub fn utc_timestamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), non-negative days only.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stat_line_with_awkward_command_name() {
        let line = "4242 (gst (launch) 1) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 37 0 0 20 0 9 0 123 456 789";
        assert_eq!(parse_stat_cpu_ticks(line), Some(287));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn own_process_cpu_is_readable() {
        let ticks = process_cpu_ticks(std::process::id()).expect("own /proc/self/stat");
        assert!(ticks < u64::MAX);
        assert!(process_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn proc_stat_busy_fraction() {
        let a = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").expect("parse");
        assert_eq!(
            a,
            SystemCpu {
                busy: 150,
                total: 1000
            }
        );
        let b = SystemCpu {
            busy: 250,
            total: 1200,
        };
        assert!((b.busy_fraction_since(&a) - 0.5).abs() < 1e-9);
        assert_eq!(a.busy_fraction_since(&a), 0.0);
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31T23:59:59Z"
        );
    }
}
