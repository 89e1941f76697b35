//! `panoptes detections tail`: reads the detections topic the way a downstream service must
//! (`docs/operator.md`, "Reading detections") and prints what it finds, as JSON lines or a
//! readable table.
//!
//! Contract:
//! - the consumer reads with `isolation.level=read_committed`, without a consumer group
//!   (every partition of the topic is assigned by hand, nothing is committed, a partition
//!   added later is picked up within [`REFRESH_EVERY`]);
//! - every record goes through [`contract::Contract`] (epoch rule, then dedup on camera and
//!   seq) before [`contract::Filter`] (camera, class, score, status) decides what is shown;
//! - the Kafka connection is configured like every node's `[kafka]` section
//!   (`panoptes_runtime::config::KafkaClientConfig`: TLS, SASL with the password from its
//!   file or `$PANOPTES_KAFKA_PASSWORD`), from `--kafka-config FILE` and the
//!   `PANOPTES_KAFKA__*` variables, `--bootstrap-servers` last;
//! - a summary of what was read and dropped goes to standard error when it stops (`--limit`,
//!   `--stop-after`, `--exit-at-end`, or the reader of standard output going away).
//!
//! This is an operator tool: it blocks on its own thread, like the rest of the CLI.

pub mod contract;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use panoptes_runtime::config::KafkaClientConfig;
use panoptes_schemas::{DetectionRecord, FrameStatus, topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use self::contract::{Contract, Filter, Tally, Verdict};
use super::client::{CliError, other};

/// How often the topic's partitions are looked up again (a grown topic is picked up).
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One aligned line per record: time, camera, seq, epoch, worker, latency, objects.
    Table,
    /// One detection record per line, as JSON (detections narrowed by the filters).
    Json,
}

/// `panoptes detections tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Kafka bootstrap servers (default: the file's, else `$PANOPTES_KAFKA__BOOTSTRAP_SERVERS`,
    /// else 127.0.0.1:9092).
    #[arg(long, value_name = "HOSTS")]
    pub bootstrap_servers: Option<String>,
    /// TOML file with a `[kafka]` section as every node's: `bootstrap_servers`,
    /// `security_protocol`, `[kafka.tls]`, `[kafka.sasl]`, `properties`.
    #[arg(long, env = "PANOPTES_KAFKA_CONFIG", value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,
    /// Detections topic.
    #[arg(long, default_value = topics::DETECTIONS)]
    pub topic: String,
    /// Show only this camera (repeatable).
    #[arg(long = "camera", value_name = "ID")]
    pub cameras: Vec<String>,
    /// Show only detections of this class, by label or class id (repeatable).
    #[arg(long = "class", value_name = "LABEL")]
    pub classes: Vec<String>,
    /// Show only detections scoring at least this (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_score, value_name = "SCORE")]
    pub min_score: f32,
    /// Also show records without a matching detection, and frames not inferred (stale, shed).
    #[arg(long)]
    pub with_empty: bool,
    /// `table` or `json` (one record per line).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Read the topic from its start instead of from now on.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop once every partition is read up to where it ended when the command started
    /// (with --from-beginning: "what is there now").
    #[arg(long)]
    pub exit_at_end: bool,
    /// Stop after showing this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Stop after this long (`30s`, `5m`).
    #[arg(long, value_name = "DURATION", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub stop_after: Option<Duration>,
}

fn parse_score(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within 0..=1"))
    }
}

/// The file given with `--kafka-config`: only a `[kafka]` section.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// How to reach and secure the cluster.
    pub kafka: TailKafka,
}

/// `[kafka]` of [`TailConfig`]: the connection keys every node's `[kafka]` shares.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailKafka {
    /// Bootstrap servers and security.
    #[serde(flatten)]
    pub client: KafkaClientConfig,
}

impl TailArgs {
    /// The Kafka connection: file, then `PANOPTES_KAFKA__*`, then `--bootstrap-servers`.
    pub fn kafka(&self) -> Result<KafkaClientConfig, CliError> {
        let file: TailConfig =
            panoptes_runtime::config::load(self.kafka_config.as_deref(), &["kafka"])
                .map_err(other)?;
        let mut kafka = file.kafka.client;
        if let Some(b) = &self.bootstrap_servers {
            kafka.bootstrap_servers.clone_from(b);
        }
        kafka.validate().map_err(other)?;
        Ok(kafka)
    }

    fn filter(&self) -> Filter {
        Filter {
            cameras: self.cameras.clone(),
            classes: self.classes.clone(),
            min_score: self.min_score,
            with_empty: self.with_empty,
        }
    }
}

