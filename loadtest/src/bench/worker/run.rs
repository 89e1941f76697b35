//! The processes of `panoptes-bench-worker`: images per second of `panoptes-worker` against a tight libtorch
//! forward loop over pre-decoded, pre-letterboxed tensors (same model, batch size and
//! intra-op threads), reported as a ratio measured in the same run; then end-to-end latency
//! at half and full load. See `docs/benchmarks.md`.
//!
//! Per batch size B: the baseline times `forward` on one `[B, 3, H, W]` tensor built from the
//! synthetic frames; the worker (fresh process and topics, `max_batch = B`, staleness
//! `lossless`) consumes a topic pre-filled with `B + images` frames; after its first batch is
//! published, the window runs until the last record, counted from
//! `panoptes_worker_records_total{status="ok"}`. Latency: frames produced at a steady 50 % and
//! 100 % of the worker's measured throughput (at the latency batch size), capture time = now
//! at produce time, `latency.end_to_end_ms` read back from every detection record.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use panoptes_models::{self as models, GeneratedModel};
use panoptes_schemas::DetectionRecord;
use panoptes_testkit::kafka::{FrameProducer, frame_headers};
use panoptes_testkit::kafka::{KafkaClientConfig, client_config};
use panoptes_testkit::{DevBroker, Node, Topics, metric_value, unique_name};
use panoptes_testkit_stack::worker;
use panoptes_workers::config::{StalePolicy, WorkerConfig, parse_device};
use panoptes_workers::model::LoadedModel;
use panoptes_workers::preprocess::InputBatch;
use panoptes_workers::tch::{self, Device};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

pub(crate) mod consume;

use super::{
    LatencyPoint, StageMeans, TARGET_RATIO, ThroughputPoint, WorkerBenchParams, WorkerBenchReport,
    machine_info,
};
use crate::bench::scaffold::{self, CommonArgs, RunInfo};

const OK_RECORDS: &str = "panoptes_worker_records_total{status=\"ok\"}";

/// The model both sides run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Model {
    /// The YOLOv8n-sized network (640×640 input).
    Yolov8nLike,
    /// The cheap reference detector.
    Reference,
}

/// Arguments of `panoptes-bench-worker`.
#[derive(Debug, clap::Parser)]
#[command(
    about = "Compare panoptes-worker with a bare libtorch forward loop (images/s, as a ratio), then end-to-end latency",
    args_override_self = true
)]
pub struct WorkerArgs {
    /// Device of both sides: `cpu`, or `cuda:N` on a GPU machine (`LD_LIBRARY_PATH` must name
    /// the `torch/lib` of its PyTorch 2.11.0; see scripts/gpu-check.sh).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Model [default: yolov8n-like; --quick: reference].
    #[arg(long, value_enum)]
    model: Option<Model>,
    /// Batch sizes, comma separated [default: 1,4,8,16; --quick: 1,4].
    #[arg(long, value_delimiter = ',')]
    batches: Option<Vec<usize>>,
    /// libtorch intra-op threads of both sides [default: CPUs available].
    #[arg(long)]
    threads: Option<usize>,
    /// Worker decode threads.
    #[arg(long, default_value_t = 2)]
    decode_threads: usize,
    /// Worker max_wait, milliseconds.
    #[arg(long, default_value_t = 20)]
    max_wait_ms: u64,
    /// Images timed per throughput point after the warm-up batch [default: 64; --quick: 200].
    #[arg(long)]
    images: Option<usize>,
    /// Frames per latency point [default: 60; --quick: 100].
    #[arg(long)]
    latency_frames: Option<usize>,
    /// max_batch of the worker in the latency phases [default: largest batch size].
    #[arg(long)]
    latency_batch: Option<usize>,
    /// Frames of the consume-rate phase (worker with a no-op model vs a bare consumer);
    /// 0 skips it [default: 1000; --quick: 300].
    #[arg(long)]
    consume_frames: Option<usize>,
    /// Extra librdkafka property `KEY=VALUE` of the consume phase's worker (repeatable; for
    /// experiments with the consumer's fetch settings).
    #[arg(long = "consume-property", value_name = "KEY=VALUE")]
    consume_properties: Vec<String>,
    /// `partition_queue` of the workers of the throughput and latency phases (their in-flight
    /// bound per partition; a fast GPU needs more than the default to not wait on Kafka).
    #[arg(long, default_value_t = 256)]
    partition_queue: usize,
    /// `partition_queue` of the consume phase's worker [default: the worker's default].
    #[arg(long)]
    consume_partition_queue: Option<usize>,
    /// Run only the consume-rate phase (no throughput or latency points).
    #[arg(long)]
    consume_only: bool,
    /// Use the development broker's own listeners, whose fetches wait the consumer's whole
    /// `fetch.wait.max.ms` (the latency sawtooth), instead of `--prompt-fetch`.
    #[arg(long)]
    no_prompt_fetch: bool,
    /// Share of the synthetic frames whose `traceparent` is marked sampled (the product's
    /// `[tracing] sample_ratio` default); matters when the workers export (`--otlp`).
    #[arg(long, default_value_t = 0.01)]
    trace_sample: f64,
    /// OTLP/HTTP endpoint the benchmark's workers export spans to [default: tracing off].
    #[arg(long)]
    otlp: Option<String>,
    /// `--out` (worker-bench.json and .md), `--quick` (reference model, batches 1,4),
    /// `--check` (worker / baseline below 0.85 at any batch size).
    #[command(flatten)]
    common: CommonArgs,
}

