//! The ingest benchmark: `panoptes-ingest` against a bare `gst-launch-1.0` pipeline.
//!
//! Both sides pull the same simulated RTSP cameras and do the same work per camera:
//!
//! ```text
//! rtspsrc (tcp, latency 200) ! decodebin ! videorate drop-only=true max-rate=FPS
//!   ! videoscale ! video/x-raw,width=W,height=H ! jpegenc quality=Q ! <sink>
//! ```
//!
//! The bare side ends in `fakesink silent=false` inside one `gst-launch-1.0 -v` process, and
//! its frames are counted from the `last-message = chain …` lines that `-v` prints for every
//! buffer (one short line per output frame; measured to cost nothing visible next to the
//! decode, see `docs/benchmarks.md`). The ingest side ends in its appsink and publishes every
//! frame to Kafka; its frames are the deltas of `panoptes_ingest_frames_total`.
//!
//! Per phase the benchmark measures frames produced and CPU seconds (`utime + stime` from
//! `/proc/<pid>/stat`) of the measured process only, over the same window; the figure of
//! merit is CPU seconds per output frame, and the result is ingest's over bare's.
//!
//! The bare pipeline decodes every frame the camera sends; the ingest node skips decoding the
//! ones its sampler would drop ([`panoptes_ingest::decode_skip`]). `--bframes 2` gives the
//! cameras an IBBP stream (whose B-frames can be skipped), and `--decode-all` adds a third
//! phase, the ingest node with `decode_skip = false`, to show what skipping saves.
//!
//! [`run`] starts the processes (binary `panoptes-bench-ingest`).

pub mod run;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use std::time::Duration;

use panoptes_ingest::config::{CameraConfig, IngestConfig, Transport};
use serde::Serialize;

use super::scaffold::{
    BenchReport, RunInfo, Table, Target, markdown_header, median, result_sections,
};
use super::sys::{ClockTicks, MachineInfo};

/// The ratio (ingest CPU per frame over bare CPU per frame) the ingest node should stay under
/// by default; `--target` sets another (0.7 for the decode-skipping run).
pub const TARGET_RATIO: f64 = 1.25;

/// Invalid benchmark parameters.
#[derive(Debug, thiserror::Error)]
#[error("invalid parameter: {0}")]
pub struct ParamError(String);

/// What to run: sources, output, timing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestBenchParams {
    /// Simulated cameras (`cam0..`).
    pub cameras: u32,
    /// Source width in pixels.
    pub source_width: u32,
    /// Source height in pixels.
    pub source_height: u32,
    /// Source frame rate.
    pub source_fps: u32,
    /// Output (sampled) frame rate per camera.
    pub out_fps: u32,
    /// Output width in pixels.
    pub out_width: u32,
    /// Output height in pixels.
    pub out_height: u32,
    /// JPEG quality of both sides.
    pub jpeg_quality: u32,
    /// Seconds each phase runs after its first frame and before its window.
    pub warmup_s: u64,
    /// Seconds of the measured window of each phase.
    pub window_s: u64,
    /// Rounds of (bare, ingest).
    pub rounds: u32,
    /// B-frames between the cameras' reference frames (0: IPPP).
    pub bframes: u32,
    /// Also measure the ingest node with `decode_skip = false` each round.
    pub decode_all_phase: bool,
    /// The ratio ingest / bare must stay under.
    pub target_ratio: f64,
}

impl Default for IngestBenchParams {
    fn default() -> Self {
        Self {
            cameras: 4,
            source_width: 1280,
            source_height: 720,
            source_fps: 10,
            out_fps: 5,
            out_width: 640,
            out_height: 360,
            jpeg_quality: 80,
            warmup_s: 5,
            window_s: 30,
            rounds: 2,
            bframes: 0,
            decode_all_phase: false,
            target_ratio: TARGET_RATIO,
        }
    }
}

impl IngestBenchParams {
    /// The small run for CI smoke tests: 2 cameras, 10 s window, 3 s warm-up, 1 round.
    pub fn quick() -> Self {
        Self {
            cameras: 2,
            warmup_s: 3,
            window_s: 10,
            rounds: 1,
            ..Self::default()
        }
    }