/// Runs the command, writing records to `out`; the summary is returned.
pub fn run(args: &TailArgs, out: &mut dyn Write) -> Result<Tally, CliError> {
    let kafka = args.kafka()?;
    let mut client: ClientConfig = kafka
        .connection_properties()
        .map_err(other)?
        .into_iter()
        .collect();
    client
        .set("group.id", format!("panoptes-tail-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false");
    client.extend(kafka.override_properties());
    let consumer: BaseConsumer = client
        .create()
        .map_err(|e| CliError::Other(format!("kafka consumer: {e}")))?;
    let mut reader = Reader {
        consumer,
        topic: args.topic.clone(),
        assigned: HashSet::new(),
        ends: BTreeMap::new(),
        start: if args.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        },
    };
    reader.refresh(true)?;
    if reader.assigned.is_empty() {
        return Err(CliError::Other(format!(
            "topic {} has no partitions on {} (is it the right cluster and topic name?)",
            args.topic, kafka.bootstrap_servers
        )));
    }
    let filter = args.filter();
    let mut contract = Contract::default();
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut refreshed = Instant::now();
    if args.format == Format::Table && write_line(out, &table_header())? {
        return Ok(tally);
    }
    loop {
        if args.stop_after.is_some_and(|d| started.elapsed() >= d)
            || args.limit.is_some_and(|n| tally.shown >= n)
            || (args.exit_at_end && reader.at_end())
        {
            return Ok(tally);
        }
        if refreshed.elapsed() >= REFRESH_EVERY {
            reader.refresh(false)?;
            refreshed = Instant::now();
        }
        let Some(msg) = reader.consumer.poll(POLL) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                eprintln!("warning: kafka: {e}");
                continue;
            }
        };
        tally.read += 1;
        let Some(record) = decode(msg.payload()) else {
            tally.malformed += 1;
            continue;
        };
        match contract.observe(&record) {
            Verdict::Superseded { .. } => {
                tally.superseded += 1;
                continue;
            }
            Verdict::Duplicate => {
                tally.duplicates += 1;
                continue;
            }
            Verdict::Untracked => tally.untracked += 1,
            Verdict::Accept => {}
        }
        let Some(shown) = filter.apply(&record) else {
            tally.filtered += 1;
            continue;
        };
        let line = match args.format {
            Format::Json => serde_json::to_string(&shown).map_err(other)?,
            Format::Table => table_row(&shown),
        };
        if write_line(out, &line)? {
            return Ok(tally);
        }
        tally.shown += 1;
    }
}

/// Writes one line; `true` when the reader went away (a closed pipe ends the command).
fn write_line(out: &mut dyn Write, line: &str) -> Result<bool, CliError> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(other(e)),
    }
}

/// A valid detection record, or `None`.
fn decode(payload: Option<&[u8]>) -> Option<DetectionRecord> {
    let r: DetectionRecord = serde_json::from_slice(payload?).ok()?;
    r.validate().ok()?;
    Some(r)
}

/// The consumer and its manual assignment.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    assigned: HashSet<i32>,
    /// High watermark of every partition when it was first assigned (for `--exit-at-end`).
    ends: BTreeMap<i32, i64>,
    start: Offset,
}

impl Reader {
    /// Assigns partitions not assigned yet: at `start` the first time, from the beginning
    /// afterwards (a partition that appears later holds only records newer than the command).
    fn refresh(&mut self, first: bool) -> Result<(), CliError> {
        let meta = self
            .consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|e| CliError::Other(format!("kafka metadata of {}: {e}", self.topic)))?;
        let Some(t) = meta.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(());
        };
        let mut list = TopicPartitionList::new();
        for p in t.partitions() {
            if self.assigned.contains(&p.id()) {
                continue;
            }
            let offset = if first { self.start } else { Offset::Beginning };
            list.add_partition_offset(&self.topic, p.id(), offset)
                .map_err(other)?;
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p.id(), METADATA_TIMEOUT)
                .map_err(|e| CliError::Other(format!("kafka watermarks: {e}")))?;
            self.ends.insert(p.id(), high);
        }
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer
            .incremental_assign(&list)
            .map_err(|e| CliError::Other(format!("kafka assign: {e}")))?;
        for e in list.elements() {
            self.assigned.insert(e.partition());
        }
        Ok(())
    }

    /// Whether every partition's position reached its end of the start (an empty partition,
    /// or one started at its end, is there at once).
    fn at_end(&self) -> bool {
        if self.start == Offset::End {
            return true;
        }
        let Ok(pos) = self.consumer.position() else {
            return false;
        };
        self.ends.iter().all(|(&p, &end)| {
            end <= 0
                || pos
                    .find_partition(&self.topic, p)
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= end))
        })
    }
}

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<23}  {:<16}  {:>8}  {:>5}  {:<12}  {:>7}  OBJECTS",
        "CAPTURED (UTC)", "CAMERA", "SEQ", "EPOCH", "WORKER", "E2E-MS"
    )
}

