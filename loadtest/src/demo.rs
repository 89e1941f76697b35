//! `panoptes-loadtest demo`: the whole coordinated system on one machine, watched live.
//!
//! It starts a [`Stack`] (Redis, the development broker, the camera simulator, one
//! coordinator, one ingest node and `--workers` exactly-once workers running the reference
//! detector), registers `--cameras` simulated cameras (640×360 H.264 at 5 fps, every frame
//! sampled) through the coordinator's operator API, waits until every camera and partition is
//! assigned, and then prints:
//!
//! - once, where to look: the operator API and every `/metrics` endpoint, the `panoptes status`
//!   command line, the `panoptes detections tail` command (and the raw `kcat` one) for the
//!   detections topic, the `panoptes cameras add` command line for a spare camera, the logs;
//! - detection records that found objects, at most [`LINES_PER_SECOND`] lines a second,
//!   taking cameras in turn (the status line counts the lines left out);
//! - every [`STATUS_PERIOD`] a status line: cameras streaming (the coordinator's
//!   `/v1/status`), frames per second in (the frames topic's offsets) and out (detection
//!   records read), end-to-end latency p50/p99 of the records of that window
//!   (`latency.end_to_end_ms`), and the workers' total lag.
//!
//! Room to grow: the frames topic starts with one partition per camera, and the coordinator
//! may grow it (Kafka's CreatePartitions, `[frames_growth]`) by up to `--spare` partitions;
//! the simulator also serves `extra0`, `extra1`, ... (not registered), so `panoptes cameras
//! add` works while the demo runs, with a simulated camera or the newcomer's own.
//!
//! SIGINT (Ctrl-C), SIGTERM or SIGHUP stop it in order, within [`STOP_BUDGET`] whatever state
//! the coordinator is in: the cameras are unregistered (so no node waits for a handover),
//! then the ingest node (SIGTERM: no new frames), the workers (SIGTERM: they commit and
//! release their partitions), the coordinator, and Redis, the broker and the simulator last,
//! each with a share of the budget before SIGKILL. When the coordinator does not take the
//! cameras back (dead or hung), every node gets SIGTERM at once and SIGKILL soon after (their
//! drains would only wait for it). A second signal skips the waiting. The children lead
//! process groups of their own, so a terminal's Ctrl-C reaches only the demo. `--keep-logs
//! DIR` copies the coordinator's and nodes' logs there before they are deleted.
//!
//! With `--seconds S` it stops by itself after S seconds of streaming and prints
//! `DEMO_SUMMARY cameras=<n> cameras_with_detections=<k> detections=<records> frames=<f>`;
//! the exit status is 0 only if every camera had detections. `DEMO_PIDS=<pids>` (every child
//! process) is printed once at start, for tests that check nothing is left behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_scene::camera::CameraConfig;
use panoptes_schemas::{DetectionRecord, FrameStatus};
use panoptes_testkit::ChildProcess;
use panoptes_testkit::coordinator::TEST_TOKEN;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::stack::{Node, Stack, StackCamera, StackSpec};

mod trace;
mod view;

use view::*;

/// Detection lines printed per second at most.
pub const LINES_PER_SECOND: u32 = 3;
/// Period of the status line.
pub const STATUS_PERIOD: Duration = Duration::from_secs(2);

const REGION: &str = "local";
const INGEST_ID: &str = "ingest-0";
const GROUP: &str = "default";
/// Ids of the spare simulated cameras: `extra0`, `extra1`, ...
pub const SPARE_PREFIX: &str = "extra";

