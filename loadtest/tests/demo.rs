//! The one-command demo, headless: `panoptes-loadtest demo` (what `scripts/demo.sh` runs after
//! setting up and building) starts the whole coordinated system, prints where to look and
//! live detections, stops by itself (`--seconds`) or on SIGINT, and leaves no process behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use panoptes_testkit::bin_path;

/// The demo as a child in a process group of its own (as a terminal runs it), with its
/// stdout lines collected.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut cmd = Command::new(bin_path("panoptes-loadtest"));
        cmd.arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("spawning panoptes-loadtest demo");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("demo| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Collects lines until one satisfies `f` (or the output ends, or `timeout`).
    fn wait_line(&mut self, timeout: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| f(l)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if f(&line) {
                return Some(line);
            }
        }
    }

    /// Waits for the process to exit and for its output to end.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the demo did not exit within {timeout:?}; output:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        status
    }

    fn pids(&mut self) -> Vec<u32> {
        let line = self
            .wait_line(Duration::from_secs(180), |l| l.starts_with("DEMO_PIDS="))
            .expect("a DEMO_PIDS line");
        let pids: Vec<u32> = line["DEMO_PIDS=".len()..]
            .split_whitespace()
            .map(|p| p.parse().expect("a pid"))
            .collect();
        // Redis, broker, simulator, coordinator, ingest node, at least one worker.
        assert!(pids.len() >= 6, "every child is listed: {line}");
        pids
    }

    fn has(&self, prefix: &str) -> bool {
        self.seen.iter().any(|l| l.starts_with(prefix))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next());
        !matches!(state, Some("Z") | Some("X"))
    })
}

fn assert_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = left
                .iter()
                .map(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                        .unwrap_or_default()
                        .replace('\0', " ")
                })
                .collect();
            for &p in &left {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
            panic!("processes left behind: {left:?} {names:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn headless_demo_shows_detections_from_every_camera_and_leaves_nothing_behind() {
    let t0 = Instant::now();
    let mut demo = Demo::start(&["--seconds", "25", "--cameras", "3", "--trace"]);
    let pids = demo.pids();
    let status = demo.wait_exit(Duration::from_secs(240));
    eprintln!("demo ran {:.1} s, {status}", t0.elapsed().as_secs_f64());
    let out = demo.seen.join("\n");
    assert!(
        status.success(),
        "demo exited with {status}; output:\n{out}"
    );

    let summary = demo
        .seen
        .iter()
        .find(|l| l.starts_with("DEMO_SUMMARY "))
        .unwrap_or_else(|| panic!("a DEMO_SUMMARY line in:\n{out}"));
    let field = |k: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k}= in {summary}"))
    };
    assert_eq!(field("cameras"), 3, "{summary}");
    assert_eq!(field("cameras_with_detections"), 3, "{summary}");
    assert!(field("frames") > 0 && field("detections") > 0, "{summary}");

    // Where to look.
    assert!(
        demo.seen
            .iter()
            .any(|l| l.contains("kcat -b 127.0.0.1:") && l.contains(" -C -o end -q")),
        "kcat command in:\n{out}"
    );
    let metrics = demo
        .seen
        .iter()
        .filter(|l| l.contains("metrics") && l.contains("/metrics"))
        .count();
    assert!(
        metrics >= 4,
        "coordinator, ingest and worker metrics URLs in:\n{out}"
    );
    assert!(
        demo.seen.iter().any(|l| l.contains("PANOPTES_URL=http://")
            && l.contains("PANOPTES_API_TOKEN=")
            && l.contains(" status")),
        "panoptes status command line in:\n{out}"
    );
    assert!(
        demo.seen.iter().any(|l| l.contains("/v1/status")),
        "operator API in:\n{out}"
    );
    // Live output.
    assert!(demo.has("[detection] cam"), "detection lines in:\n{out}");
    assert!(
        demo.seen
            .iter()
            .any(|l| l.starts_with("[status]") && l.contains("cameras up 3/3")),
        "a status line with every camera up in:\n{out}"
    );
    // `--trace`: one frame's trace from the nodes' OTLP export, camera to detection.
    let at = demo
        .seen
        .iter()
        .position(|l| l.starts_with("one frame's trace, camera to detection"))
        .unwrap_or_else(|| panic!("a frame trace in:\n{out}"));
    let tree = demo.seen[at..].join("\n");
    assert!(
        tree.contains("panoptes-ingest") && tree.contains("panoptes-worker"),
        "the trace crosses the ingest node and a worker:\n{tree}"
    );
    assert_all_gone(&pids);
}

/// The rest of the line after `key` (`key=value` or `key value`), up to the next space.
fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

