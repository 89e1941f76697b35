//! The tracing-overhead benchmark (binary `panoptes-bench-trace`): CPU per frame of
//! `panoptes-worker` and of `panoptes-ingest` with tracing **on** (OTLP export to a real
//! receiver, the product's default sampling) against the same node with tracing **off**,
//! reported as a ratio measured in the same run (`docs/benchmarks.md`, "Tracing overhead").
//!
//! Method: each phase is a fresh node process; the figure is its CPU time (`utime + stime`
//! from `/proc/<pid>/stat`, all threads, so the export thread counts) over a window of
//! frames, divided by the frames done in that window. Phases alternate off/on in ABBA order
//! (round 1: off, on; round 2: on, off; ...) so a drift of the machine's load hits both sides
//! alike; the result is the median of the per-round ratios `off CPU/frame ÷ on CPU/frame`
//! (1.0: no overhead; the target is ≥ [`TARGET_RATIO`]).
//!
//! - Worker: topics pre-filled (and topped up) with synthetic 640×360 JPEG frames whose
//!   `traceparent` sampled flag follows the sample ratio exactly ([`sampled`]: frame `i` of
//!   every `1/ratio` is sampled, as the ingest node's trace-id ratio would on average); the
//!   worker (reference detector, lossless staleness) exports to an in-process
//!   [`OtlpReceiver`] over OTLP/HTTP; the window runs from its first `warmup` records to the
//!   last.
//! - Ingest: the ingest benchmark's fixture (simulated RTSP cameras, development broker) and
//!   phase ([`super::ingest::run`]), the node exporting over OTLP/gRPC with `sample_ratio` at
//!   its default.
//!
//! Each "on" phase must deliver spans to the receiver, or the run fails: an overhead figure
//! of a tracer that exported nothing would measure nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use panoptes_runtime::trace::{OtlpProtocol, TracingConfig};
use panoptes_schemas::format_traceparent;
use panoptes_testkit::kafka::{FrameProducer, frame_headers, test_jpeg};
use panoptes_testkit::otlp::OtlpReceiver;
use panoptes_testkit::{DevBroker, metric_value, unique_name};
use panoptes_testkit_stack::{stack, worker};
use panoptes_workers::config::StalePolicy;
use serde::Serialize;

use super::ingest::IngestBenchParams;
use super::ingest::Phase as IngestPhase;
use super::ingest::run::{Fixture, run_ingest};
use super::scaffold;
use super::sys;

/// Traced CPU per frame over untraced CPU per frame, inverted: the share of the untraced
/// throughput per CPU second kept with tracing on. The target of issue 12.
pub const TARGET_RATIO: f64 = 0.97;

const OK_RECORDS: &str = "panoptes_worker_records_total{status=\"ok\"}";

/// Whether frame `seq` is marked sampled at `ratio`: when `floor((seq+1)·ratio)` exceeds
/// `floor(seq·ratio)`, i.e. evenly spread, `ratio` of any long run (0: none, 1: all).
pub fn sampled(seq: u64, ratio: f64) -> bool {
    // In parts per million, in integers: exact counts whatever the float rounding.
    let ppm = (ratio.clamp(0.0, 1.0) * 1e6).round() as u128;
    let at = |n: u64| u128::from(n) * ppm / 1_000_000;
    at(seq + 1) > at(seq)
}

/// A W3C `traceparent` for frame `seq` of a run salted `salt`: unique ids, the sampled flag
/// per [`sampled`].
pub fn frame_traceparent(salt: u64, seq: u64, ratio: f64) -> String {
    let mix = |x: u64| {
        // splitmix64: distinct, well-spread ids without a random source.
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) | 1
    };
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&mix(salt).to_be_bytes());
    trace[8..].copy_from_slice(&mix(salt ^ seq.rotate_left(17)).to_be_bytes());
    let span = mix(seq ^ 0xA5A5).to_be_bytes();
    format_traceparent(&trace, &span, u8::from(sampled(seq, ratio)))
}