/// Arguments of `panoptes-loadtest demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Simulated cameras (640×360 H.264 at 5 fps, every frame sampled).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cameras: u32,
    /// Workers (reference detector on the CPU, one thread each, exactly-once delivery).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub workers: u32,
    /// Headless: stop after this many seconds of streaming, print a `DEMO_SUMMARY` line and
    /// exit with status 0 only if every camera had detections.
    #[arg(long, value_name = "S")]
    pub seconds: Option<u64>,
    /// Print no detection lines (status lines only).
    #[arg(long)]
    pub quiet_detections: bool,
    /// Room to add cameras while it runs (`panoptes cameras add`): the coordinator may grow
    /// the frames topic by this many partitions past `--cameras`, and as many simulated
    /// cameras `extra0`, `extra1`, ... are served but not registered.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub spare: u32,
    /// Keep the processes' logs: copied into DIR (created if needed) when the demo stops,
    /// instead of deleted with the temporary files.
    #[arg(long, value_name = "DIR")]
    pub keep_logs: Option<PathBuf>,
    /// Export the ingest node's and workers' OpenTelemetry traces (OTLP/HTTP, 5 % of frames)
    /// to an in-process receiver and print the first frame trace that reached a detection.
    #[arg(long)]
    pub trace: bool,
}