/// The id of the first of `pids` whose command line names `program`.
fn pid_of(pids: &[u32], program: &str) -> Option<u32> {
    pids.iter().copied().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| c.split('\0').next().is_some_and(|a| a.ends_with(program)))
    })
}

/// Runs `panoptes` with `args` and the demo's API settings; stdout, or the failure.
fn panoptes(env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(bin_path("panoptes"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("running panoptes");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "panoptes {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_fifth_camera_joins_the_running_demo_and_ctrl_c_stops_it_within_5_s_without_coordinator() {
    let logs = tempfile::tempdir().expect("tempdir");
    let logs_dir = logs.path().join("kept");
    let mut demo = Demo::start(&[
        "--cameras",
        "4",
        "--workers",
        "1",
        "--quiet-detections",
        "--keep-logs",
        logs_dir.to_str().expect("utf-8 path"),
    ]);
    let pids = demo.pids();
    demo.wait_line(Duration::from_secs(180), |l| l.starts_with("[status]"))
        .expect("a status line");
    let out = demo.seen.join("\n");

    // The newcomer's way: the printed `cameras add` line, then the printed tail command.
    let add = demo
        .seen
        .iter()
        .find(|l| l.contains("add a camera"))
        .unwrap_or_else(|| panic!("an `add a camera` line in:\n{out}"))
        .clone();
    let url = word_after(&add, "PANOPTES_URL=").expect("URL");
    let token = word_after(&add, "PANOPTES_API_TOKEN=").expect("token");
    let rtsp = word_after(&add, "cameras add extra0").expect("camera URL");
    let env = [("PANOPTES_URL", url), ("PANOPTES_API_TOKEN", token)];
    let tail = demo
        .seen
        .iter()
        .find(|l| l.contains("detections tail"))
        .unwrap_or_else(|| panic!("a `detections tail` line in:\n{out}"))
        .clone();
    let bootstrap = word_after(&tail, "--bootstrap-servers").expect("bootstrap");
    let topics = demo
        .seen
        .iter()
        .find(|l| l.contains("topics ") && l.contains("frames "))
        .unwrap_or_else(|| panic!("a `topics` line in:\n{out}"))
        .clone();
    let frames = word_after(&topics, "frames").expect("frames topic");
    // One partition per camera: the fifth camera makes the coordinator grow the topic.
    let partitions =
        || panoptes_testkit::kafka::partition_count(bootstrap, frames).expect("metadata");
    assert_eq!(partitions(), 4, "{topics}");
    let added = panoptes(&env, &["cameras", "add", "extra0", rtsp]);
    assert!(added.contains("added extra0 (partition 4)"), "{added}");
    assert_eq!(partitions(), 5, "the frames topic grew for extra0");
    let topic = word_after(&tail, "--topic").expect("topic");
    let t = Instant::now();
    let seen = panoptes(
        &[],
        &[
            "detections",
            "tail",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--camera",
            "extra0",
            "--from-beginning",
            "--limit",
            "1",
            "--stop-after",
            "120s",
            "--format",
            "json",
        ],
    );
    let record: serde_json::Value = serde_json::from_str(seen.trim())
        .unwrap_or_else(|e| panic!("one JSON record from tail ({e}): {seen:?}"));
    assert_eq!(record["camera_id"], "extra0", "{record}");
    assert!(
        record["detections"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{record}"
    );
    eprintln!(
        "extra0's first detection after {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The coordinator dies first; Ctrl-C must still stop everything within 5 s.
    let coordinator = pid_of(&pids, "panoptes-coordinator").expect("the coordinator's pid");
    assert!(
        Command::new("kill")
            .args(["-KILL", &coordinator.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let gone = Instant::now();
    while alive(coordinator) && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pgid = demo.child.id();
    let t = Instant::now();
    let ok = Command::new("kill")
        .args(["-INT", "--", &format!("-{pgid}")])
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = demo.wait_exit(Duration::from_secs(60));
    let stopped = t.elapsed();
    eprintln!(
        "stopped {:.2} s after SIGINT (coordinator killed first): {status}",
        stopped.as_secs_f64()
    );
    let out = demo.seen.join("\n");
    assert!(
        status.success(),
        "demo exited with {status}; output:\n{out}"
    );
    assert!(
        demo.seen.iter().any(|l| l.contains("stopping (SIGINT)")),
        "the demo says why it stops:\n{out}"
    );
    assert!(demo.has("DEMO_SUMMARY "), "{out}");
    assert!(
        stopped < Duration::from_secs(5),
        "stopped in {stopped:?}:\n{out}"
    );
    assert_all_gone(&pids);

    // --keep-logs: every node's log survived the demo.
    for id in ["coord-0", "ingest-0", "worker-0"] {
        let f = logs_dir.join(format!("{id}.log"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} kept and not empty:\n{out}", f.display());
    }
}