    /// Rejects parameters the benchmark cannot run meaningfully.
    pub fn validate(&self) -> Result<(), ParamError> {
        let positive = [
            ("cameras", self.cameras),
            ("source fps", self.source_fps),
            ("output fps", self.out_fps),
            ("rounds", self.rounds),
            ("source width", self.source_width),
            ("source height", self.source_height),
            ("output width", self.out_width),
            ("output height", self.out_height),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ParamError(format!("{name} must be positive")));
        }
        if self.window_s == 0 {
            return Err(ParamError("the window must be at least 1 s".into()));
        }
        if self.out_fps > self.source_fps {
            return Err(ParamError(format!(
                "output fps {} above source fps {}: videorate drop-only cannot raise the rate",
                self.out_fps, self.source_fps
            )));
        }
        if self.out_width > self.source_width || self.out_height > self.source_height {
            return Err(ParamError(
                "the ingest node never upscales: output size must fit in the source".into(),
            ));
        }
        if !self.out_width.is_multiple_of(2) || !self.out_height.is_multiple_of(2) {
            return Err(ParamError("output width and height must be even".into()));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(ParamError("JPEG quality must be 1..=100".into()));
        }
        if self.bframes > 4 {
            return Err(ParamError("bframes must be 0..=4".into()));
        }
        if self.target_ratio.is_nan() || self.target_ratio <= 0.0 {
            return Err(ParamError("the target ratio must be positive".into()));
        }
        Ok(())
    }

    /// Camera ids as the simulator names them for `--cameras N`.
    pub fn camera_ids(&self) -> Vec<String> {
        (0..self.cameras).map(|i| format!("cam{i}")).collect()
    }

    /// Arguments for `panoptes-camsim` (besides `--listen`/`--control`).
    pub fn camsim_args(&self) -> Vec<String> {
        [
            ("--cameras", self.cameras),
            ("--width", self.source_width),
            ("--height", self.source_height),
            ("--fps", self.source_fps),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .chain(["--codec".to_string(), "h264".to_string()])
        .chain(["--bframes".to_string(), self.bframes.to_string()])
        .collect()
    }

    /// The phases of one round, in order.
    pub fn phases(&self) -> Vec<Phase> {
        let mut phases = vec![Phase::Bare, Phase::Ingest];
        if self.decode_all_phase {
            phases.push(Phase::IngestDecodeAll);
        }
        phases
    }

    /// The ratio as a [`Target`]: lower is better.
    pub fn target(&self) -> Target {
        Target {
            bound: self.target_ratio,
            higher_is_better: false,
        }
    }

    /// e.g. `1280x720 H.264 (IBBP, 2 B-frames)`.
    fn source_stream(&self) -> String {
        match self.bframes {
            0 => format!("{} H.264", self.source_size()),
            b => format!("{} H.264 (IBBP, {b} B-frames)", self.source_size()),
        }
    }

    /// Frames per second both sides should produce when they keep up.
    pub fn expected_fps(&self) -> f64 {
        f64::from(self.cameras) * f64::from(self.out_fps)
    }

    /// Arguments for `gst-launch-1.0`: `-v` and one branch per `(camera id, url)`, each ending
    /// in a `fakesink` named after the camera. (`-q` would silence `-v` too.)
    pub fn bare_launch_args(&self, cameras: &[(String, String)]) -> Vec<String> {
        let mut args = vec!["-v".to_string()];
        for (id, url) in cameras {
            let branch = format!(
                "rtspsrc location={url} protocols=tcp latency=200 ! decodebin \
                 ! videorate drop-only=true max-rate={fps} ! videoscale \
                 ! video/x-raw,width={w},height={h} ! jpegenc quality={q} \
                 ! fakesink name={id} sync=false silent=false",
                fps = self.out_fps,
                w = self.out_width,
                h = self.out_height,
                q = self.jpeg_quality,
            );
            args.extend(branch.split_whitespace().map(str::to_string));
        }
        args
    }

    /// The `panoptes-ingest` configuration for the same cameras and settings (default
    /// frames topic, RTSP over TCP with 200 ms latency like the bare pipeline), skipping
    /// decodes unless `phase` is [`Phase::IngestDecodeAll`].
    pub fn ingest_config(
        &self,
        bootstrap: &str,
        cameras: &[(String, String)],
        phase: Phase,
    ) -> IngestConfig {
        let topic = IngestConfig::default().kafka.topic;
        let mut c = panoptes_testkit::ingest::config("bench", bootstrap, &topic);
        let d = &mut c.camera_defaults;
        d.fps = self.out_fps;
        d.width = self.out_width;
        d.height = self.out_height;
        d.jpeg_quality = self.jpeg_quality;
        d.transport = Transport::Tcp;
        d.latency = Duration::from_millis(200);
        d.decode_skip = phase != Phase::IngestDecodeAll;
        c.cameras = cameras
            .iter()
            .map(|(id, url)| CameraConfig {
                id: id.clone(),
                url: url.clone(),
                ..CameraConfig::default()
            })
            .collect();
        c
    }

    /// `{source_width}x{source_height}`.
    fn source_size(&self) -> String {
        format!("{}x{}", self.source_width, self.source_height)
    }

    /// `{out_width}x{out_height}`.
    fn out_size(&self) -> String {
        format!("{}x{}", self.out_width, self.out_height)
    }
}