/// One phase of one side.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `worker` or `ingest`.
    pub node: &'static str,
    /// Round, from 1.
    pub round: u32,
    /// Tracing on (export to the receiver) or off.
    pub traced: bool,
    /// Frames done in the window.
    pub frames: u64,
    /// CPU seconds of the node in the window.
    pub cpu_s: f64,
    /// Wall seconds of the window.
    pub wall_s: f64,
    /// Spans the receiver got from this phase.
    pub spans: usize,
}

impl Phase {
    /// CPU milliseconds per frame.
    pub fn cpu_ms_per_frame(&self) -> f64 {
        if self.frames == 0 {
            f64::INFINITY
        } else {
            self.cpu_s * 1e3 / self.frames as f64
        }
    }
}

/// Per-round ratios (off CPU/frame over on CPU/frame) of `node`'s phases, in round order.
pub fn round_ratios(phases: &[Phase], node: &str) -> Vec<f64> {
    let mut rounds: Vec<u32> = phases
        .iter()
        .filter(|p| p.node == node)
        .map(|p| p.round)
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .filter_map(|r| {
            let of = |traced: bool| {
                phases
                    .iter()
                    .find(|p| p.node == node && p.round == r && p.traced == traced)
                    .map(Phase::cpu_ms_per_frame)
            };
            Some(of(false)? / of(true)?)
        })
        .collect()
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Arguments of `panoptes-bench-trace`.
#[derive(Debug, clap::Parser)]
#[command(
    about = "CPU per frame of panoptes-worker and panoptes-ingest with tracing on (OTLP export, default sampling) vs off, as a ratio"
)]
pub struct TraceArgs {
    /// Share of frames marked sampled (the product default of `[tracing] sample_ratio`).
    #[arg(long, default_value_t = 0.01)]
    pub sample: f64,
    /// Rounds (one off and one on phase each) of the worker; 0 skips it.
    #[arg(long, default_value_t = 6)]
    pub worker_rounds: u32,
    /// Frames in each worker phase's window.
    #[arg(long, default_value_t = 1500)]
    pub worker_frames: u64,
    /// Rounds of the ingest node; 0 skips it.
    #[arg(long, default_value_t = 4)]
    pub ingest_rounds: u32,
    /// Window of each ingest phase, seconds.
    #[arg(long, default_value_t = 20)]
    pub ingest_window: u64,
    /// Directory of `trace-overhead.json`.
    #[arg(long, default_value = "loadtest/reports")]
    pub out: std::path::PathBuf,
}

/// Runs the benchmark (see the module doc); prints a table and writes the JSON report.
pub fn main(args: TraceArgs) -> Result<()> {
    ensure!((0.0..=1.0).contains(&args.sample), "--sample within 0..=1");
    let receiver = OtlpReceiver::start()?;
    let mut phases = Vec::new();
    if args.worker_rounds > 0 {
        worker_rounds(&args, &receiver, &mut phases)?;
    }
    if args.ingest_rounds > 0 {
        ingest_rounds(&args, &receiver, &mut phases)?;
    }
    let mut summary = Vec::new();
    println!(
        "| node | rounds | CPU ms/frame off (median) | on (median) | ratio off/on per round | median ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for node in ["worker", "ingest"] {
        let ratios = round_ratios(&phases, node);
        if ratios.is_empty() {
            continue;
        }
        let ms = |traced: bool| {
            let v: Vec<f64> = phases
                .iter()
                .filter(|p| p.node == node && p.traced == traced)
                .map(Phase::cpu_ms_per_frame)
                .collect();
            median(&v)
        };
        let m = median(&ratios);
        let list: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "| {node} | {} | {:.3} | {:.3} | {} | **{m:.3}** |",
            ratios.len(),
            ms(false),
            ms(true),
            list.join(", ")
        );
        summary.push(serde_json::json!({
            "node": node, "median_ratio": m, "ratios": ratios,
            "cpu_ms_per_frame_off": ms(false), "cpu_ms_per_frame_on": ms(true),
        }));
    }
    std::fs::create_dir_all(&args.out)?;
    let report = serde_json::json!({
        "run": scaffold::RunInfo::now(""),
        "machine": sys::machine_info(),
        "sample_ratio": args.sample,
        "target_ratio": TARGET_RATIO,
        "summary": summary,
        "phases": phases,
        "spans_received": receiver.spans().len(),
    });
    let path = args.out.join("trace-overhead.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("report: {}", path.display());
    Ok(())
}