impl WorkerArgs {
    fn params(&self, model_name: &str) -> WorkerBenchParams {
        let batch_sizes = self.batches.clone().unwrap_or_else(|| {
            if self.common.quick {
                vec![1, 4]
            } else {
                vec![1, 4, 8, 16]
            }
        });
        let nproc = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1);
        WorkerBenchParams {
            model: model_name.to_string(),
            latency_batch: self
                .latency_batch
                .unwrap_or_else(|| batch_sizes.iter().copied().max().unwrap_or(1)),
            batch_sizes,
            intra_op_threads: self.threads.unwrap_or(nproc),
            decode_threads: self.decode_threads,
            max_wait_ms: self.max_wait_ms,
            images: self
                .images
                .unwrap_or(if self.common.quick { 200 } else { 64 }),
            latency_frames: self
                .latency_frames
                .unwrap_or(if self.common.quick { 100 } else { 60 }),
            frame_width: 640,
            frame_height: 360,
            device: self.device.clone(),
            partition_queue: self.partition_queue,
            consume_frames: self.consume_frames.unwrap_or(if self.common.quick {
                300
            } else {
                1000
            }),
            prompt_fetch: !self.no_prompt_fetch,
        }
    }
}

/// A few synthetic 640×360 JPEG frames (gradient background, bright boxes), reused.
fn synthetic_frames(w: u32, h: u32, n: usize) -> Result<Vec<Vec<u8>>> {
    (0..n)
        .map(|k| {
            let mut rgb = vec![0u8; (w * h * 3) as usize];
            for y in 0..h {
                for x in 0..w {
                    let i = ((y * w + x) * 3) as usize;
                    let in_box =
                        |bx: u32, by: u32| x >= bx && x < bx + 80 && y >= by && y < by + 120;
                    let boxed = in_box(60 + 100 * k as u32, 100) || in_box(400, 60 + 40 * k as u32);
                    let v = if boxed {
                        [240, 230, 40]
                    } else {
                        [(x / 3) as u8, (y / 2) as u8, 90]
                    };
                    rgb[i..i + 3].copy_from_slice(&v);
                }
            }
            let mut out = Vec::new();
            jpeg_encoder::Encoder::new(&mut out, 80)
                .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
                .context("encoding a synthetic frame")?;
            Ok(out)
        })
        .collect()
}

/// Baseline: `forward` on one pre-built `[batch, 3, H, W]` tensor, repeated, on a fresh
/// thread that sets its intra-op threads and loads the model itself, like the worker's
/// inference thread.
fn run_baseline(
    model: &GeneratedModel,
    frames: &[Vec<u8>],
    batch: usize,
    images: usize,
    threads: usize,
    device: Device,
) -> Result<(usize, f64)> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tch::set_num_threads(threads as i32);
            panoptes_workers::cuda::ensure_device(device)?;
            let loaded = LoadedModel::load(&model.model_path, &model.manifest_path, device)?;
            baseline_loop(&loaded, frames, batch, images)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("baseline thread panicked"))?
    })
}

