//! Decode, the second stage: a pool of OS threads turning frame records into model inputs.
//!
//! For each [`FrameJob`] a thread, in order: dead-letters bad envelopes (`bad_headers` /
//! `bad_dimensions`, or a key that disagrees with the camera id); turns a frame the consumer
//! found from a superseded ingest owner into a `superseded_owner` record; applies the staleness
//! policy (frame age at dequeue > `max_age` with policy `skip` → a `skipped_stale` record,
//! no decode, no inference); refuses, before anything is allocated for its pixels, a frame
//! whose envelope claims more than `[decode] max_frame_pixels` (`too_large`) or whose JPEG
//! frame header disagrees with the envelope (`bad_dimensions`) or cannot be read
//! (`undecodable`), see [`admit`]; decodes the JPEG (or raw RGB24) and letterboxes it into a
//! `[1, 3, H, W]` tensor, dead-lettering undecodable payloads and images whose size disagrees
//! with the envelope. Results go to the batcher ([`Decoded`]) or straight to the partition's
//! publisher ([`Outcome`]).
//!
//! Frame age is the worker's cluster clock at dequeue minus `capture_time_us`, which ingest
//! stamps on its cluster clock (`panoptes_coordinator_client::clock`): both read the Redis
//! server's clock, so a skew between the machines' wall clocks neither makes frames stale
//! nor hides staleness. A capture time over 1 s in the future is counted
//! (`frames_from_future`: an ingest node off the cluster clock).
//!
//! Memory: each thread's scratch buffer holds one decoded frame of at most
//! `3 × max_frame_pixels` bytes, since nothing larger gets past [`admit`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use panoptes_schemas::{
    DeadLetterReason, FrameEncoding, FrameHeaders, FrameStatus, StageLatencies,
};

use crate::config::{DecodeConfig, StalePolicy, StalenessConfig};
use crate::error::PreprocessError;
use crate::metrics::WorkerMetrics;
use crate::pipeline::publish::router::Router;
use crate::pipeline::trace::FrameTrace;
use crate::pipeline::work::{
    Decoded, FrameJob, Outcome, Output, Position, RecordContext, ms_between_us, ms_since, now_us,
};
use crate::preprocess::{InputBatch, Letterbox, jpeg_dimensions};
use crate::swap::{ModelGate, ModelStamp};

/// A capture time this far (µs) ahead of the worker's cluster clock is counted in
/// `panoptes_worker_frames_from_future_total` (round trips to Redis are far shorter).
const FUTURE_TOLERANCE_US: i64 = 1_000_000;

/// Largest payload the worker accepts (bigger ones are dead-lettered `too_large`).
pub const MAX_PAYLOAD_BYTES: usize = 32 * 1024 * 1024;

/// One decode thread's shared inputs.
pub struct DecodeStage {
    /// Record building.
    pub ctx: RecordContext,
    /// Staleness policy.
    pub staleness: StalenessConfig,
    /// Bounds on what a frame may claim.
    pub limits: DecodeConfig,
    /// Stamps each frame with the model that infers it (its input layout), [`crate::swap`].
    pub gate: ModelGate,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// Per-partition publishers (for dead letters and skips).
    pub router: Router,
}

/// The camera of a job whose envelope could be read (the canary's stamp depends on it).
fn camera_of(job: &FrameJob) -> Option<&str> {
    job.headers.as_ref().ok().map(|h| h.camera_id.as_str())
}