/// Whether round `round`'s first phase is the traced one (ABBA order).
fn traced_first(round: u32) -> bool {
    round.is_multiple_of(2)
}

fn worker_rounds(args: &TraceArgs, receiver: &OtlpReceiver, out: &mut Vec<Phase>) -> Result<()> {
    let broker = DevBroker::start(1)?;
    let models = stack::generate_models()?;
    let jpeg = test_jpeg(640, 360);
    for round in 1..=args.worker_rounds {
        for traced in [traced_first(round), !traced_first(round)] {
            let before = receiver.spans().len();
            let mut p = worker_phase(args, &broker, models.path(), &jpeg, round, traced, receiver)?;
            p.spans = receiver.spans().len() - before;
            eprintln!(
                "worker round {round} traced={traced}: {} frames, {:.2} CPU s, {:.3} ms/frame, {} spans",
                p.frames,
                p.cpu_s,
                p.cpu_ms_per_frame(),
                p.spans
            );
            ensure!(!traced || p.spans > 0, "the traced worker exported no span");
            out.push(p);
        }
    }
    Ok(())
}

/// One worker phase: fresh topics and worker, frames fed as the worker goes (a short backlog,
/// see below), CPU and records counted from the `warmup`-th record on.
fn worker_phase(
    args: &TraceArgs,
    broker: &DevBroker,
    models: &std::path::Path,
    jpeg: &[u8],
    round: u32,
    traced: bool,
    receiver: &OtlpReceiver,
) -> Result<Phase> {
    let warmup: u64 = 50;
    let total = warmup + args.worker_frames;
    let t = broker.create_topics(1)?;
    let mut c = worker::config(
        &unique_name("trace-bench-worker"),
        &broker.bootstrap,
        &t,
        &unique_name("trace-bench-group"),
        &models.join("reference-detector.pt"),
        &models.join("reference-detector.json"),
    );
    c.batching.max_batch = 4;
    c.batching.max_wait = Duration::from_millis(20);
    c.staleness.policy = StalePolicy::Lossless;
    if traced {
        c.tracing = TracingConfig {
            endpoint: Some(receiver.http_url.clone()),
            protocol: OtlpProtocol::HttpProtobuf,
            sample_ratio: args.sample,
            ..TracingConfig::default()
        };
    }
    let producer = FrameProducer::new(
        &broker.bootstrap,
        &[("linger.ms", "5"), ("message.max.bytes", "4000000")],
    )?;
    let salt = u64::from(round) << 1 | u64::from(traced);
    // A short backlog (well under a second of work): frames stay younger than the default
    // `slow_threshold` (2 s), which would otherwise keep every frame's spans (a measure of
    // the always-keep rule, not of the default sampling).
    let backlog: u64 = 60;
    let mut sent = 0u64;
    let mut feed = |done: u64| -> Result<()> {
        let want = (done + backlog).min(total);
        if sent > done + backlog / 2 {
            return Ok(());
        }
        while sent < want {
            let mut h = frame_headers("cam0", sent, (640, 360), Duration::ZERO);
            h.traceparent = frame_traceparent(salt, sent, args.sample);
            producer.send(&t.frames, 0, &h, jpeg)?;
            sent += 1;
        }
        producer.flush()
    };
    feed(0)?;
    let mut node = worker::start(&c, &[], Duration::from_secs(60))?;
    let pid = node.proc.pid();
    let ticks = sys::clock_ticks();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut window: Option<(u64, u64, Instant)> = None;
    loop {
        let ok = scaffold::metrics_text(&node.http)
            .and_then(|m| metric_value(&m, OK_RECORDS))
            .unwrap_or(0.0) as u64;
        if window.is_none() && ok >= warmup {
            window = Some((ok, sys::process_cpu_ticks(pid)?, Instant::now()));
        }
        if let Some((ok0, cpu0, t0)) = window
            && ok >= total
        {
            let cpu1 = sys::process_cpu_ticks(pid)?;
            let wall_s = t0.elapsed().as_secs_f64();
            if traced {
                // Let the export thread's last batch (1 s interval) reach the receiver.
                std::thread::sleep(Duration::from_millis(1500));
            }
            node.proc.terminate(Duration::from_secs(10))?;
            return Ok(Phase {
                node: "worker",
                round,
                traced,
                frames: ok - ok0,
                cpu_s: cpu1.saturating_sub(cpu0) as f64 / ticks.per_second as f64,
                wall_s,
                spans: 0,
            });
        }
        feed(ok)?;
        if !node.proc.is_running() {
            bail!("panoptes-worker exited:\n{}", node.proc.log_text());
        }
        if Instant::now() > deadline {
            bail!("worker phase timed out at {ok} of {total} records");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ingest_rounds(args: &TraceArgs, receiver: &OtlpReceiver, out: &mut Vec<Phase>) -> Result<()> {
    let params = IngestBenchParams {
        window_s: args.ingest_window,
        ..IngestBenchParams::default()
    };
    params.validate()?;
    let fx = Fixture::start(&params)?;
    let ticks = sys::clock_ticks();
    let tracing = TracingConfig {
        endpoint: Some(receiver.grpc_url.clone()),
        protocol: OtlpProtocol::Grpc,
        sample_ratio: args.sample,
        ..TracingConfig::default()
    };
    for round in 1..=args.ingest_rounds {
        for traced in [traced_first(round), !traced_first(round)] {
            let before = receiver.spans().len();
            let s = run_ingest(
                &fx,
                &params,
                (IngestPhase::Ingest, round),
                ticks,
                traced.then_some(&tracing),
            )
            .with_context(|| format!("ingest round {round} traced={traced}"))?;
            let spans = receiver.spans().len() - before;
            let p = Phase {
                node: "ingest",
                round,
                traced,
                frames: s.frames,
                cpu_s: s.cpu_s,
                wall_s: s.wall_s,
                spans,
            };
            eprintln!(
                "ingest round {round} traced={traced}: {} frames, {:.2} CPU s, {:.3} ms/frame, {} spans, machine {:.0}% busy",
                p.frames,
                p.cpu_s,
                p.cpu_ms_per_frame(),
                p.spans,
                s.machine_busy * 100.0
            );
            ensure!(p.frames > 0, "ingest round {round}: no frames");
            ensure!(
                !traced || spans > 0,
                "the traced ingest node exported no span"
            );
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_exact_and_spread() {
        let n = (0..10_000).filter(|&i| sampled(i, 0.01)).count();
        assert_eq!(n, 100);
        assert!((0..100).filter(|&i| sampled(i, 0.01)).count() == 1);
        assert!((0..50).all(|i| sampled(i, 1.0)));
        assert!((0..50).all(|i| !sampled(i, 0.0)));
        let tp = frame_traceparent(3, 99, 0.01);
        assert!(tp.ends_with("-01"), "{tp}");
        assert!(frame_traceparent(3, 98, 0.01).ends_with("-00"));
        assert_ne!(frame_traceparent(3, 1, 0.5), frame_traceparent(4, 1, 0.5));
        assert!(panoptes_runtime::trace::remote_context(&tp).is_some());
    }

    #[test]
    fn ratios_pair_rounds() {
        let p = |round, traced, cpu_s| Phase {
            node: "worker",
            round,
            traced,
            frames: 100,
            cpu_s,
            wall_s: 1.0,
            spans: 0,
        };
        let phases = [
            p(1, false, 1.0),
            p(1, true, 1.02),
            p(2, true, 2.0),
            p(2, false, 2.0),
        ];
        let r = round_ratios(&phases, "worker");
        assert_eq!(r.len(), 2);
        assert!((r[0] - 1.0 / 1.02).abs() < 1e-9);
        assert!((r[1] - 1.0).abs() < 1e-9);
        assert!((median(&r) - (1.0 / 1.02 + 1.0) / 2.0).abs() < 1e-9);
    }
}