/// One record as a table line: capture time, camera, seq, epoch, worker, end-to-end latency
/// and its objects (`label score [x1,y1,x2,y2]`, pixels of the analysed frame).
pub fn table_row(r: &DetectionRecord) -> String {
    let time = UNIX_EPOCH + Duration::from_micros(r.capture_time_us.max(0) as u64);
    let time = humantime_serde::re::humantime::format_rfc3339_millis(time).to_string();
    let time = time.trim_end_matches('Z').replace('T', " ");
    let objects = if r.status != FrameStatus::Ok {
        format!("({})", r.status.as_str())
    } else if r.detections.is_empty() {
        "-".into()
    } else {
        r.detections
            .iter()
            .map(|d| {
                let [x1, y1, x2, y2] = d.bbox;
                format!(
                    "{} {:.2} [{x1:.0},{y1:.0},{x2:.0},{y2:.0}]",
                    d.label, d.score
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{time:<23}  {:<16}  {:>8}  {:>5}  {:<12}  {:>7.1}  {objects}",
        r.camera_id, r.seq, r.epoch, r.worker_id, r.latency.end_to_end_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, DetectionsCmd};
    use clap::Parser;

    fn args(argv: &[&str]) -> Result<TailArgs, clap::Error> {
        let mut full = vec!["panoptes", "detections", "tail"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full)?;
        match cli.command {
            Command::Detections(DetectionsCmd::Tail(a)) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn options_parse_and_scores_are_checked() {
        let a = args(&[
            "--camera",
            "a",
            "--camera",
            "b",
            "--class",
            "person",
            "--min-score",
            "0.5",
            "--format",
            "json",
            "--stop-after",
            "2m",
            "--limit",
            "3",
        ])
        .unwrap();
        assert_eq!(a.cameras, ["a", "b"]);
        assert_eq!(a.format, Format::Json);
        assert_eq!(a.stop_after, Some(Duration::from_secs(120)));
        assert_eq!(a.topic, topics::DETECTIONS);
        assert!(args(&["--min-score", "1.5"]).is_err());
        assert!(args(&["--format", "yaml"]).is_err());
    }

    #[test]
    fn the_kafka_file_is_a_nodes_kafka_section() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tail.toml");
        std::fs::write(
            &f,
            "[kafka]\nbootstrap_servers = \"k1:9093\"\nsecurity_protocol = \"ssl\"\n[kafka.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
        )
        .unwrap();
        let path = f.to_str().unwrap();
        // TLS without a readable CA fails closed, naming the setting.
        let err = args(&["--kafka-config", path])
            .unwrap()
            .kafka()
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.tls"), "{err}");
        std::fs::write(&f, "[kafka]\nbootstrap_servers = \"k1:9092\"\n").unwrap();
        let k = args(&["--kafka-config", path]).unwrap().kafka().unwrap();
        assert_eq!(k.bootstrap_servers, "k1:9092");
        let k = args(&["--kafka-config", path, "--bootstrap-servers", "k2:9092"])
            .unwrap()
            .kafka()
            .unwrap();
        assert_eq!(k.bootstrap_servers, "k2:9092");
        std::fs::write(&f, "[kafka]\nbootstrap = \"k1:9092\"\n").unwrap();
        assert!(args(&["--kafka-config", path]).unwrap().kafka().is_err());
        std::fs::write(&f, "[worker]\nid = \"w\"\n").unwrap();
        assert!(args(&["--kafka-config", path]).unwrap().kafka().is_err());
    }

    #[test]
    fn table_rows_line_up_with_the_header() {
        let r: DetectionRecord = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "camera_id": "dock-door-3", "seq": 1207,
            "capture_time_us": 1_796_050_931_400_000_i64, "frame_width": 640, "frame_height": 360,
            "model": {"name": "m", "version": "1"}, "status": "ok",
            "detections": [{"class_id": 0, "label": "person", "score": 0.91,
                "bbox": [112.0, 40.0, 170.0, 220.0],
                "bbox_norm": [0.175, 0.111_111, 0.265_625, 0.611_111]}],
            "latency": {"queue_ms": 1.0, "decode_ms": 1.0, "batch_wait_ms": 0.0,
                "inference_ms": 50.0, "postprocess_ms": 1.0, "end_to_end_ms": 84.2},
            "epoch": 5, "worker_id": "w-1", "partition": 0, "offset": 9,
            "published_time_us": 1_796_050_931_500_000_i64
        }))
        .unwrap();
        let row = table_row(&r);
        assert_eq!(
            row,
            "2026-11-30 15:02:11.400  dock-door-3           1207      5  w-1              84.2  person 0.91 [112,40,170,220]"
        );
        assert_eq!(row.find("dock"), table_header().find("CAMERA"));
        assert_eq!(row.find("person"), table_header().find("OBJECTS"));
    }
}
