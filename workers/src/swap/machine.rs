//! The loader's state machine (pure): from what the rollout record asks ([`SwapRequest`]) and
//! what the lane holds, the next [`Step`].
//!
//! ```text
//!   serving v ──Load(v')──────────────────▶ serving v'          (blue-green)
//!   serving v ──Load(c, canary cameras)───▶ serving v + canary c
//!   serving v ──Load(s, shadow percent)───▶ serving v + shadow s
//!   serving v + canary c ──PromoteCanary──▶ serving c
//!   serving v + candidate ──EndCandidate──▶ serving v
//!   serving v + candidate ──Retarget(role)─▶ same, other cameras / sample
//! ```
//!
//! Steps come one at a time, each derived again from the latest request, so a record that
//! changes while a step runs is simply followed from where the lane stands. A candidate (a
//! canary or a shadow) is ended, or a canary promoted, before any other version is loaded: a
//! lane never holds three models; a shadow's version that becomes active is loaded again as
//! the active one. A version refused at some generation is not tried again until the
//! record's generation changes.

use std::collections::BTreeSet;

use super::{CandidateRequest, Refusal, Role, SwapRequest};

/// What the loader does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Load and warm this version: as a candidate in `role`, or (without) to serve every
    /// camera.
    Load {
        /// The version.
        version: String,
        /// Canary or shadow.
        role: Option<Role>,
    },
    /// The canary's version serves every camera.
    PromoteCanary,
    /// The canary's cameras go back to the active version, or the shadow stops.
    EndCandidate,
    /// The candidate keeps its version with other cameras (canary) or sample (shadow).
    Retarget(Role),
}

/// Where the lane stands, as its loader knows it.
#[derive(Debug, Clone)]
pub struct SwapMachine {
    serving: String,
    candidate: Option<CandidateRequest>,
    generation: u64,
    /// Versions refused at `generation`.
    refused: BTreeSet<String>,
}

impl SwapMachine {
    /// Serving `version`; requests at `generation` or below are old.
    pub fn new(version: &str, generation: u64) -> Self {
        Self {
            serving: version.to_string(),
            candidate: None,
            generation,
            refused: BTreeSet::new(),
        }
    }

    /// The version serving every camera but a canary's.
    pub fn serving(&self) -> &str {
        &self.serving
    }

    /// The candidate in the lane, if any.
    pub fn candidate(&self) -> Option<&CandidateRequest> {
        self.candidate.as_ref()
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
        if let Some(c) = &self.candidate {
            let wanted = req.candidate.as_ref();
            let kept = req.version == self.serving
                && wanted.is_some_and(|w| w.version == c.version && w.role.kind() == c.role.kind());
            if !kept {
                let promote = req.version == c.version && matches!(c.role, Role::Canary(_));
                return Some(if promote {
                    Step::PromoteCanary
                } else {
                    Step::EndCandidate
                });
            }
            return wanted
                .filter(|w| w.role != c.role)
                .map(|w| Step::Retarget(w.role.clone()));
        }
        if req.version != self.serving {
            return (!self.refused.contains(&req.version)).then(|| Step::Load {
                version: req.version.clone(),
                role: None,
            });
        }
        let w = req.candidate.as_ref()?;
        (w.version != self.serving && !self.refused.contains(&w.version)).then(|| Step::Load {
            version: w.version.clone(),
            role: Some(w.role.clone()),
        })
    }

