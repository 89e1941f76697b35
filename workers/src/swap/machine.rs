//! The loader's state machine (pure): from what the rollout record asks ([`SwapRequest`]) and
//! what the lane holds, the next [`Step`].
//!
//! ```text
//!   serving v ──Load(v')──────────────▶ serving v'          (blue-green)
//!   serving v ──Load(c, cameras)──────▶ serving v + canary c
//!   serving v + canary c ──PromoteCanary──▶ serving c
//!   serving v + canary c ──EndCanary──────▶ serving v
//!   serving v + canary c ──Cameras(set)───▶ same, other cameras
//! ```
//!
//! Steps come one at a time, each derived again from the latest request, so a record that
//! changes while a step runs is simply followed from where the lane stands. A canary is ended
//! (or promoted) before any other version is loaded: a lane never holds three models. A
//! version refused at some generation is not tried again until the record's generation
//! changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{CanaryRequest, Refusal, SwapRequest};

/// What the loader does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Load and warm this version; with cameras, as a canary on them, else to serve every
    /// camera.
    Load {
        /// The version.
        version: String,
        /// The canary's cameras.
        canary: Option<Arc<BTreeSet<String>>>,
    },
    /// The canary's version serves every camera.
    PromoteCanary,
    /// The canary's cameras go back to the active version.
    EndCanary,
    /// The canary moves to these cameras.
    Cameras(Arc<BTreeSet<String>>),
}

/// Where the lane stands, as its loader knows it.
#[derive(Debug, Clone)]
pub struct SwapMachine {
    serving: String,
    canary: Option<CanaryRequest>,
    generation: u64,
    /// Versions refused at `generation`.
    refused: BTreeSet<String>,
}

impl SwapMachine {
    /// Serving `version`; requests at `generation` or below are old.
    pub fn new(version: &str, generation: u64) -> Self {
        Self {
            serving: version.to_string(),
            canary: None,
            generation,
            refused: BTreeSet::new(),
        }
    }

    /// The version serving every camera but the canary's.
    pub fn serving(&self) -> &str {
        &self.serving
    }

    /// The canary's version, while one runs.
    pub fn canary(&self) -> Option<&str> {
        self.canary.as_ref().map(|c| c.version.as_str())
    }

    /// The next step towards `req`, if any.
    pub fn next(&mut self, req: &SwapRequest) -> Option<Step> {
        if req.generation < self.generation {
            return None;
        }
        if req.generation > self.generation {
            self.generation = req.generation;
            self.refused.clear();
        }
        if let Some(c) = &self.canary {
            let kept = req.version == self.serving
                && req
                    .canary
                    .as_ref()
                    .is_some_and(|rc| rc.version == c.version);
            if !kept {
                return Some(if req.version == c.version {
                    Step::PromoteCanary
                } else {
                    Step::EndCanary
                });
            }
            let wanted = req.canary.as_ref().map(|rc| &rc.cameras);
            return wanted
                .filter(|w| **w != c.cameras)
                .map(|w| Step::Cameras(w.clone()));
        }
        if req.version != self.serving {
            return (!self.refused.contains(&req.version)).then(|| Step::Load {
                version: req.version.clone(),
                canary: None,
            });
        }
        let rc = req.canary.as_ref()?;
        (rc.version != self.serving && !self.refused.contains(&rc.version)).then(|| Step::Load {
            version: rc.version.clone(),
            canary: Some(rc.cameras.clone()),
        })
    }

    /// `step` was handed to the inference thread: the lane stands there now.
    pub fn done(&mut self, step: Step) {
        match step {
            Step::Load {
                version,
                canary: None,
            } => self.serving = version,
            Step::Load {
                version,
                canary: Some(cameras),
            } => self.canary = Some(CanaryRequest { version, cameras }),
            Step::PromoteCanary => {
                if let Some(c) = self.canary.take() {
                    self.serving = c.version;
                }
            }
            Step::EndCanary => self.canary = None,
            Step::Cameras(cameras) => {
                if let Some(c) = &mut self.canary {
                    c.cameras = cameras;
                }
            }
        }
    }

