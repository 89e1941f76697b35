//! A lane's loader thread: follows the node's [`super::ModelSwitch`] through the pure
//! [`SwapMachine`] and hands its steps (warm candidates, canary changes) to the lane's
//! inference thread as [`Command`]s ([`super`] has the contract).
//!
//! It polls the switch every 100 ms (a plain mutex read), so a request reaches every lane,
//! including lanes created after it, within that. Loading runs here, beside the running
//! model on the same device; the inference thread only ever takes a finished [`Candidate`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};
use panoptes_coordinator_client::models::ModelRepository;
use tch::{Device, Kind, Tensor};

use super::{Refusal, Role, Step, SwapMachine, SwapSpec};
use crate::error::ModelError;
use crate::metrics::WorkerMetrics;
use crate::model::LoadedModel;

const POLL: Duration = Duration::from_millis(100);

/// A loaded, checked and warmed-up model, for the inference thread.
pub struct Candidate {
    /// The model, on the lane's device.
    pub model: LoadedModel,
    /// How long the warm-up took.
    pub warmup: Duration,
}

/// What the inference thread is asked to do, between two batches.
pub enum Command {
    /// Serve every camera with this model (blue-green).
    Switch(Candidate),
    /// Run this model beside the active one, as a canary or a shadow.
    Candidate(Candidate, Role),
    /// The canary's model serves every camera.
    PromoteCanary,
    /// The canary's cameras go back to the active model, or the shadow stops.
    EndCandidate,
    /// The candidate's cameras or sample change.
    Retarget(Role),
}

/// What a loader needs.
pub struct Loader {
    /// Where candidates come from.
    pub spec: SwapSpec,
    /// The lane's device.
    pub device: Device,
    /// Largest batch the lane runs (warm-up goes up to it).
    pub max_batch: usize,
    /// The version the lane started with.
    pub serving: String,
    /// Hands commands to the inference thread.
    pub commands: Sender<Command>,
    /// Set by the inference thread when it ends.
    pub stop: Arc<AtomicBool>,
    /// Metrics (refusals; the switch itself is counted by the inference thread).
    pub metrics: WorkerMetrics,
}

impl Loader {
    /// Starts the thread; it ends when `stop` is set or the inference thread is gone.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("model-loader".into())
            .spawn(move || self.run())
    }

    fn run(self) {
        let mut machine = SwapMachine::new(&self.serving, 0);
        while !self.stop.load(Ordering::Acquire) {
            let Some(req) = self.spec.switch.desired() else {
                std::thread::sleep(POLL);
                continue;
            };
            let Some(step) = machine.next(&req) else {
                std::thread::sleep(POLL);
                continue;
            };
            let command = match &step {
                Step::Load { version, role } => {
                    let as_ = role.as_ref().map_or("active", Role::kind);
                    tracing::info!(model = %self.spec.name, %version, role = as_, generation = req.generation, "loading a candidate model beside the running one");
                    match self.prepare(version) {
                        Ok(c) => match role {
                            Some(role) => Command::Candidate(c, role.clone()),
                            None => Command::Switch(c),
                        },
                        Err((why, error)) => {
                            self.refuse(&mut machine, version, why, &error);
                            continue;
                        }
                    }
                }
                Step::PromoteCanary => Command::PromoteCanary,
                Step::EndCandidate => Command::EndCandidate,
                Step::Retarget(role) => Command::Retarget(role.clone()),
            };
            if !self.hand_over(command) {
                return;
            }
            machine.done(step);
        }
    }

    fn refuse(&self, machine: &mut SwapMachine, version: &str, why: Refusal, error: &str) {
        tracing::error!(model = %self.spec.name, %version, result = why.label(), %error, serving = machine.serving(), "candidate model refused: the running model keeps serving");
        self.metrics
            .model_swaps
            .with_label_values(&[why.label()])
            .inc();
        self.spec
            .switch
            .book
            .refused(version, &format!("{}: {error}", why.label()));
        machine.refused(version, why);
    }

    /// Blocks until the inference thread takes `command`; false if it is gone.
    fn hand_over(&self, mut command: Command) -> bool {
        loop {
            match self.commands.send_timeout(command, POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Disconnected(_)) => return false,
                Err(SendTimeoutError::Timeout(c)) => {
                    if self.stop.load(Ordering::Acquire) {
                        return false;
                    }
                    command = c;
                }
            }
        }
    }

    /// Resolve (integrity), load (contract checked by the load's zero pass), check the name,
    /// warm up.
    fn prepare(&self, version: &str) -> Result<Candidate, (Refusal, String)> {
        let (model_path, manifest_path) = resolve(&self.spec.repository, &self.spec.name, version)?;
        let model = LoadedModel::load(&model_path, &manifest_path, self.device)
            .map_err(|e| (classify(&e), e.to_string()))?;
        let m = model.manifest();
        if m.name != self.spec.name || m.version != version {
            let got = format!("{}@{}", m.name, m.version);
            return Err((Refusal::Contract, format!("manifest names {got}")));
        }
        let started = Instant::now();
        warm_up(&model, self.max_batch).map_err(|e| (Refusal::Warmup, e.to_string()))?;
        Ok(Candidate {
            model,
            warmup: started.elapsed(),
        })
    }
}

/// The model and manifest files of `name`@`version` in `repository`, SHA-256 checked
/// (`ModelRepository::resolve`); any failure is [`Refusal::Integrity`]: the repository
/// cannot give that version intact (missing, bad manifest, bytes that do not match).
pub fn resolve(
    repository: &std::path::Path,
    name: &str,
    version: &str,
) -> Result<(PathBuf, PathBuf), (Refusal, String)> {
    let resolved = ModelRepository::open(repository)
        .and_then(|r| r.resolve(name, version))
        .map_err(|e| (Refusal::Integrity, e.to_string()))?;
    Ok((resolved.model_path, resolved.manifest_path))
}

/// Which refusal a load error is.
fn classify(e: &ModelError) -> Refusal {
    match e {
        ModelError::Spec(_) | ModelError::InputShape { .. } | ModelError::ManifestParse { .. } => {
            Refusal::Contract
        }
        ModelError::Inference { .. } => Refusal::Warmup,
        _ => Refusal::Load,
    }
}

/// Batch sizes the warm-up runs: 1, 2, 4, … below `max_batch`, then `max_batch`.
pub fn warmup_sizes(max_batch: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |b| Some(b * 2))
        .take_while(|b| *b < max_batch)
        .collect();
    sizes.push(max_batch.max(1));
    sizes
}

/// One forward pass of zeros at each of [`warmup_sizes`], output copied to the CPU (so a
/// GPU's kernels for every shape are built and its queue drained).
pub fn warm_up(model: &LoadedModel, max_batch: usize) -> Result<(), ModelError> {
    for b in warmup_sizes(max_batch) {
        let input = Tensor::zeros(
            model.manifest().input_shape(b),
            (Kind::Float, model.device()),
        );
        let _ = model.forward(&input)?.to_device(Device::Cpu);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_covers_every_power_of_two_and_the_max() {
        assert_eq!(warmup_sizes(1), vec![1]);
        assert_eq!(warmup_sizes(8), vec![1, 2, 4, 8]);
        assert_eq!(warmup_sizes(6), vec![1, 2, 4, 6]);
    }
}