fn baseline_loop(
    model: &LoadedModel,
    frames: &[Vec<u8>],
    batch: usize,
    images: usize,
) -> Result<(usize, f64)> {
    let mut input = InputBatch::for_manifest(model.manifest(), batch);
    for slot in 0..batch {
        input.set_jpeg(slot, &frames[slot % frames.len()])?;
    }
    // On a GPU the pre-decoded batch lives there already: only the forward pass is timed.
    let tensor = input.to_tensor(batch).to_device(model.device());
    // Warm-up: the first pass at a new batch size pays libtorch's one-off costs.
    let _warm = model.forward(&tensor)?;
    sync(model.device());
    let iterations = images.div_ceil(batch).max(1);
    let t0 = Instant::now();
    for _ in 0..iterations {
        let out = model.forward(&tensor)?;
        // Touch the result so the work is not elided; on CUDA wait for it, as the worker
        // does when it copies the output back for NMS.
        let _ = out.size();
        sync(model.device());
    }
    Ok((iterations * batch, t0.elapsed().as_secs_f64()))
}

/// Waits for the device's queued kernels (a no-op on the CPU).
fn sync(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Sends `n` frames of `camera` (seq from 0), cycling through `frames`, and waits for them.
fn send_frames(
    p: &FrameProducer,
    topic: &str,
    camera: &str,
    n: usize,
    frames: &[Vec<u8>],
) -> Result<()> {
    for seq in 0..n {
        send_frame(p, topic, camera, seq as u64, &frames[seq % frames.len()])?;
    }
    p.flush()
}

/// `--trace-sample` and `--otlp` (set once in [`main`]; read where frames and workers are made).
static TRACE: std::sync::OnceLock<(f64, Option<String>)> = std::sync::OnceLock::new();

/// One 640×360 JPEG frame captured now, to partition 0, sampled per `--trace-sample`.
fn send_frame(p: &FrameProducer, topic: &str, camera: &str, seq: u64, jpeg: &[u8]) -> Result<()> {
    let mut h = frame_headers(camera, seq, (640, 360), Duration::ZERO);
    let ratio = TRACE.get().map_or(0.01, |t| t.0);
    h.traceparent = crate::bench::trace_overhead::frame_traceparent(0, seq, ratio);
    p.send(topic, 0, &h, jpeg)
}

fn producer(bootstrap: &str) -> Result<FrameProducer> {
    FrameProducer::new(
        bootstrap,
        &[("linger.ms", "1"), ("message.max.bytes", "4000000")],
    )
}

/// A running worker, stopped gracefully when dropped.
struct Worker {
    node: Node,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.node.proc.terminate(Duration::from_secs(10));
    }
}

impl Worker {
    /// A fresh worker (own id and consumer group) on topics `t`: `max_batch`, lossless
    /// staleness and the benchmark's threads.
    fn start(
        bootstrap: &str,
        t: &Topics,
        model: &GeneratedModel,
        params: &WorkerBenchParams,
        max_batch: usize,
    ) -> Result<Self> {
        // Room for a whole batch of the largest size plus decode look-ahead.
        Self::start_with(bootstrap, t, model, params, max_batch, |c| {
            c.partition_queue = params.partition_queue;
        })
    }

    /// [`Worker::start`] with the worker's default `partition_queue`, then `adjust`.
    fn start_with(
        bootstrap: &str,
        t: &Topics,
        model: &GeneratedModel,
        params: &WorkerBenchParams,
        max_batch: usize,
        adjust: impl FnOnce(&mut WorkerConfig),
    ) -> Result<Self> {
        let mut c = worker::config(
            &unique_name("bench-worker"),
            bootstrap,
            t,
            &unique_name("bench-group"),
            &model.model_path,
            &model.manifest_path,
        );
        c.decode_threads = params.decode_threads;
        c.model.intra_op_threads = params.intra_op_threads;
        c.model.device = params.device.clone();
        c.batching.max_batch = max_batch;
        c.batching.max_wait = Duration::from_millis(params.max_wait_ms);
        c.staleness.policy = StalePolicy::Lossless;
        if let Some(url) = TRACE.get().and_then(|t| t.1.clone()) {
            c.tracing.endpoint = Some(url);
            c.tracing.protocol = panoptes_runtime::trace::OtlpProtocol::HttpProtobuf;
        }
        adjust(&mut c);
        let node = worker::start(&c, &[], Duration::from_secs(60))?;
        Ok(Self { node })
    }

    /// (ok records, batch-size histogram sum, count).
    fn counters(&self) -> Option<(f64, f64, f64)> {
        let text = scaffold::metrics_text(&self.node.http)?;
        Some((
            metric_value(&text, OK_RECORDS).unwrap_or(0.0),
            metric_value(&text, "panoptes_worker_batch_size_sum").unwrap_or(0.0),
            metric_value(&text, "panoptes_worker_batch_size_count").unwrap_or(0.0),
        ))
    }