    /// `step` was handed to the inference thread: the lane stands there now.
    pub fn done(&mut self, step: Step) {
        match step {
            Step::Load {
                version,
                role: None,
            } => self.serving = version,
            Step::Load {
                version,
                role: Some(role),
            } => self.candidate = Some(CandidateRequest { version, role }),
            Step::PromoteCanary => {
                if let Some(c) = self.candidate.take() {
                    self.serving = c.version;
                }
            }
            Step::EndCandidate => self.candidate = None,
            Step::Retarget(role) => {
                if let Some(c) = &mut self.candidate {
                    c.role = role;
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
    use std::sync::Arc;

    use super::*;

    fn req(v: &str, generation: u64) -> SwapRequest {
        SwapRequest {
            version: v.into(),
            candidate: None,
            generation,
        }
    }

    fn cams(c: &[&str]) -> Arc<BTreeSet<String>> {
        Arc::new(c.iter().map(|s| s.to_string()).collect())
    }

    fn canary(v: &str, c: &[&str], generation: u64) -> SwapRequest {
        SwapRequest {
            version: "1".into(),
            candidate: Some(CandidateRequest {
                version: v.into(),
                role: Role::Canary(cams(c)),
            }),
            generation,
        }
    }

    fn shadow(v: &str, percent: u8, generation: u64) -> SwapRequest {
        SwapRequest {
            version: "1".into(),
            candidate: Some(CandidateRequest {
                version: v.into(),
                role: Role::Shadow(percent),
            }),
            generation,
        }
    }

    fn load(v: &str) -> Option<Step> {
        Some(Step::Load {
            version: v.into(),
            role: None,
        })
    }

    fn load_as(v: &str, role: Role) -> Option<Step> {
        Some(Step::Load {
            version: v.into(),
            role: Some(role),
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
            load_as("2", Role::Canary(cams(&["a"])))
        );
        assert_eq!(m.candidate().map(|c| c.version.as_str()), Some("2"));
        assert_eq!(m.next(&start), None, "nothing more to do");
        let moved = canary("2", &["a", "b"], 3);
        assert_eq!(
            step(&mut m, &moved),
            Some(Step::Retarget(Role::Canary(cams(&["a", "b"]))))
        );
        // Promoted: the candidate serves everyone, nothing is loaded.
        assert_eq!(step(&mut m, &req("2", 4)), Some(Step::PromoteCanary));
        assert_eq!((m.serving(), m.candidate()), ("2", None));
        assert_eq!(m.next(&req("2", 4)), None);
        // A new canary, rolled back: the active version stays.
        let mut start = canary("3", &["a"], 5);
        start.version = "2".into();
        step(&mut m, &start);
        assert_eq!(step(&mut m, &req("2", 6)), Some(Step::EndCandidate));
        assert_eq!((m.serving(), m.candidate()), ("2", None));
        assert_eq!(m.next(&req("2", 6)), None);
    }

    #[test]
    fn a_canary_ends_before_another_version_loads() {
        let mut m = SwapMachine::new("1", 0);
        step(&mut m, &canary("2", &["a"], 1));
        // The record jumps to an unrelated version: end the canary, then load.
        let jump = req("4", 2);
        assert_eq!(step(&mut m, &jump), Some(Step::EndCandidate));
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
        assert_eq!(step(&mut m, &other), Some(Step::EndCandidate));
        assert_eq!(
            step(&mut m, &other),
            load_as("6", Role::Canary(cams(&["a"])))
        );
        // A shadow of the canary's version is another role: end, then load as a shadow.
        let as_shadow = SwapRequest {
            version: "4".into(),
            ..shadow("6", 10, 5)
        };
        assert_eq!(step(&mut m, &as_shadow), Some(Step::EndCandidate));
        assert_eq!(step(&mut m, &as_shadow), load_as("6", Role::Shadow(10)));
    }

    #[test]
    fn a_shadow_starts_resamples_and_ends_and_is_never_promoted_in_place() {
        let mut m = SwapMachine::new("1", 0);
        assert_eq!(
            step(&mut m, &shadow("2", 10, 1)),
            load_as("2", Role::Shadow(10))
        );
        assert_eq!(m.next(&shadow("2", 10, 1)), None);
        assert_eq!(
            step(&mut m, &shadow("2", 50, 2)),
            Some(Step::Retarget(Role::Shadow(50)))
        );
        // Its version becomes active: the shadow ends and the version loads as active.
        assert_eq!(step(&mut m, &req("2", 3)), Some(Step::EndCandidate));
        assert_eq!(step(&mut m, &req("2", 3)), load("2"));
        assert_eq!(m.next(&req("2", 3)), None);
    }

    #[test]
    fn a_refused_canary_is_not_retried_until_the_record_changes() {
        let mut m = SwapMachine::new("1", 0);
        let start = canary("2", &["a"], 1);
        assert!(m.next(&start).is_some());
        m.refused("2", Refusal::Warmup);
        assert_eq!(m.next(&start), None);
        assert_eq!(m.candidate(), None);
        assert!(m.next(&canary("2", &["a"], 2)).is_some());
    }
}
