//! The consume-rate phase of `panoptes-bench-worker` (`--consume-frames N`, 0 = skip): how
//! fast `panoptes-worker` reads a backlog from the broker when inference costs nothing,
//! against a bare librdkafka consumer reading the same frames in the same run.
//!
//! The backlog is produced the way ingest produces it at camera rates: one frame per produce
//! request (`batch.num.messages = 1`), so each record batch on the broker holds one frame.
//! The worker runs a no-op TorchScript model (`[B, 3, 64, 64]` → `[B, 1, 6]` zeros: no
//! detections) with its default `partition_queue`, `max_batch` 8 and lossless staleness; its
//! window runs from its first published record to its last (`records_total{status="ok"}`).
//! The bare consumer (librdkafka defaults, one partition assigned from the beginning) is timed
//! from its first message to its last. Result: worker frames/s over bare frames/s.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_models::GeneratedModel;
use panoptes_testkit::DevBroker;
use panoptes_testkit::kafka::{FrameProducer, frame_headers};
use panoptes_workers::tch::{self, CModule, Device, Kind, Tensor};
use panoptes_workers::{ManifestFile, ModelManifest};

use super::super::ConsumePoint;
use super::{Worker, WorkerBenchParams, mean_batch};

/// `max_batch` of the worker in this phase.
const MAX_BATCH: usize = 8;

/// Size of the phase's synthetic JPEG frames.
const FRAME: (u32, u32) = (160, 96);

/// Writes the no-op model (`noop.pt`, `noop.json`) into `dir`.
pub(crate) fn generate_noop(dir: &Path) -> Result<GeneratedModel> {
    let mut manifest = panoptes_models::reference_manifest();
    manifest.name = "noop".into();
    manifest.input.width = 64;
    manifest.input.height = 64;
    manifest.max_detections = 1;
    let example = Tensor::zeros(manifest.input_shape(1), (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        let mut closure = |inputs: &[Tensor]| {
            // [B, 3, 64, 64] → [B, 1, 6], all zero: score 0, so nothing is reported.
            vec![inputs[0].select(1, 0).narrow(1, 0, 1).narrow(2, 0, 6) * 0.0]
        };
        CModule::create_by_tracing("noop", "forward", &[example], &mut closure)
    })
    .context("tracing the no-op model")?;
    let model_path = dir.join("noop.pt");
    let manifest_path = dir.join("noop.json");
    module.save(&model_path).context("saving the no-op model")?;
    manifest.write(&manifest_path)?;
    let manifest = ModelManifest::from_file(&manifest_path)?;
    Ok(GeneratedModel {
        model_path,
        manifest_path,
        manifest,
        parameters: 0,
        flops: None,
    })
}

/// Runs the phase on a fresh topic: bare consumer, then the worker, over the same `n` frames.
pub(super) fn run_consume(
    broker: &DevBroker,
    noop: &GeneratedModel,
    params: &WorkerBenchParams,
    n: usize,
    properties: &[(String, String)],
    partition_queue: Option<usize>,
) -> Result<ConsumePoint> {
    // Small frames, so that the worker's JPEG decode does not hide the Kafka path.
    let frames = super::synthetic_frames(FRAME.0, FRAME.1, 4)?;
    let t = broker.create_topics(1)?;
    let p = FrameProducer::new(
        &broker.bootstrap,
        &[
            ("linger.ms", "0"),
            ("batch.num.messages", "1"),
            ("message.max.bytes", "4000000"),
        ],
    )?;
    for seq in 0..n {
        let h = frame_headers("consume", seq as u64, FRAME, Duration::ZERO);
        p.send(&t.frames, 0, &h, &frames[seq % frames.len()])?;
    }
    p.flush()?;
    eprintln!("consume: {n} frames produced, one per record batch; bare consumer…");
    let bare_s = bare_consumer(&broker.bootstrap, &t.frames, n)?;
    eprintln!("consume: bare consumer done; worker…");

    let mut worker_params = params.clone();
    worker_params.device = "cpu".into();
    let mut worker = Worker::start_with(
        &broker.bootstrap,
        &t,
        noop,
        &worker_params,
        MAX_BATCH,
        |c| {
            c.model.intra_op_threads = 1;
            c.kafka.client.properties.extend(properties.iter().cloned());
            if let Some(q) = partition_queue {
                c.partition_queue = q;
            }
        },
    )?;
    let timeout = Duration::from_secs(300);
    let (c0, t0) = worker.wait_ok(1, timeout)?;
    let (c1, t1) = worker.wait_ok(n, timeout)?;
    let records = super::read_detections(&broker.bootstrap, &t.detections, n)?;
    let stages = super::stage_means(&records.iter().collect::<Vec<_>>());
    eprintln!("consume: worker stage means (ms): {stages:?}");
    let point = ConsumePoint {
        frames: n,
        frame_bytes: frames.iter().map(Vec::len).sum::<usize>() / frames.len().max(1),
        bare_frames: n - 1,
        bare_s,
        worker_frames: (c1.0 - c0.0) as usize,
        worker_s: (t1 - t0).as_secs_f64(),
        worker_mean_batch: mean_batch(c0, c1),
        worker_stage_mean_ms: stages,
    };
    eprintln!(
        "consume: bare {:.0} frames/s, worker (no-op model) {:.0} frames/s → ratio {:.2}",
        point.bare_fps(),
        point.worker_fps(),
        point.ratio()
    );
    Ok(point)
}

/// A plain consumer (librdkafka defaults) reading `n` records of partition 0 from the
/// beginning; seconds from its first record to its last.
fn bare_consumer(bootstrap: &str, topic: &str, n: usize) -> Result<f64> {
    let consumer = super::partition_reader(bootstrap, topic)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first = None;
    let mut read = 0;
    while read < n {
        if Instant::now() > deadline {
            bail!("the bare consumer read {read} of {n} records");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            read += 1;
            first.get_or_insert_with(Instant::now);
        }
    }
    Ok(first.map_or(0.0, |t| t.elapsed().as_secs_f64()))
}