    /// Polls until `ok >= n`; returns the counters and the instant they were seen.
    fn wait_ok(&mut self, n: usize, timeout: Duration) -> Result<((f64, f64, f64), Instant)> {
        self.wait_ok_with(n, timeout, |_| Ok(()))
    }

    /// [`Worker::wait_ok`], topping `feeder` up at every look.
    fn wait_ok_feeding(
        &mut self,
        n: usize,
        timeout: Duration,
        feeder: &mut Feeder<'_>,
    ) -> Result<((f64, f64, f64), Instant)> {
        self.wait_ok_with(n, timeout, |ok| feeder.top_up(ok))
    }

    fn wait_ok_with(
        &mut self,
        n: usize,
        timeout: Duration,
        mut on_look: impl FnMut(usize) -> Result<()>,
    ) -> Result<((f64, f64, f64), Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            let counters = self.counters();
            if let Some(c) = counters
                && c.0 >= n as f64
            {
                return Ok((c, Instant::now()));
            }
            on_look(counters.map_or(0, |c| c.0 as usize))?;
            if !self.node.proc.is_running() {
                bail!("panoptes-worker exited:\n{}", self.node.proc.log_text());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {n} ok records");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn mean_batch(a: (f64, f64, f64), b: (f64, f64, f64)) -> f64 {
    let n = b.2 - a.2;
    if n > 0.0 { (b.1 - a.1) / n } else { 0.0 }
}

/// Keeps at most `backlog` unprocessed frames in a topic while a worker reads it: the
/// development broker retains only about 5 MB per partition (older records are dropped), so a
/// long run cannot be produced up front.
struct Feeder<'a> {
    producer: FrameProducer,
    topic: String,
    frames: &'a [Vec<u8>],
    sent: usize,
    total: usize,
    backlog: usize,
}

impl<'a> Feeder<'a> {
    fn new(bootstrap: &str, topic: &str, frames: &'a [Vec<u8>], total: usize) -> Result<Self> {
        let largest = frames.iter().map(Vec::len).max().unwrap_or(1).max(1);
        Ok(Self {
            // Few, large record batches: the development broker answers a Fetch with one
            // record batch per partition, so the batches' size bounds what a worker reads
            // per round trip.
            producer: FrameProducer::new(
                bootstrap,
                &[
                    ("linger.ms", "5"),
                    ("batch.size", "3000000"),
                    ("message.max.bytes", "4000000"),
                ],
            )?,
            topic: topic.to_string(),
            frames,
            sent: 0,
            total,
            // 3 MB of frames: well inside the retained 5 MB, and enough that a fast (GPU)
            // worker never waits for the 25 ms top-up.
            backlog: (3_000_000 / largest).clamp(32, 2000),
        })
    }

