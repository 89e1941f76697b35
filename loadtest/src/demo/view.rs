//! What the demo reads and prints while it runs: committed detection records, frame
//! counts from the frames topic's offsets, the coordinator's status, and the status line.

#![allow(clippy::wildcard_imports)]

use super::*;
use crate::watch::Poller;
use panoptes_testkit::kafka::{KafkaClientConfig, client_config};

/// Detection records read (from the beginning of the demo's own topic), handed over through
/// a bounded channel.
pub(super) struct DetectionReader {
    rx: mpsc::Receiver<DetectionRecord>,
    dropped: Arc<AtomicU64>,
    _poller: Poller,
}

impl DetectionReader {
    pub(super) fn start(bootstrap: &str, topic: &str) -> Result<Self> {
        let c = assigned_consumer(bootstrap, topic)?;
        let (tx, rx) = mpsc::sync_channel(4096);
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        let poller = Poller::spawn("demo-detections", c, Duration::from_millis(100), move |m| {
            let Some(r) = m.payload().and_then(|p| DetectionRecord::from_json(p).ok()) else {
                return;
            };
            if tx.try_send(r).is_err() {
                d.fetch_add(1, Ordering::Relaxed);
            }
        })?;
        Ok(Self {
            rx,
            dropped,
            _poller: poller,
        })
    }
}