/// Runs `panoptes-loadtest demo`.
pub fn main(args: DemoArgs) -> Result<()> {
    let signals = Signals::install()?;
    // Ctrl-C in the terminal then reaches the demo only; the demo stops the children in order.
    panoptes_testkit::process::spawn_in_own_process_groups(true);
    let started = Instant::now();
    let mut trace = if args.trace {
        Some(trace::DemoTrace::start()?)
    } else {
        None
    };
    let mut stack = match start(&args, &signals, trace.as_ref()) {
        Ok(Some(stack)) => stack,
        // Interrupted while starting: whatever was started died with the partial stack.
        Ok(None) => {
            say("stopped during start-up");
            return Ok(());
        }
        Err(e) if signals.count() > 0 => {
            say(&format!("stopped during start-up ({e:#})"));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    say(&format!(
        "up in {:.1} s; {}",
        started.elapsed().as_secs_f64(),
        match args.seconds {
            Some(s) => format!("stopping after {s} s (or on Ctrl-C)"),
            None => "Ctrl-C stops everything".to_string(),
        }
    ));
    let detections =
        DetectionReader::start(&stack.brokers[REGION].bootstrap, &stack.topics.detections)?;
    let frames = FrameCounter::new(&stack.brokers[REGION].bootstrap, &stack.topics.frames)?;
    let mut view = View::new(&args);
    let run_start = Instant::now();
    let mut last_status = Instant::now();
    let mut frames_before = frames.total();
    let mut ended_by = "time";
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(name) = signals.first() {
            ended_by = name;
            break;
        }
        view.take(&detections);
        view.print_detections();
        if last_status.elapsed() >= STATUS_PERIOD {
            let now_frames = frames.total();
            let dt = last_status.elapsed().as_secs_f64();
            last_status = Instant::now();
            let fps_in = now_frames.saturating_sub(frames_before) as f64 / dt;
            frames_before = now_frames;
            let cluster = ClusterView::read(&stack);
            view.print_status(run_start.elapsed(), dt, fps_in, cluster.as_ref());
            if let Some(text) = trace.as_mut().and_then(trace::DemoTrace::take_complete) {
                println!("one frame's trace, camera to detection (OTLP):\n{text}");
            }
        }
        if let Some(name) = signals.first() {
            ended_by = name;
            break;
        }
        if args
            .seconds
            .is_some_and(|s| run_start.elapsed() >= Duration::from_secs(s))
        {
            break;
        }
    }
    say(&format!(
        "stopping ({ended_by}): cameras unregistered, then SIGTERM to the ingest node, the \
         workers and the coordinator; Redis, the broker and the simulator last (at most {:.1} s)",
        STOP_BUDGET.as_secs_f64()
    ));
    // The budget counts from the signal, not from here: the loop may have been busy.
    let stop_started = signals.first_at().map_or_else(Instant::now, |(_, at)| at);
    let deadline = stop_started + STOP_BUDGET;
    stop_nodes(&mut stack, &signals, &frames, stop_started);
    let frames_total = frames.total().max(frames_before);
    // Records the workers committed while draining.
    std::thread::sleep(Duration::from_millis(100).min(left_until(deadline)));
    view.take(&detections);
    view.pending.clear();
    drop(detections);
    drop(frames);
    if let Some(dir) = &args.keep_logs {
        keep_logs(&stack, dir);
    }
    stop_the_rest(stack, &signals, deadline);
    let left = child_pids();
    say(&format!(
        "stopped in {:.1} s; {}",
        stop_started.elapsed().as_secs_f64(),
        if left.is_empty() {
            "no child process left".to_string()
        } else {
            format!("still running: {left:?}")
        }
    ));
    if trace.as_ref().is_some_and(|t| !t.printed()) {
        say("no frame trace reached the receiver from both the ingest node and a worker");
    }
    let with = view.cameras_with_objects();
    println!(
        "DEMO_SUMMARY cameras={} cameras_with_detections={} detections={} frames={}",
        view.cameras(),
        with,
        view.records_total,
        frames_total
    );
    if args.seconds.is_some() && ended_by == "time" && with < args.cameras as usize {
        bail!(
            "only {with} of {} cameras had detections in {} s",
            args.cameras,
            args.seconds.unwrap_or(0)
        );
    }
    Ok(())
}

/// Starts and settles the stack; `None` if a signal came first.
fn start(
    args: &DemoArgs,
    signals: &Signals,
    trace: Option<&trace::DemoTrace>,
) -> Result<Option<Stack>> {
    let mut cameras: Vec<StackCamera> = (0..args.cameras)
        .map(|i| demo_camera(&format!("cam{i}"), u64::from(i) + 1))
        .collect();
    // Spare cameras are served by the simulator (they cost nothing until a client connects)
    // but left out of the spec after the start, so the stack neither registers nor awaits them.
    cameras.extend((0..args.spare).map(|i| {
        demo_camera(
            &format!("{SPARE_PREFIX}{i}"),
            u64::from(args.cameras + i) + 1,
        )
    }));
    let mut spec = StackSpec::single_region(cameras, args.cameras as i32);
    spec.frames_max_partitions = (args.cameras + args.spare) as i32;
    say(&format!(
        "starting {} simulated camera(s) (640x360 H.264, 5 fps) -> 1 ingest node -> Kafka \
         (development broker) -> {} worker(s) (reference detector, exactly-once), 1 coordinator, \
         Redis",
        args.cameras, args.workers
    ));
    let mut stack = Stack::start(spec)?;
    stack.spec.cameras.truncate(args.cameras as usize);
    if signals.count() > 0 {
        return Ok(None);
    }
    stack.coordinators[0].wait_leader(Duration::from_secs(30))?;
    if let Some(t) = trace {
        let mut ids = vec![INGEST_ID.to_string()];
        ids.extend((0..args.workers).map(|w| format!("worker-{w}")));
        t.export_from(&mut stack, &ids);
        say(&format!("traces: OTLP/HTTP receiver at {}", t.url()));
    }
    stack.start_ingest(INGEST_ID, REGION)?;
    for w in 0..args.workers {
        if signals.count() > 0 {
            return Ok(None);
        }
        stack.start_worker(&format!("worker-{w}"), REGION, GROUP)?;
    }
    let pids = child_pids();
    println!(
        "DEMO_PIDS={}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    stack.register_cameras()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if signals.count() > 0 {
            return Ok(None);
        }
        if stack.wait_settled(Duration::from_millis(500)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("cameras and partitions were not all assigned within 120 s");
        }
    }
    print_where_to_look(&stack, args);
    Ok(Some(stack))
}

/// A demo camera: 640×360 H.264 at 5 fps, every frame sampled, analytic size 640×360.
pub fn demo_camera(id: &str, seed: u64) -> StackCamera {
    let mut sim = CameraConfig::new(id);
    sim.width = 640;
    sim.height = 360;
    sim.fps = 5;
    sim.seed = seed;
    StackCamera {
        id: id.into(),
        region: REGION.into(),
        sim,
        sample_fps: 5,
        analytic: (640, 360),
    }
}