impl DecodeStage {
    /// Starts `threads` decode threads reading `jobs` and writing `decoded`.
    pub fn spawn(
        self: Arc<Self>,
        threads: usize,
        jobs: Receiver<FrameJob>,
        decoded: Sender<Decoded>,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        (0..threads)
            .map(|i| {
                let stage = self.clone();
                let jobs = jobs.clone();
                let decoded = decoded.clone();
                std::thread::Builder::new()
                    .name(format!("decode-{i}"))
                    .spawn(move || {
                        let mut input = stage.gate.current().manifest.input.clone();
                        let mut batch = InputBatch::for_manifest(&stage.gate.current().manifest, 1);
                        while let Some((job, model)) = stage.gate.next(&jobs, camera_of) {
                            if model.manifest.input != input {
                                input = model.manifest.input.clone();
                                batch = InputBatch::for_manifest(&model.manifest, 1);
                            }
                            stage.handle(job, model, &mut batch, &decoded);
                        }
                    })
            })
            .collect()
    }

    fn handle(
        &self,
        job: FrameJob,
        model: Arc<ModelStamp>,
        batch: &mut InputBatch,
        decoded: &Sender<Decoded>,
    ) {
        let dequeued_us = now_us();
        let pos = job.pos;
        let superseded_by = job.superseded_by;
        let mut trace = job.trace;
        // The receive span ends here, whatever becomes of the frame.
        trace.ready();
        // Log lines about this frame carry its trace ids (tracing on only).
        let _log = trace.log_span().entered();
        let headers = match job
            .headers
            .and_then(|h| h.check_record_key(job.key.as_deref()).map(|()| h))
        {
            Ok(h) => h,
            Err(e) => {
                let reason = DeadLetterReason::for_envelope_error(&e);
                return self.dead(pos, None, reason, &e.to_string(), trace);
            }
        };
        let age_ms = ms_between_us(headers.capture_time_us, dequeued_us);
        self.metrics.frame_age.observe(f64::from(age_ms) / 1000.0);
        if headers.capture_time_us - dequeued_us > FUTURE_TOLERANCE_US {
            // Both stamps are on the cluster clock, so this is an ingest node that is not
            // (static mode on another machine, Redis not reached yet): its age reads as 0.
            self.metrics.frames_from_future.inc();
        }
        let queue_ms = job
            .timestamp_ms
            .map(|ts| ms_between_us(ts * 1000, dequeued_us))
            .unwrap_or(0.0);
        self.metrics.stage("queue", queue_ms);
        let latency = StageLatencies {
            queue_ms,
            ..StageLatencies::default()
        };
        if let Some(highest) = superseded_by {
            return self.superseded(pos, &headers, highest, latency, &model, trace);
        }
        if self.staleness.policy == StalePolicy::Skip
            && Duration::from_secs_f64(f64::from(age_ms) / 1000.0) > self.staleness.max_age
        {
            let status = FrameStatus::SkippedStale;
            return self.skipped(pos, &headers, status, latency, &model, trace);
        }
        if job.payload.len() > MAX_PAYLOAD_BYTES {
            let detail = format!("{} bytes > {MAX_PAYLOAD_BYTES}", job.payload.len());
            return self.dead(
                pos,
                Some(&headers),
                DeadLetterReason::TooLarge,
                &detail,
                trace,
            );
        }
        if let Err(refused) = admit(&headers, &job.payload, self.limits.max_frame_pixels) {
            self.metrics
                .frames_refused
                .with_label_values(&[refused.check])
                .inc();
            return self.dead(pos, Some(&headers), refused.reason, &refused.detail, trace);
        }
        let started = Instant::now();
        let letterbox = match place(batch, &headers, &job.payload) {
            Ok(lb) => lb,
            Err((reason, detail)) => return self.dead(pos, Some(&headers), reason, &detail, trace),
        };
        let input = batch.to_tensor(1);
        let decode_ms = ms_since(started);
        self.metrics.stage("decode", decode_ms);
        let rgb = match headers.encoding {
            FrameEncoding::Jpeg => batch.decoded_rgb(),
            FrameEncoding::Rgb24 => &job.payload[..],
        };
        self.router.drift().image(pos.partition, &headers, rgb);
        let frame = Decoded {
            pos,
            headers,
            input,
            letterbox,
            latency: StageLatencies {
                decode_ms,
                ..latency
            },
            ready: Instant::now(),
            trace: {
                trace.ready();
                trace
            },
            model,
        };
        // Blocks while the batcher is full: back-pressure up to the consumer's pause.
        let _ = decoded.send(frame);
    }