pub(super) fn consumer_config(bootstrap: &str) -> Result<ClientConfig> {
    // Connection and security come from the shared client config, like every node's.
    let mut c = client_config(&KafkaClientConfig::plaintext(bootstrap), &[])?;
    c.set("group.id", panoptes_testkit::unique_name("panoptes-demo"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .set("reconnect.backoff.max.ms", "1000");
    Ok(c)
}

pub(super) fn assigned_consumer(bootstrap: &str, topic: &str) -> Result<BaseConsumer> {
    let c: BaseConsumer = consumer_config(bootstrap)?.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&c, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(c)
}

pub(super) fn partitions(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Frames published so far: the sum of the frames topic's high watermarks (the topic is
/// the demo's own and the ingest producer is not transactional, so offsets count records).
pub(super) struct FrameCounter {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    last: AtomicU64,
}

impl FrameCounter {
    pub(super) fn new(bootstrap: &str, topic: &str) -> Result<Self> {
        let consumer: BaseConsumer = consumer_config(bootstrap)?.create()?;
        let partitions = partitions(&consumer, topic)?;
        Ok(Self {
            consumer,
            topic: topic.into(),
            partitions,
            last: AtomicU64::new(0),
        })
    }

    /// The current total (the last known one if the broker does not answer).
    pub(super) fn total(&self) -> u64 {
        let mut sum = 0u64;
        for &p in &self.partitions {
            match self
                .consumer
                .fetch_watermarks(&self.topic, p, Duration::from_secs(1))
            {
                Ok((_, high)) => sum += high.max(0) as u64,
                Err(_) => return self.last.load(Ordering::Relaxed),
            }
        }
        self.last.fetch_max(sum, Ordering::Relaxed).max(sum)
    }
}

/// What the coordinator's `/v1/status` says.
#[derive(Debug, Default)]
pub(super) struct ClusterView {
    cameras: usize,
    streaming: usize,
    lag: Option<i64>,
}

impl ClusterView {
    pub(super) fn read(stack: &Stack) -> Option<Self> {
        // A short timeout: a hung coordinator must not hold up the loop that watches for
        // Ctrl-C.
        let v: serde_json::Value = reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .ok()?
            .get(format!("{}/v1/status", stack.coordinators[0].http))
            .bearer_auth(TEST_TOKEN)
            .send()
            .ok()
            .filter(|r| r.status().is_success())?
            .json()
            .ok()?;
        let cams = v["cameras"].as_array()?;
        let lags: Vec<i64> = v["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["lag"].as_i64()).collect())
            .unwrap_or_default();
        Some(Self {
            cameras: cams.len(),
            streaming: cams
                .iter()
                .filter(|c| c["state"].as_str() == Some("streaming"))
                .count(),
            lag: (!lags.is_empty()).then(|| lags.iter().sum()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The terminal view

pub(super) struct View {
    quiet: bool,
    /// Per camera: records, records with objects.
    per_camera: BTreeMap<String, (u64, u64)>,
    pub(super) records_total: u64,
    /// This status window: records and their end-to-end latencies.
    window_records: u64,
    window_e2e: Vec<f32>,
    window_not_ok: u64,
    /// Newest record with objects per camera, not printed yet.
    pub(super) pending: BTreeMap<String, DetectionRecord>,
    /// When each camera's last line was printed.
    last_shown: BTreeMap<String, Instant>,
    last_line: Option<Instant>,
    shown: u64,
    skipped: u64,
    dropped: u64,
}

impl View {
    pub(super) fn new(args: &DemoArgs) -> Self {
        Self {
            quiet: args.quiet_detections,
            per_camera: (0..args.cameras)
                .map(|i| (format!("cam{i}"), (0, 0)))
                .collect(),
            records_total: 0,
            window_records: 0,
            window_e2e: Vec::new(),
            window_not_ok: 0,
            pending: BTreeMap::new(),
            last_shown: BTreeMap::new(),
            last_line: None,
            shown: 0,
            skipped: 0,
            dropped: 0,
        }
    }

    pub(super) fn take(&mut self, reader: &DetectionReader) {
        self.dropped = reader.dropped.load(Ordering::Relaxed);
        while let Ok(r) = reader.rx.try_recv() {
            self.records_total += 1;
            self.window_records += 1;
            self.window_e2e.push(r.latency.end_to_end_ms);
            if r.status != FrameStatus::Ok {
                self.window_not_ok += 1;
            }
            let e = self.per_camera.entry(r.camera_id.clone()).or_default();
            e.0 += 1;
            if !r.detections.is_empty() {
                e.1 += 1;
                // A newer record replaces one not printed yet: that one is skipped.
                if self.pending.insert(r.camera_id.clone(), r).is_some() {
                    self.skipped += 1;
                }
            }
        }
        if self.quiet {
            self.pending.clear();
        }
    }

    /// Prints at most [`LINES_PER_SECOND`] lines a second, the camera shown longest ago first.
    pub(super) fn print_detections(&mut self) {
        let gap = Duration::from_secs(1) / LINES_PER_SECOND;
        if self.pending.is_empty() || self.last_line.is_some_and(|t| t.elapsed() < gap) {
            return;
        }
        let Some(cam) = self
            .pending
            .keys()
            .min_by_key(|c| self.last_shown.get(*c).copied())
            .cloned()
        else {
            return;
        };
        let Some(r) = self.pending.remove(&cam) else {
            return;
        };
        let now = Instant::now();
        self.last_shown.insert(cam, now);
        self.last_line = Some(now);
        self.shown += 1;
        let mut objs: Vec<String> = r
            .detections
            .iter()
            .take(6)
            .map(|d| format!("{} {:.2}", d.label, d.score))
            .collect();
        if r.detections.len() > 6 {
            objs.push(format!("+{} more", r.detections.len() - 6));
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[detection] {} seq={} {} object(s): {} | e2e {:.0} ms | {} partition {} epoch {}",
            r.camera_id,
            r.seq,
            r.detections.len(),
            objs.join(", "),
            r.latency.end_to_end_ms,
            r.worker_id,
            r.partition,
            r.epoch
        );
        let _ = out.flush();
    }

    pub(super) fn print_status(
        &mut self,
        t: Duration,
        dt: f64,
        fps_in: f64,
        cluster: Option<&ClusterView>,
    ) {
        let mut e2e = std::mem::take(&mut self.window_e2e);
        e2e.sort_by(f32::total_cmp);
        let q = |q: f64| -> String {
            if e2e.is_empty() {
                return "-".into();
            }
            let i = ((e2e.len() as f64 * q).ceil() as usize).clamp(1, e2e.len()) - 1;
            format!("{:.0}", e2e[i])
        };
        let cams = match cluster {
            Some(c) => format!("{}/{}", c.streaming, c.cameras),
            None => "?".into(),
        };
        let lag = cluster
            .and_then(|c| c.lag)
            .map_or_else(|| "?".into(), |l| l.to_string());
        let fps_out = self.window_records as f64 / dt;
        let mut extra = String::new();
        if self.window_not_ok > 0 {
            extra.push_str(&format!(" | not inferred {}", self.window_not_ok));
        }
        if !self.quiet {
            extra.push_str(&format!(
                " | lines shown {} skipped {}",
                self.shown, self.skipped
            ));
        }
        if self.dropped > 0 {
            extra.push_str(&format!(" | unread {}", self.dropped));
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "[status] t={:>4.0}s | cameras up {cams} | fps in {fps_in:.1} out {fps_out:.1} | \
             e2e p50 {} ms p99 {} ms | lag {lag} | records {}{extra}",
            t.as_secs_f64(),
            q(0.5),
            q(0.99),
            self.records_total,
        );
        let _ = out.flush();
        self.window_records = 0;
        self.window_not_ok = 0;
    }

    /// Cameras seen: those registered at the start and those added since.
    pub(super) fn cameras(&self) -> usize {
        self.per_camera.len()
    }

    pub(super) fn cameras_with_objects(&self) -> usize {
        self.per_camera.values().filter(|(_, o)| *o > 0).count()
    }
}