/// If `line` is a `gst-launch-1.0 -v` report of a buffer reaching a fakesink, the sink's name.
///
/// The line looks like
/// `/GstPipeline:pipeline0/GstFakeSink:cam0: last-message = chain   ******* (cam0:sink) (9628 bytes, …`.
pub fn fakesink_buffer(line: &str) -> Option<&str> {
    let (path, message) = line.split_once(": last-message = ")?;
    if !message.starts_with("chain") {
        return None;
    }
    path.rsplit_once("/GstFakeSink:").map(|(_, name)| name)
}

/// Counts output frames per fakesink from `gst-launch-1.0 -v` output, fed line by line
/// (from a reader thread) and read from the measuring thread.
#[derive(Debug, Default)]
pub struct LaunchFrameCounter {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl LaunchFrameCounter {
    /// Counts `line` if it reports a buffer.
    pub fn feed(&self, line: &str) {
        if let Some(name) = fakesink_buffer(line) {
            *self
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name.to_string())
                .or_insert(0) += 1;
        }
    }

    /// Frames per sink so far.
    pub fn per_sink(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Frames over all sinks so far.
    pub fn total(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// The two sides of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `gst-launch-1.0` with the same pipeline and a fakesink.
    Bare,
    /// `panoptes-ingest` publishing to the development broker.
    Ingest,
    /// The same with `decode_skip = false`: every frame decoded, as the bare pipeline does.
    #[serde(rename = "ingest-decode-all")]
    IngestDecodeAll,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Bare => "bare",
            Phase::Ingest => "ingest",
            Phase::IngestDecodeAll => "ingest-decode-all",
        }
    }
}

/// One measured window of one phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Which side.
    pub phase: Phase,
    /// Round number, from 1.
    pub round: u32,
    /// Output frames produced in the window (all cameras).
    pub frames: u64,
    /// CPU seconds (user + system) of the measured process in the window.
    pub cpu_s: f64,
    /// Wall-clock length of the window in seconds.
    pub wall_s: f64,
    /// CPU seconds of the camera simulator in the same window (context, not part of the ratio).
    pub source_cpu_s: f64,
    /// Fraction of the whole machine's CPU that was busy in the window (context).
    pub machine_busy: f64,
    /// Resident memory of the measured process at the end of the window, KiB.
    pub rss_kib: Option<u64>,
    /// Ingest phases: access units dropped before the decoder in the window.
    pub skipped: Option<u64>,
}

impl Sample {
    /// CPU seconds per output frame (infinite if no frame came out).
    pub fn cpu_per_frame(&self) -> f64 {
        if self.frames == 0 {
            f64::INFINITY
        } else {
            self.cpu_s / self.frames as f64
        }
    }

    /// Output frames per wall-clock second.
    pub fn fps(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.frames as f64 / self.wall_s
        } else {
            0.0
        }
    }
}

/// The medians of one phase over its rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSummary {
    /// Which side.
    pub phase: Phase,
    /// Rounds measured.
    pub rounds: usize,
    /// Median CPU seconds per output frame.
    pub cpu_per_frame_s: f64,
    /// Its inverse: output frames per CPU second.
    pub frames_per_cpu_s: f64,
    /// Cameras at the output rate that one fully used core sustains: `1 / (cpu_per_frame × fps)`.
    pub cameras_per_core: f64,
    /// Median output frames per wall-clock second.
    pub fps: f64,
    /// Median share of one core used: CPU seconds over wall seconds.
    pub cores_used: f64,
}