    /// A frame of a superseded ingest owner (a zombie: its owner epoch is below `highest`,
    /// already seen for its camera): a `superseded_owner` record, no decode, no inference, so
    /// the frame is accounted for under a named reason.
    fn superseded(
        &self,
        pos: Position,
        headers: &FrameHeaders,
        highest: u64,
        latency: StageLatencies,
        model: &ModelStamp,
        trace: FrameTrace,
    ) {
        tracing::debug!(camera = %headers.camera_id, seq = headers.seq, owner_epoch = ?headers.owner_epoch, highest, "frame of a superseded ingest owner");
        let status = FrameStatus::SupersededOwner;
        self.skipped(pos, headers, status, latency, model, trace);
    }

    /// A frame accounted for without inference: counted, and a record with `status` (named
    /// with the model it would have met) goes to the publisher.
    fn skipped(
        &self,
        pos: Position,
        headers: &FrameHeaders,
        status: FrameStatus,
        latency: StageLatencies,
        model: &ModelStamp,
        trace: FrameTrace,
    ) {
        self.metrics
            .skipped
            .with_label_values(&[status.as_str()])
            .inc();
        let mut record = self.ctx.record(pos, headers, status, latency);
        record.model = model.model.clone();
        self.router.send(Outcome {
            pos,
            output: Output::Record(Box::new(record)),
            trace,
        });
    }

    fn dead(
        &self,
        pos: Position,
        headers: Option<&FrameHeaders>,
        reason: DeadLetterReason,
        detail: &str,
        trace: FrameTrace,
    ) {
        // The frame's trace and creation-span ids, so the log line leads to its trace.
        let (trace_id, span_id) = crate::pipeline::trace::log_ids(headers);
        tracing::warn!(
            partition = pos.partition,
            offset = pos.offset,
            reason = reason.as_str(),
            detail,
            trace_id,
            span_id,
            "dead-lettering frame"
        );
        self.metrics
            .dead_lettered
            .with_label_values(&[reason.as_str()])
            .inc();
        let letter = self.ctx.dead_letter(pos, headers, reason, detail);
        self.router.send(Outcome {
            pos,
            output: Output::DeadLetter(Box::new(letter)),
            trace,
        });
    }
}

/// A frame refused by [`admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Dead-letter reason.
    pub reason: DeadLetterReason,
    /// Which check refused it (the `check` label of `panoptes_worker_frames_refused_total`,
    /// one of [`crate::metrics::REFUSAL_CHECKS`]).
    pub check: &'static str,
    /// What the frame claimed, for the dead letter.
    pub detail: String,
}

/// Checks what a frame claims before anything is allocated for its pixels: the envelope's
/// size against `max_pixels` (`too_large`), then for a JPEG the size in its frame header
/// against the envelope's (`bad_dimensions`; no readable header: `undecodable`). Reads only
/// the headers: no allocation, cost linear in the bytes before the JPEG frame header.
pub fn admit(headers: &FrameHeaders, payload: &[u8], max_pixels: u64) -> Result<(), Refused> {
    let (w, h) = (headers.width, headers.height);
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(Refused {
            reason: DeadLetterReason::TooLarge,
            check: "max_pixels",
            detail: format!(
                "envelope claims {w}x{h} = {pixels} pixels, over decode.max_frame_pixels = \
                 {max_pixels}"
            ),
        });
    }
    if headers.encoding != FrameEncoding::Jpeg {
        return Ok(());
    }
    match jpeg_dimensions(payload) {
        Ok(claimed) if claimed == (w, h) => Ok(()),
        Ok((jw, jh)) => Err(Refused {
            reason: DeadLetterReason::BadDimensions,
            check: "header_mismatch",
            detail: format!("JPEG header claims {jw}x{jh}, envelope says {w}x{h}"),
        }),
        Err(e) => Err(Refused {
            reason: DeadLetterReason::Undecodable,
            check: "header_unreadable",
            detail: e.to_string(),
        }),
    }
}