fn print_where_to_look(stack: &Stack, args: &DemoArgs) {
    let coord = &stack.coordinators[0].http;
    let bootstrap = &stack.brokers[REGION].bootstrap;
    let cli = sibling_binary("panoptes");
    let env = format!("PANOPTES_URL={coord} PANOPTES_API_TOKEN={TEST_TOKEN}");
    let mut lines = vec![
        "where to look:".to_string(),
        format!(
            "  operator API    {coord}/v1/status   (header: Authorization: Bearer {TEST_TOKEN})"
        ),
        format!(
            "                  curl -s -H 'Authorization: Bearer {TEST_TOKEN}' {coord}/v1/status"
        ),
        format!("  metrics         {coord}/metrics   (coordinator)"),
    ];
    for (id, n) in stack.ingest.iter().chain(&stack.workers) {
        lines.push(format!("  metrics         {}/metrics   ({id})", n.http));
    }
    lines.extend([
        format!("  status          {env} {cli} status"),
        format!(
            "  detections      {cli} detections tail --bootstrap-servers {bootstrap} --topic {}",
            stack.topics.detections
        ),
        format!(
            "                  (raw, no epoch rule or dedup: kcat -b {bootstrap} -t {} -C -o end -q)",
            stack.topics.detections
        ),
        format!(
            "  topics          frames {} ({} partitions, grown by the coordinator up to {}), detections {}, dead letters {} (broker {bootstrap})",
            stack.topics.frames,
            stack.spec.partitions,
            stack.spec.frames_max_partitions.max(stack.spec.partitions),
            stack.topics.detections,
            stack.topics.dlq
        ),
        format!("  cameras         {}/cam0 ...", stack.camsim.rtsp),
    ]);
    if args.spare > 0 {
        lines.push(format!(
            "  add a camera    {env} {cli} cameras add {SPARE_PREFIX}0 {}   (the coordinator grows the frames topic by up to {} partition(s); simulated {SPARE_PREFIX}0..{SPARE_PREFIX}{}, or your own rtsp:// URL)",
            stack.camsim.url(&format!("{SPARE_PREFIX}0"), None),
            args.spare,
            args.spare - 1
        ));
    }
    lines.push(format!(
        "  redis           redis-cli -u {}",
        stack.redis.url
    ));
    let mut logs: Vec<String> = log_files(stack)
        .into_iter()
        .map(|(_, p)| p.display().to_string())
        .collect();
    logs.sort();
    lines.push(format!(
        "  logs            {} ({})",
        logs.join(" "),
        match &args.keep_logs {
            Some(dir) => format!("copied into {} on exit", dir.display()),
            None => "deleted on exit; --keep-logs DIR keeps them".into(),
        }
    ));
    for l in lines {
        say(&l);
    }
}

/// The stderr logs of the coordinators and nodes, by process id.
fn log_files(stack: &Stack) -> Vec<(String, PathBuf)> {
    stack
        .coordinators
        .iter()
        .map(|c| (c.id.clone(), c.child.log_path()))
        .chain(
            stack
                .ingest
                .iter()
                .map(|(id, n)| (id.clone(), n.proc.log_path())),
        )
        .chain(
            stack
                .workers
                .iter()
                .map(|(id, n)| (id.clone(), n.proc.log_path())),
        )
        .collect()
}

/// Copies the logs into `dir` as `<id>.log`; says what it did.
fn keep_logs(stack: &Stack, dir: &Path) {
    let copied = std::fs::create_dir_all(dir).and_then(|()| {
        let mut n = 0;
        for (id, path) in log_files(stack) {
            std::fs::copy(&path, dir.join(format!("{id}.log")))?;
            n += 1;
        }
        Ok(n)
    });
    match copied {
        Ok(n) => say(&format!("  {n} log(s) kept in {}", dir.display())),
        Err(e) => say(&format!(
            "  could not keep the logs in {}: {e}",
            dir.display()
        )),
    }
}