    /// Once the worker is half way through the backlog, sends frames until `done + backlog`
    /// (or the total) are out; waits for them when the last one was sent.
    fn top_up(&mut self, done: usize) -> Result<()> {
        if self.sent > done + self.backlog / 2 {
            return Ok(());
        }
        let want = (done + self.backlog).min(self.total);
        while self.sent < want {
            let jpeg = &self.frames[self.sent % self.frames.len()];
            send_frame(&self.producer, &self.topic, "cam0", self.sent as u64, jpeg)?;
            self.sent += 1;
            if self.sent == self.total {
                self.producer.flush()?;
            }
        }
        Ok(())
    }
}

fn run_worker_point(
    broker: &DevBroker,
    model: &GeneratedModel,
    frames: &[Vec<u8>],
    params: &WorkerBenchParams,
    batch: usize,
) -> Result<(usize, f64, f64)> {
    let t = broker.create_topics(1)?;
    let measured = params.images.div_ceil(batch).max(1) * batch;
    let total = batch + measured;
    let mut feeder = Feeder::new(&broker.bootstrap, &t.frames, frames, total)?;
    feeder.top_up(0)?;
    let mut worker = Worker::start(&broker.bootstrap, &t, model, params, batch)?;
    let timeout = Duration::from_secs(600);
    // The window opens once the first batch is published (consumer started, caches warm).
    let (c0, t0) = worker.wait_ok_feeding(batch, timeout, &mut feeder)?;
    let (c1, t1) = worker.wait_ok_feeding(total, timeout, &mut feeder)?;
    let images = (c1.0 - c0.0) as usize;
    if images == 0 {
        bail!(
            "batch {batch}: every image was done between two looks at the worker: raise --images"
        );
    }
    Ok((images, (t1 - t0).as_secs_f64(), mean_batch(c0, c1)))
}

/// A plain consumer (librdkafka defaults, a fresh group) assigned partition 0 of `topic`
/// from the beginning.
pub(super) fn partition_reader(bootstrap: &str, topic: &str) -> Result<BaseConsumer> {
    let group = unique_name("bench-reader");
    let consumer: BaseConsumer = client_config(
        &KafkaClientConfig::plaintext(bootstrap),
        &[("group.id", &group), ("enable.auto.commit", "false")],
    )?
    .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Reads every detection record of `topic` until `n` have arrived.
fn read_detections(bootstrap: &str, topic: &str, n: usize) -> Result<Vec<DetectionRecord>> {
    let consumer = partition_reader(bootstrap, topic)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n {
        if Instant::now() > deadline {
            bail!("read {} of {n} detection records", out.len());
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            let record: DetectionRecord = serde_json::from_slice(m.payload().unwrap_or_default())
                .context("parsing a detection record")?;
            out.push(record);
        }
    }
    Ok(out)
}

/// Means of the stage latencies `records` report.
fn stage_means(records: &[&DetectionRecord]) -> StageMeans {
    let avg = |f: fn(&DetectionRecord) -> f32| {
        records.iter().map(|r| f64::from(f(r))).sum::<f64>() / records.len().max(1) as f64
    };
    StageMeans {
        queue: avg(|r| r.latency.queue_ms),
        decode: avg(|r| r.latency.decode_ms),
        batch_wait: avg(|r| r.latency.batch_wait_ms),
        inference: avg(|r| r.latency.inference_ms),
        postprocess: avg(|r| r.latency.postprocess_ms),
        end_to_end: avg(|r| r.latency.end_to_end_ms),
    }
}

fn run_latency(
    broker: &DevBroker,
    model: &GeneratedModel,
    frames: &[Vec<u8>],
    params: &WorkerBenchParams,
    full_ips: f64,
) -> Result<Vec<LatencyPoint>> {
    let t = broker.create_topics(1)?;
    let mut worker = Worker::start(&broker.bootstrap, &t, model, params, params.latency_batch)?;
    let p = producer(&broker.bootstrap)?;
    // Warm-up: one batch before the phases.
    send_frames(&p, &t.frames, "warmup", params.latency_batch, frames)?;
    let mut expected = params.latency_batch;
    worker.wait_ok(expected, Duration::from_secs(300))?;
    let loads = [0.5, 1.0];
    let mut phases = Vec::new();
    for load in loads {
        let camera = format!("load{:.0}", load * 100.0);
        let rate = full_ips * load;
        let (c0, _) = worker.wait_ok(expected, Duration::from_secs(300))?;
        let start = Instant::now();
        for i in 0..params.latency_frames {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            send_frame(&p, &t.frames, &camera, i as u64, &frames[i % frames.len()])?;
        }
        p.flush()?;
        expected += params.latency_frames;
        let (c1, _) = worker.wait_ok(expected, Duration::from_secs(600))?;
        eprintln!(
            "latency {:>3.0} %: {} frames at {:.2} fps in {:.1} s, mean batch {:.1}",
            load * 100.0,
            params.latency_frames,
            rate,
            start.elapsed().as_secs_f64(),
            mean_batch(c0, c1)
        );
        phases.push((load, camera, rate, mean_batch(c0, c1)));
    }
    let records = read_detections(&broker.bootstrap, &t.detections, expected)?;
    Ok(phases
        .into_iter()
        .map(|(load, camera, rate, mean)| {
            let mine: Vec<&DetectionRecord> =
                records.iter().filter(|r| r.camera_id == camera).collect();
            let mut lat: Vec<f64> = mine
                .iter()
                .map(|r| f64::from(r.latency.end_to_end_ms))
                .collect();
            lat.sort_by(f64::total_cmp);
            LatencyPoint {
                load,
                rate_fps: rate,
                frames: lat.len(),
                end_to_end_ms: lat,
                mean_batch: mean,
                stage_mean_ms: stage_means(&mine),
                queue_ms: mine.iter().map(|r| f64::from(r.latency.queue_ms)).collect(),
            }
        })
        .collect())
}

fn generate(model: Model, dir: &Path) -> Result<GeneratedModel> {
    std::fs::create_dir_all(dir)?;
    Ok(match model {
        Model::Yolov8nLike => models::generate_yolov8n_like(dir, 8)?,
        Model::Reference => models::generate_reference(dir)?,
    })
}

/// Runs the benchmark: generates the model, measures every batch size, then latency, and
/// writes the reports.
pub fn main(args: WorkerArgs) -> Result<()> {
    let started = Instant::now();
    let _ = TRACE.set((args.trace_sample, args.otlp.clone()));
    let which = args.model.unwrap_or(if args.common.quick {
        Model::Reference
    } else {
        Model::Yolov8nLike
    });
    let run = RunInfo::now("; libtorch is the prebuilt wheel either way");
    let device = parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let machine = machine_info(&args.device);
    let dir = std::env::temp_dir().join(unique_name("panoptes-bench-models"));
    let model = generate(which, &dir).context("generating the model")?;
    let params = args.params(&model.manifest.name);
    if params.batch_sizes.is_empty() || params.batch_sizes.contains(&0) {
        bail!("batch sizes must be positive");
    }
    eprintln!(
        "panoptes-bench-worker: {} batches {:?}, {} intra-op threads, {} images per point; {} CPUs ({})",
        params.model,
        params.batch_sizes,
        params.intra_op_threads,
        params.images,
        machine.host.nproc,
        machine.host.cpu_model
    );
    let frames = synthetic_frames(params.frame_width, params.frame_height, 4)?;
    let broker = if params.prompt_fetch {
        DevBroker::start_with_args(&["--brokers", "1", "--exit-on-stdin-eof", "--prompt-fetch"])?
    } else {
        DevBroker::start(1)?
    };
    let consume = if params.consume_frames > 0 {
        let noop = consume::generate_noop(&dir)?;
        let properties = args
            .consume_properties
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--consume-property {kv:?} is not KEY=VALUE"))
            })
            .collect::<Result<Vec<_>>>()?;
        Some(consume::run_consume(
            &broker,
            &noop,
            &params,
            params.consume_frames,
            &properties,
            args.consume_partition_queue,
        )?)
    } else {
        None
    };
    let (throughput, latency) = if args.consume_only {
        (Vec::new(), Vec::new())
    } else {
        let throughput = run_throughput(&broker, &model, &frames, &params, device)?;
        let full_ips = throughput
            .iter()
            .find(|p| p.batch == params.latency_batch)
            .map(ThroughputPoint::worker_ips)
            .context("--latency-batch must be one of the batch sizes")?;
        let latency = run_latency(&broker, &model, &frames, &params, full_ips)?;
        (throughput, latency)
    };
    let _ = std::fs::remove_dir_all(&dir);