/// Decodes the payload (JPEG or raw RGB24) into slot 0 of `batch`, letterboxed; an image
/// that cannot be decoded, or whose size disagrees with the envelope, is refused with the
/// dead-letter reason and detail.
fn place(
    batch: &mut InputBatch,
    headers: &FrameHeaders,
    payload: &[u8],
) -> Result<Letterbox, (DeadLetterReason, String)> {
    let placed = match headers.encoding {
        FrameEncoding::Jpeg => batch
            .set_jpeg_sized(0, payload, (headers.width, headers.height))
            .map_err(|e| {
                let reason = match e {
                    PreprocessError::Image(_) => DeadLetterReason::BadDimensions,
                    _ => DeadLetterReason::Undecodable,
                };
                (reason, e.to_string())
            }),
        FrameEncoding::Rgb24 => {
            if payload.len() == headers.rgb24_len() {
                batch
                    .set_rgb(0, payload, headers.width, headers.height)
                    .map_err(|e| (DeadLetterReason::BadDimensions, e.to_string()))
            } else {
                Err((
                    DeadLetterReason::BadDimensions,
                    format!(
                        "rgb24 payload of {} bytes, expected {}",
                        payload.len(),
                        headers.rgb24_len()
                    ),
                ))
            }
        }
    }?;
    if placed.src_width == headers.width && placed.src_height == headers.height {
        Ok(placed)
    } else {
        Err((
            DeadLetterReason::BadDimensions,
            format!(
                "decoded {}x{}, envelope says {}x{}",
                placed.src_width, placed.src_height, headers.width, headers.height
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(w: u32, h: u32, encoding: FrameEncoding) -> FrameHeaders {
        let mut h = panoptes_testkit::kafka::frame_headers("cam0", 0, (w, h), Duration::ZERO);
        h.encoding = encoding;
        h
    }

    /// SOI, then a baseline frame header claiming `w × h` (all `admit` reads).
    fn header_only(w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8];
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&[1, 1, 0x11, 0]);
        b
    }

    #[test]
    fn admit_checks_the_claims_before_decoding() {
        let max = 3840 * 2160;
        let jpeg = FrameEncoding::Jpeg;
        assert_eq!(
            admit(&envelope(640, 360, jpeg), &header_only(640, 360), max),
            Ok(())
        );
        let r = admit(&envelope(640, 360, jpeg), &header_only(16_000, 16_000), max).unwrap_err();
        assert_eq!(
            (r.reason, r.check, r.detail.as_str()),
            (
                DeadLetterReason::BadDimensions,
                "header_mismatch",
                "JPEG header claims 16000x16000, envelope says 640x360"
            )
        );
        let r = admit(
            &envelope(16_000, 16_000, jpeg),
            &header_only(16_000, 16_000),
            max,
        )
        .unwrap_err();
        assert_eq!(
            (r.reason, r.check),
            (DeadLetterReason::TooLarge, "max_pixels")
        );
        assert!(r.detail.contains("256000000 pixels"), "{}", r.detail);
        let r = admit(&envelope(640, 360, jpeg), b"not a jpeg", max).unwrap_err();
        assert_eq!(
            (r.reason, r.check),
            (DeadLetterReason::Undecodable, "header_unreadable")
        );
        // Raw frames: only the pixel bound (their length is checked against the envelope).
        let rgb = FrameEncoding::Rgb24;
        assert_eq!(admit(&envelope(640, 360, rgb), b"", max), Ok(()));
        assert!(admit(&envelope(4000, 4000, rgb), b"", max).is_err());
        assert!(crate::metrics::REFUSAL_CHECKS.contains(&r.check));
    }
}