impl PhaseSummary {
    /// Summarises the samples of `phase`; `None` if there are none.
    pub fn of(phase: Phase, samples: &[Sample], out_fps: u32) -> Option<Self> {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.phase == phase).collect();
        let cpu_per_frame_s = median(&mine.iter().map(|s| s.cpu_per_frame()).collect::<Vec<_>>())?;
        Some(Self {
            phase,
            rounds: mine.len(),
            cpu_per_frame_s,
            frames_per_cpu_s: 1.0 / cpu_per_frame_s,
            cameras_per_core: 1.0 / (cpu_per_frame_s * f64::from(out_fps)),
            fps: median(&mine.iter().map(|s| s.fps()).collect::<Vec<_>>())?,
            cores_used: median(
                &mine
                    .iter()
                    .map(|s| s.cpu_s / s.wall_s.max(f64::MIN_POSITIVE))
                    .collect::<Vec<_>>(),
            )?,
        })
    }
}

/// Everything a run produced, as written to `ingest-bench.json` and rendered as Markdown.
#[derive(Debug, Clone, Serialize)]
pub struct IngestBenchReport {
    /// `"panoptes-bench-ingest"`.
    pub benchmark: String,
    /// Date, command line and build profile.
    #[serde(flatten)]
    pub run: RunInfo,
    /// The machine.
    pub machine: MachineInfo,
    /// `/proc` clock ticks per second.
    pub clock_ticks: ClockTicks,
    /// `GST_DEBUG` as both sides saw it, if set.
    pub gst_debug: Option<String>,
    /// Parameters.
    pub params: IngestBenchParams,
    /// Every measured window, in the order run.
    pub samples: Vec<Sample>,
    /// The bare pipeline's medians.
    pub bare: PhaseSummary,
    /// The ingest node's medians.
    pub ingest: PhaseSummary,
    /// With `--decode-all`: the ingest node's medians with `decode_skip = false`.
    pub decode_all: Option<PhaseSummary>,
    /// Median ingest CPU per frame over median bare CPU per frame.
    pub ratio: f64,
    /// With `--decode-all`: the same ratio with `decode_skip = false`.
    pub decode_all_ratio: Option<f64>,
    /// The same ratio for each round alone (ingest sample over the bare sample before it).
    pub round_ratios: Vec<f64>,
    /// The bound the ratio must stay under.
    pub target_ratio: f64,
    /// `ratio <= target_ratio`.
    pub within_target: bool,
    /// The bare pipeline, as run (camera URLs included).
    pub bare_pipeline: String,
}

impl IngestBenchReport {
    /// Builds the report from the samples; `None` if either phase has none.
    pub fn new(
        run: RunInfo,
        machine: MachineInfo,
        clock_ticks: ClockTicks,
        gst_debug: Option<String>,
        params: IngestBenchParams,
        samples: Vec<Sample>,
        bare_pipeline: String,
    ) -> Option<Self> {
        let bare = PhaseSummary::of(Phase::Bare, &samples, params.out_fps)?;
        let ingest = PhaseSummary::of(Phase::Ingest, &samples, params.out_fps)?;
        let decode_all = PhaseSummary::of(Phase::IngestDecodeAll, &samples, params.out_fps);
        let ratio = ingest.cpu_per_frame_s / bare.cpu_per_frame_s;
        let decode_all_ratio = decode_all
            .as_ref()
            .map(|a| a.cpu_per_frame_s / bare.cpu_per_frame_s);
        let round_ratios = (1..=params.rounds)
            .filter_map(|r| {
                let of = |p| samples.iter().find(|s| s.round == r && s.phase == p);
                Some(of(Phase::Ingest)?.cpu_per_frame() / of(Phase::Bare)?.cpu_per_frame())
            })
            .collect();
        let (target_ratio, within_target) = (params.target_ratio, params.target().met_by(ratio));
        Some(Self {
            benchmark: "panoptes-bench-ingest".into(),
            run,
            machine,
            clock_ticks,
            gst_debug,
            params,
            samples,
            bare,
            ingest,
            decode_all,
            ratio,
            decode_all_ratio,
            round_ratios,
            target_ratio,
            within_target,
            bare_pipeline,
        })
    }
}

impl BenchReport for IngestBenchReport {
    const STEM: &'static str = "ingest-bench";

