//! Real processes for the worker's integration tests: broker topics, an ingest node, the
//! worker binary, the checker.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_loadtest::camsim::config::CameraConfig;
use panoptes_loadtest::checker::{Checker, ReaderConfig, Report};
use panoptes_testkit::{CamSim, ChildProcess, DevBroker, bin_path, get_text, unique_name};
use panoptes_workers::models::GeneratedModel;

/// The three topics of one test.
#[derive(Clone)]
pub struct Topics {
    pub frames: String,
    pub detections: String,
    pub dlq: String,
}

/// Creates unique topics: frames and detections with `partitions` partitions, dlq with one.
pub fn topics(broker: &DevBroker, partitions: u32) -> Result<Topics> {
    let t = Topics {
        frames: unique_name("frames"),
        detections: unique_name("detections"),
        dlq: unique_name("dlq"),
    };
    broker.create_topic(&t.frames, partitions)?;
    broker.create_topic(&t.detections, partitions)?;
    broker.create_topic(&t.dlq, 1)?;
    Ok(t)
}

/// A running `panoptes-worker`.
pub struct Worker {
    pub proc: ChildProcess,
    pub http: String,
    _config: tempfile::NamedTempFile,
}

impl Worker {
    /// Writes a config and starts the worker; `top` is TOML inserted before any section
    /// (top-level keys), `sections` after the generated ones.
    pub fn start(
        bootstrap: &str,
        t: &Topics,
        group: &str,
        model: &GeneratedModel,
        top: &str,
        sections: &str,
    ) -> Result<Self> {
        Self::start_as(
            &unique_name("worker"),
            bootstrap,
            t,
            group,
            model,
            top,
            sections,
        )
    }

    /// [`Worker::start`] with a given `worker_id`.
    pub fn start_as(
        worker_id: &str,
        bootstrap: &str,
        t: &Topics,
        group: &str,
        model: &GeneratedModel,
        top: &str,
        sections: &str,
    ) -> Result<Self> {
        let toml = format!(
            "worker_id = \"{}\"\n{top}\n[http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             frames_topic = \"{}\"\ndetections_topic = \"{}\"\ndlq_topic = \"{}\"\ngroup_id = \"{group}\"\n\
             [model]\npath = \"{}\"\nmanifest = \"{}\"\ndevice = \"cpu\"\nintra_op_threads = 1\n{sections}\n",
            worker_id,
            t.frames,
            t.detections,
            t.dlq,
            model.model_path.display(),
            model.manifest_path.display(),
        );
        let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
        std::fs::write(config.path(), toml)?;
        let path = config.path().to_str().context("utf-8 path")?.to_string();
        let mut proc = ChildProcess::spawn(
            "worker",
            &bin_path("panoptes-worker"),
            &["--config", &path],
            &[("RUST_LOG", "info,panoptes_workers=debug")],
        )?;
        let http = proc.wait_for_line("HTTP=", Duration::from_secs(30))?;
        Ok(Self {
            proc,
            http,
            _config: config,
        })
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        get_text(&format!("{}/metrics", self.http))
            .map(|(_, t)| t)
            .unwrap_or_default()
    }
}

/// Starts the checker on the test's topics.
pub fn checker(bootstrap: &str, t: &Topics, cameras: Vec<CameraConfig>) -> Result<Checker> {
    let mut config = ReaderConfig::new(bootstrap);
    config.frames_topic = t.frames.clone();
    config.detections_topic = t.detections.clone();
    config.dlq_topic = t.dlq.clone();
    config.accuracy = !cameras.is_empty();
    config.cameras = cameras;
    config.drain = Duration::from_secs(10);
    Ok(Checker::start(config)?)
}

/// Waits until every frame read so far has a record or dead letter (`extra` more records
/// allowed, e.g. known duplicates) and nothing changes for a moment, then finishes.
pub fn finish_when_settled(checker: Checker, timeout: Duration) -> Result<Report> {
    let deadline = Instant::now() + timeout;
    let mut last = checker.progress();
    let mut stable_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let p = checker.progress();
        if p != last {
            last = p;
            stable_since = Instant::now();
        }
        let answered = p.detections + p.dead_letters;
        if p.frames > 0 && answered >= p.frames && stable_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        if Instant::now() > deadline || checker.is_finished() {
            bail!("checker did not settle: {p:?}");
        }
    }
    Ok(checker.finish()?)
}

pub const CAMERAS: [&str; 3] = ["cam0", "cam1", "cam2"];
pub const FPS: u32 = 5;

/// Starts `panoptes-ingest` pulling the three cameras at 640×360, camera i → partition i.
pub fn start_ingest(
    bootstrap: &str,
    frames: &str,
    sim: &CamSim,
) -> Result<(ChildProcess, tempfile::NamedTempFile)> {
    let mut toml = format!(
        "node_id = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{frames}\"\n",
        unique_name("ingest")
    );
    for (i, id) in CAMERAS.iter().enumerate() {
        toml.push_str(&format!(
            "[[cameras]]\nid = \"{id}\"\nurl = \"{}\"\nfps = {FPS}\nwidth = 640\nheight = 360\npartition = {i}\n",
            sim.url(id, None)
        ));
    }
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(config.path(), toml)?;
    let path = config.path().to_str().context("utf-8")?.to_string();
    let mut proc = ChildProcess::spawn(
        "ingest",
        &bin_path("panoptes-ingest"),
        &["--config", &path],
        &[],
    )?;
    proc.wait_for_line("HTTP=", Duration::from_secs(20))?;
    Ok((proc, config))
}

pub fn camera_configs() -> Vec<CameraConfig> {
    CAMERAS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = CameraConfig::new(*id);
            c.fps = FPS;
            c.seed = 1 + i as u64;
            c
        })
        .collect()
}

pub fn camsim_args(cams: &[CameraConfig]) -> Vec<String> {
    cams.iter()
        .flat_map(|c| {
            [
                "--camera".to_string(),
                format!(
                    "id={},width={},height={},fps={},seed={},objects={}",
                    c.id, c.width, c.height, c.fps, c.seed, c.objects
                ),
            ]
        })
        .collect()
}