    let report = WorkerBenchReport {
        run,
        duration_s: started.elapsed().as_secs_f64(),
        machine,
        params,
        throughput,
        latency,
        consume,
        target_ratio: TARGET_RATIO,
    };
    eprintln!("run took {:.0} s", report.duration_s);
    scaffold::publish(&args.common, &report)?;
    scaffold::exit_if_missed(
        &args.common,
        report.within_target(),
        &format!("worker / baseline below the target {TARGET_RATIO:.2}"),
    );
    Ok(())
}

/// Baseline then worker at every batch size.
fn run_throughput(
    broker: &DevBroker,
    model: &GeneratedModel,
    frames: &[Vec<u8>],
    params: &WorkerBenchParams,
    device: Device,
) -> Result<Vec<ThroughputPoint>> {
    let mut throughput = Vec::new();
    for &batch in &params.batch_sizes {
        let (baseline_images, baseline_s) = run_baseline(
            model,
            frames,
            batch,
            params.images,
            params.intra_op_threads,
            device,
        )?;
        let (worker_images, worker_s, worker_mean_batch) =
            run_worker_point(broker, model, frames, params, batch)
                .with_context(|| format!("worker at batch {batch}"))?;
        let point = ThroughputPoint {
            batch,
            baseline_images,
            baseline_s,
            worker_images,
            worker_s,
            worker_mean_batch,
        };
        eprintln!(
            "batch {batch:>2}: baseline {:.2} img/s ({} in {:.2} s), worker {:.2} img/s ({} in {:.2} s, mean batch {:.1}) → ratio {:.2}",
            point.baseline_ips(),
            baseline_images,
            baseline_s,
            point.worker_ips(),
            worker_images,
            worker_s,
            worker_mean_batch,
            point.ratio()
        );
        throughput.push(point);
    }
    Ok(throughput)
}