    fn summary_table(&self) -> String {
        let p = &self.params;
        let head = format!(
            "{} × {} @ {} fps → {} @ {} fps JPEG q{}",
            p.cameras,
            p.source_stream(),
            p.source_fps,
            p.out_size(),
            p.out_fps,
            p.jpeg_quality
        );
        let mut columns = vec![head.as_str(), ">bare gst-launch", ">panoptes-ingest"];
        if self.decode_all.is_some() {
            columns.push(">panoptes-ingest, decode_skip off");
        }
        let mut table = Table::new(&columns);
        let mut row = |name: &str, f: &dyn Fn(&PhaseSummary) -> String| {
            let mut cells = vec![name.to_string(), f(&self.bare), f(&self.ingest)];
            cells.extend(self.decode_all.as_ref().map(f));
            table.row(&cells);
        };
        row("CPU ms per output frame (median)", &|x| {
            format!("{:.2}", x.cpu_per_frame_s * 1e3)
        });
        row("output frames per CPU second", &|x| {
            format!("{:.0}", x.frames_per_cpu_s)
        });
        row(
            &format!("cameras at {} fps one core sustains", p.out_fps),
            &|x| format!("{:.1}", x.cameras_per_core),
        );
        row(
            &format!("output fps (expected {:.0})", p.expected_fps()),
            &|x| format!("{:.1}", x.fps),
        );
        row("cores used", &|x| format!("{:.2}", x.cores_used));
        let mut s = table.finish();
        let verdict = if self.within_target {
            "within target"
        } else {
            "ABOVE target"
        };
        let _ = writeln!(
            s,
            "\n**Ratio ingest / bare (CPU per frame): {:.3}** (target {}: {verdict}); per round: {}",
            self.ratio,
            self.params.target().describe(),
            self.round_ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(all) = self.decode_all_ratio {
            let _ = writeln!(
                s,
                "\nWith decode_skip off the ratio is {all:.3}: skipping decodes saves {:.0} % of the node's CPU per frame.",
                (1.0 - self.ratio / all) * 100.0
            );
        }
        s
    }

    fn to_markdown(&self) -> String {
        let p = &self.params;
        let mut s = markdown_header(
            "Ingest benchmark: panoptes-ingest vs bare gst-launch-1.0",
            &self.run,
            &self.machine,
            &self.machine.gstreamer,
        );
        let _ = writeln!(
            s,
            "- CPU time: utime+stime of the measured process from /proc/<pid>/stat, CLK_TCK = {} ({})",
            self.clock_ticks.per_second,
            if self.clock_ticks.from_getconf {
                "getconf"
            } else {
                "assumed"
            }
        );
        let _ = writeln!(
            s,
            "- GST_DEBUG: {}",
            self.gst_debug.as_deref().unwrap_or("unset")
        );
        let _ = writeln!(
            s,
            "- Parameters: {} cameras, source {} at {} fps, output {} JPEG q{} at {} fps; warm-up {} s, window {} s, {} round(s) of {}\n",
            p.cameras,
            p.source_stream(),
            p.source_fps,
            p.out_size(),
            p.jpeg_quality,
            p.out_fps,
            p.warmup_s,
            p.window_s,
            p.rounds,
            p.phases()
                .iter()
                .map(|ph| ph.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        s.push_str(&result_sections(
            &self.summary_table(),
            &self.samples_table(),
        ));
        let _ = writeln!(
            s,
            "\n## Bare pipeline\n\n```\ngst-launch-1.0 {}\n```",
            self.bare_pipeline
        );
        s
    }
}

impl IngestBenchReport {
    /// Every measured window, one row each.
    fn samples_table(&self) -> String {
        let mut table = Table::new(&[
            ">round",
            "phase",
            ">frames",
            ">CPU s",
            ">wall s",
            ">CPU ms/frame",
            ">fps",
            ">camsim CPU s",
            ">machine busy",
            ">RSS MiB",
            ">skipped/s",
        ]);
        for x in &self.samples {
            table.row(&[
                x.round.to_string(),
                x.phase.as_str().to_string(),
                x.frames.to_string(),
                format!("{:.2}", x.cpu_s),
                format!("{:.1}", x.wall_s),
                format!("{:.2}", x.cpu_per_frame() * 1e3),
                format!("{:.2}", x.fps()),
                format!("{:.2}", x.source_cpu_s),
                format!("{:.0}%", x.machine_busy * 100.0),
                x.rss_kib
                    .map_or("?".to_string(), |k| format!("{:.0}", k as f64 / 1024.0)),
                x.skipped.map_or("–".to_string(), |n| {
                    format!("{:.1}", n as f64 / x.wall_s.max(f64::MIN_POSITIVE))
                }),
            ]);
        }
        table.finish()
    }
}

#[cfg(test)]
mod tests;