/// A workspace binary next to this one, or its bare name.
fn sibling_binary(name: &str) -> String {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .map_or_else(|| name.to_string(), |p| p.display().to_string())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[demo] {line}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// Signals

/// SIGINT, SIGTERM and SIGHUP, counted by a thread with its own small tokio runtime.
struct Signals {
    count: Arc<AtomicU32>,
    /// The first signal's name and when it came.
    first: Arc<Mutex<Option<(&'static str, Instant)>>>,
}

impl Signals {
    fn install() -> Result<Self> {
        let count = Arc::new(AtomicU32::new(0));
        let first = Arc::new(Mutex::new(None));
        let (c, f) = (count.clone(), first.clone());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("demo-signals".into())
            .spawn(move || {
                use tokio::signal::unix::{SignalKind, signal};
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let streams = (|| {
                        Ok::<_, std::io::Error>((
                            signal(SignalKind::interrupt())?,
                            signal(SignalKind::terminate())?,
                            signal(SignalKind::hangup())?,
                        ))
                    })();
                    let (mut int, mut term, mut hup) = match streams {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        let name = tokio::select! {
                            _ = int.recv() => "SIGINT",
                            _ = term.recv() => "SIGTERM",
                            _ = hup.recv() => "SIGHUP",
                        };
                        f.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert((name, Instant::now()));
                        if c.fetch_add(1, Ordering::SeqCst) == 1 {
                            say(&format!("{name} again: not waiting any longer"));
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .context("signal thread died")?
            .context("installing signal handlers")?;
        Ok(Self { count, first })
    }

    fn count(&self) -> u32 {
        self.count.load(Ordering::SeqCst)
    }

    fn first(&self) -> Option<&'static str> {
        self.first_at().map(|(name, _)| name)
    }

    fn first_at(&self) -> Option<(&'static str, Instant)> {
        *self.first.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A second signal asks not to wait for draining.
    fn hurry(&self) -> bool {
        self.count() >= 2
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping

/// The whole stop, from the signal to the last child gone: Ctrl-C must stop everything
/// within 5 s whatever state the coordinator is in (issue 14).
pub const STOP_BUDGET: Duration = Duration::from_millis(4500);
/// Longest wait for one operator API answer while stopping: a hung coordinator must not eat
/// the budget.
const STOP_API_TIMEOUT: Duration = Duration::from_millis(700);

/// Time left until `deadline` (zero when past).
fn left_until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Unregisters the cameras, then SIGTERMs ingest nodes, workers and coordinators in that
/// order, each kind with a share of [`STOP_BUDGET`] to drain, counted from `started`.
///
/// A node's drain on SIGTERM waits for the coordinator to move its items to another node,
/// up to its drain timeout (10 s for ingest, 15 s for workers). When the whole system stops
/// there is no other node, so the demo first unregisters the cameras through the operator
/// API: the coordinator unassigns them and their partitions, the ingest node stops the
/// cameras and flushes their frames, the workers stop their partitions, and every node then
/// leaves at once. Frames still in Kafka at that moment (the lag) stay unprocessed.
///
/// When the coordinator does not answer (dead, hung, or the API refuses), nobody would move
/// the nodes' items and their drains would only wait out their timeouts: every node and
/// coordinator then gets SIGTERM at once and SIGKILL when its share of the budget is spent.
fn stop_nodes(stack: &mut Stack, signals: &Signals, frames: &FrameCounter, started: Instant) {
    let at = |ms: u64| started + Duration::from_millis(ms);
    let outcome = unregister_cameras(stack, signals, at(1200));
    match outcome {
        Some((done, total)) => say(&format!(
            "  unregistered {done}/{total} cameras (DELETE /v1/cameras/<id>)"
        )),
        None => say("  the coordinator does not answer (GET /v1/cameras)"),
    }
    if !matches!(outcome, Some((done, total)) if done == total) {
        say("  the coordinator did not take every camera back: stopping all nodes at once");
        let mut all = procs(&mut stack.ingest);
        all.extend(procs(&mut stack.workers));
        all.extend(coordinators(&mut stack.coordinators));
        // Their drains wait for a coordinator that will not come: a moment to flush, then
        // SIGKILL.
        terminate_all(all, at(2000), signals);
        return;
    }
    terminate_all(procs(&mut stack.ingest), at(2200), signals);
    // The last frames' count, while the broker still runs.
    let _ = frames.total();
    terminate_all(procs(&mut stack.workers), at(3200), signals);
    terminate_all(coordinators(&mut stack.coordinators), at(3700), signals);
}

/// The coordinators' processes, by id.
fn coordinators(
    coords: &mut [panoptes_testkit::coordinator::Coordinator],
) -> Vec<(String, &mut ChildProcess)> {
    coords
        .iter_mut()
        .map(|c| (c.id.clone(), &mut c.child))
        .collect()
}

/// DELETEs every registered camera (those added while the demo ran too) until `deadline`;
/// how many were removed, of how many; `None` when the registry cannot be read. Stops at the
/// first failure: a coordinator that failed once will not do better within the budget.
fn unregister_cameras(
    stack: &Stack,
    signals: &Signals,
    deadline: Instant,
) -> Option<(usize, usize)> {
    let base = &stack.coordinators[0].http;
    let Ok(http) = reqwest::blocking::Client::builder()
        .timeout(STOP_API_TIMEOUT)
        .build()
    else {
        return None;
    };
    let listed: Option<serde_json::Value> = http
        .get(format!("{base}/v1/cameras"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.json().ok());
    let ids: Vec<String> = listed?["cameras"]
        .as_array()?
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let mut done = 0;
    for id in &ids {
        if signals.hurry() || Instant::now() >= deadline {
            break;
        }
        let ok = http
            .delete(format!("{base}/v1/cameras/{id}"))
            .bearer_auth(TEST_TOKEN)
            .send()
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            break;
        }
        done += 1;
    }
    Some((done, ids.len()))
}

/// The processes of `nodes`, by id.
fn procs(nodes: &mut BTreeMap<String, Node>) -> Vec<(String, &mut ChildProcess)> {
    nodes
        .iter_mut()
        .map(|(id, n)| (id.clone(), &mut n.proc))
        .collect()
}

/// SIGTERM to every process, then waits for all of them until `deadline` (SIGKILL then, or
/// at once on a second signal).
fn terminate_all(procs: Vec<(String, &mut ChildProcess)>, deadline: Instant, signals: &Signals) {
    let start = Instant::now();
    let mut left: Vec<(String, &mut ChildProcess)> = Vec::new();
    for (id, p) in procs {
        if p.is_running() && p.signal("TERM").is_ok() {
            left.push((id, p));
        }
    }
    while !left.is_empty() {
        let mut still = Vec::new();
        for (id, p) in left {
            if p.is_running() {
                still.push((id, p));
            } else {
                say(&format!(
                    "  {id} exited after {:.1} s",
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        left = still;
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline || signals.hurry() {
            for (id, p) in &left {
                say(&format!("  {id} still running: SIGKILL"));
                let _ = p.signal("KILL");
            }
            for (_, p) in &mut left {
                for _ in 0..25 {
                    if !p.is_running() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to Redis, the broker and the simulator (whose handles are not public), until
/// `deadline` to exit, then the stack is dropped: whatever still runs gets SIGKILL and is
/// reaped.
fn stop_the_rest(stack: Stack, signals: &Signals, deadline: Instant) {
    let rest = child_pids();
    for pid in &rest {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    while Instant::now() < deadline && !signals.hurry() && rest.iter().any(|&p| is_alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stack);
}

/// Ids of this process's children (from `/proc`).
pub fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, state)) = stat_ppid_state(pid)
            && ppid == me
            && state != 'Z'
        {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat_ppid_state(pid).is_some_and(|(_, s)| s != 'Z' && s != 'X')
}

/// Parent pid and state letter from `/proc/<pid>/stat`.
fn stat_ppid_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

// ---------------------------------------------------------------------------------------------
// Reading the topics and the coordinator