    /// Loading `version` failed; it is not tried again at this generation.
    pub fn refused(&mut self, version: &str, _why: Refusal) {
        self.refused.insert(version.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: &str, generation: u64) -> SwapRequest {
        SwapRequest {
            version: v.into(),
            canary: None,
            generation,
        }
    }

    fn cams(c: &[&str]) -> Arc<BTreeSet<String>> {
        Arc::new(c.iter().map(|s| s.to_string()).collect())
    }

    fn canary(v: &str, c: &[&str], generation: u64) -> SwapRequest {
        SwapRequest {
            version: "1".into(),
            canary: Some(CanaryRequest {
                version: v.into(),
                cameras: cams(c),
            }),
            generation,
        }
    }

    fn load(v: &str) -> Option<Step> {
        Some(Step::Load {
            version: v.into(),
            canary: None,
        })
    }

    /// Applies the step `next` gives and returns it.
    fn step(m: &mut SwapMachine, r: &SwapRequest) -> Option<Step> {
        let s = m.next(r);
        if let Some(s) = s.clone() {
            m.done(s);
        }
        s
    }

    #[test]
    fn blue_green_loads_new_versions_once_per_generation() {
        let mut m = SwapMachine::new("1", 0);
        assert_eq!(m.next(&req("1", 1)), None, "already serving");
        assert_eq!(step(&mut m, &req("2", 2)), load("2"));
        assert_eq!(m.next(&req("2", 2)), None, "done");
        assert_eq!(m.next(&req("3", 1)), None, "old generation");
        assert_eq!(m.next(&req("3", 4)), load("3"));
        m.refused("3", Refusal::Integrity);
        assert_eq!(m.serving(), "2");
        assert_eq!(m.next(&req("3", 4)), None, "same record: not retried");
        assert_eq!(m.next(&req("3", 5)), load("3"), "record changed");
        m.refused("3", Refusal::Load);
        assert_eq!(m.next(&req("2", 6)), None, "rollback to the running one");
    }

    #[test]
    fn canary_starts_moves_and_is_promoted_or_ended() {
        let mut m = SwapMachine::new("1", 0);
        let start = canary("2", &["a"], 2);
        assert_eq!(
            step(&mut m, &start),
            Some(Step::Load {
                version: "2".into(),
                canary: Some(cams(&["a"]))
            })
        );
        assert_eq!((m.serving(), m.canary()), ("1", Some("2")));
        assert_eq!(m.next(&start), None, "nothing more to do");
        let moved = canary("2", &["a", "b"], 3);
        assert_eq!(step(&mut m, &moved), Some(Step::Cameras(cams(&["a", "b"]))));
        // Promoted: the candidate serves everyone, nothing is loaded.
        assert_eq!(step(&mut m, &req("2", 4)), Some(Step::PromoteCanary));
        assert_eq!((m.serving(), m.canary()), ("2", None));
        assert_eq!(m.next(&req("2", 4)), None);
        // A new canary, rolled back: the active version stays.
        let mut start = canary("3", &["a"], 5);
        start.version = "2".into();
        step(&mut m, &start);
        assert_eq!(step(&mut m, &req("2", 6)), Some(Step::EndCanary));
        assert_eq!((m.serving(), m.canary()), ("2", None));
        assert_eq!(m.next(&req("2", 6)), None);
    }

    #[test]
    fn a_canary_ends_before_another_version_loads() {
        let mut m = SwapMachine::new("1", 0);
        step(&mut m, &canary("2", &["a"], 1));
        // The record jumps to an unrelated version: end the canary, then load.
        let jump = req("4", 2);
        assert_eq!(step(&mut m, &jump), Some(Step::EndCanary));
        assert_eq!(step(&mut m, &jump), load("4"));
        // Another candidate replaces the canary: end it, then load the new one as a canary.
        step(
            &mut m,
            &SwapRequest {
                version: "4".into(),
                ..canary("5", &["a"], 3)
            },
        );
        let other = SwapRequest {
            version: "4".into(),
            ..canary("6", &["a"], 4)
        };
        assert_eq!(step(&mut m, &other), Some(Step::EndCanary));
        assert_eq!(
            step(&mut m, &other),
            Some(Step::Load {
                version: "6".into(),
                canary: Some(cams(&["a"]))
            })
        );
    }

    #[test]
    fn a_refused_canary_is_not_retried_until_the_record_changes() {
        let mut m = SwapMachine::new("1", 0);
        let start = canary("2", &["a"], 1);
        assert!(m.next(&start).is_some());
        m.refused("2", Refusal::Warmup);
        assert_eq!(m.next(&start), None);
        assert_eq!(m.canary(), None);
        assert!(m.next(&canary("2", &["a"], 2)).is_some());
    }
}
