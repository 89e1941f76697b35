//! Canary rollouts end to end: a real `redis-server`, the real `panoptes-coordinator` process
//! (`[models.canary]` with small thresholds) and worker reports written into the report hash
//! as workers write them. The leader rolls back a slow candidate (naming latency), one that
//! drops a class (naming it) and one a worker refused; it promotes an equal one once
//! `observe` elapsed. Operator promote and rollback end a canary; promoting another version
//! during one is refused; the camera choice is stable; the CLI starts one and shows it. The
//! shared compare-and-set refuses a stale leader token and a record that changed.

mod common;

use std::time::{Duration, Instant};

use common::cli;
use common::models::{Rollouts, error};
use panoptes_coordinator::canary::CanaryCriteria;
use panoptes_coordinator_client::keys;
use panoptes_schemas::model::{ArmStats, CanaryReport, ModelRollout};
use panoptes_testkit::coordinator::TEST_TOKEN;
use panoptes_testkit::wait_until;
use serde_json::{Value, json};

/// How long the leader may take to judge a canary whose report is decisive.
const VERDICT_WITHIN: Duration = Duration::from_secs(5);

/// `frames` frames at `ms` per batch-1 pass, each with one `car` at `car_score` when given.
fn arm(frames: u64, ms: f64, car_score: Option<f32>) -> ArmStats {
    let mut a = ArmStats::default();
    for _ in 0..frames {
        a.pass(1, ms);
        a.frame(car_score.map(|s| ("car", s)));
    }
    a
}

/// The shared rollout fixture with four cameras and the canary's calls.
struct Fixture(Rollouts);

impl std::ops::Deref for Fixture {
    type Target = Rollouts;

    fn deref(&self) -> &Rollouts {
        &self.0
    }
}

impl Fixture {
    fn start() -> Self {
        let versions = ["1.0", "2.0", "3.0"];
        let cameras = ["cam-a", "cam-b", "cam-c", "cam-d"];
        Self(Rollouts::start(&versions, &versions, &cameras, |m| {
            m.canary = CanaryCriteria {
                min_frames: 10,
                min_passes: 3,
                observe: Duration::from_secs(2),
                max_duration: Duration::from_secs(120),
                ..CanaryCriteria::default()
            };
        }))
    }

    fn canary(&self, version: &str, percent: u8) -> (u16, Value) {
        self.candidate("canary", version, percent)
    }

    /// Writes worker `w-1`'s report for the running canary, as a worker does.
    fn report(&self, baseline: ArmStats, candidate: ArmStats, refused: Option<&str>) {
        let r = self.record();
        let k = r.canary.as_ref().expect("a canary runs");
        let report = CanaryReport {
            versions: [(r.active.clone(), baseline), (k.version.clone(), candidate)]
                .into_iter()
                .collect(),
            refused: refused
                .map(|why| (k.version.clone(), why.to_owned()))
                .into_iter()
                .collect(),
            at_ms: panoptes_coordinator_client::now_ms(),
        };
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(keys::canary_report("default", k.since_generation))
            .arg("w-1")
            .arg(report.to_json())
            .ignore()
            .cmd("EXPIRE")
            .arg(keys::canary_report("default", k.since_generation))
            .arg(keys::CANARY_REPORT_TTL_S)
            .ignore()
            .query(&mut self.redis.connection().unwrap())
            .unwrap();
    }

    /// Waits until the running canary ended; returns the record and how long it took.
    fn ended(&self, within: Duration) -> (ModelRollout, Duration) {
        let t = Instant::now();
        let r = wait_until("the canary to end", within, || {
            let r = self.record();
            r.canary.is_none().then_some(r)
        })
        .unwrap();
        (r, t.elapsed())
    }

    fn verdicts(&self, verdict: &str, by: &str) -> f64 {
        self.coord
            .metric(&format!(
                "panoptes_coordinator_canary_verdicts_total{{by=\"{by}\",verdict=\"{verdict}\"}}"
            ))
            .unwrap_or(0.0)
    }
}

#[test]
fn the_leader_judges_canaries_and_operators_can_end_them() {
    let f = Fixture::start();

    // No active version to compare with yet.
    let (code, v) = f.canary("2.0", 25);
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("no active version of det"), "{v}");
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "1.0"})));
    assert_eq!(code, 200, "{v}");
    let (code, v) = f.canary("1.0", 25);
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("already the active version"), "{v}");
    let (code, v) = f.post(
        "canary",
        Some(json!({"model": "det", "version": "2.0", "percent": 50, "cameras": ["cam-a", "elsewhere"]})),
    );
    assert_eq!(code, 422, "{v}");
    assert!(
        error(&v).contains("elsewhere") && !error(&v).contains("cam-a"),
        "{v}"
    );
    let (code, v) = f.canary("2.0", 0);
    assert_eq!(code, 422, "{v}");

    // 25 % of 4 cameras: exactly one, the same on a second identical request.
    let (code, v) = f.canary("2.0", 25);
    assert_eq!((code, &v["changed"]), (200, &json!(true)), "{v}");
    let r = f.record();
    let k = r.canary.clone().unwrap();
    assert_eq!(
        (k.cameras.len(), k.since_generation, r.generation),
        (1, 2, 2)
    );
    let (code, again) = f.canary("2.0", 25);
    assert_eq!((code, &again["changed"]), (200, &json!(false)), "{again}");
    assert_eq!(f.record(), r);
    let (code, v) = f.canary("2.0", 50);
    assert_eq!(code, 409, "{v}");
    // While it waits for reports, GET shows it holding.
    let (code, v) = f.coord.api("GET", "/v1/rollouts/default", None).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["canary"]["verdict"], "hold", "{v}");
    assert_eq!(v["canary"]["cameras"], json!(k.cameras));

    // A candidate 3x slower at equal batch sizes: rolled back, naming latency.
    f.report(arm(20, 10.0, Some(0.8)), arm(20, 30.0, Some(0.8)), None);
    let (r, took) = f.ended(VERDICT_WITHIN);
    let last = r.last_canary.clone().unwrap();
    assert_eq!(
        (last.verdict.as_str(), last.version.as_str()),
        ("rolled_back", "2.0")
    );
    assert!(
        last.reason.starts_with("coordinator: latency 3.00x") && last.reason.contains("max 1.50x"),
        "{last:?}"
    );
    assert_eq!(
        (r.active.as_str(), r.previous, r.generation),
        ("1.0", None, 3)
    );
    eprintln!("latency rollback after {took:?}");

    // A candidate that drops the class `car`: rolled back, naming it.
    let (code, v) = f.canary("2.0", 25);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        f.record().canary.unwrap().cameras,
        k.cameras,
        "stable choice"
    );
    f.report(arm(20, 10.0, Some(0.8)), arm(20, 10.0, None), None);
    let (r, _) = f.ended(VERDICT_WITHIN);
    let last = r.last_canary.unwrap();
    assert_eq!(last.verdict, "rolled_back");
    assert!(
        last.reason.contains("class car: 0.00 per frame vs 1.00"),
        "{last:?}"
    );
    assert_eq!(r.active, "1.0");

    // Equal figures: promoted once `observe` (2 s) elapsed.
    let (code, v) = f.canary("2.0", 25);
    assert_eq!(code, 200, "{v}");
    let started = f.record().canary.unwrap().started_ms;
    f.report(arm(20, 10.0, Some(0.8)), arm(20, 10.0, Some(0.8)), None);
    // observe (2 s) after the leader first saw it (within a second), then the next check.
    let (r, took) = f.ended(VERDICT_WITHIN + Duration::from_secs(3));
    eprintln!("promotion after {took:?}");
    let last = r.last_canary.clone().unwrap();
    assert_eq!(last.verdict, "promoted", "{last:?}");
    assert!(
        last.at_ms >= started + 2000,
        "promoted before observe: {last:?}"
    );
    assert_eq!(
        (r.active.as_str(), r.previous.as_deref()),
        ("2.0", Some("1.0"))
    );

    // A worker refused the candidate: rolled back at once.
    let (code, v) = f.canary("3.0", 50);
    assert_eq!(code, 200, "{v}");
    f.report(
        ArmStats::default(),
        ArmStats::default(),
        Some("integrity check failed"),
    );
    let (r, _) = f.ended(VERDICT_WITHIN);
    let last = r.last_canary.unwrap();
    assert_eq!(last.verdict, "rolled_back");
    assert!(
        last.reason.contains("worker w-1: integrity check failed"),
        "{last:?}"
    );
    assert_eq!(r.active, "2.0");

    // Operator promote during a canary: only the candidate, which ends it.
    let (code, v) = f.canary("3.0", 50);
    assert_eq!(code, 200, "{v}");
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "1.0"})));
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("a canary of det@3.0 is running"), "{v}");
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "3.0"})));
    assert_eq!(code, 200, "{v}");
    let r = f.record();
    let last = r.last_canary.clone().unwrap();
    assert_eq!(
        (r.active.as_str(), r.previous.as_deref(), r.canary),
        ("3.0", Some("2.0"), None)
    );
    assert_eq!(
        (last.verdict.as_str(), last.reason.as_str()),
        ("promoted", "promoted by default")
    );

    // Operator rollback during a canary (started with the CLI): ends it, 3.0 stays.
    let api_env = [("PANOPTES_API_TOKEN", TEST_TOKEN)];
    let run = |args: &[&str]| {
        cli(
            &[&["--url", f.coord.http.as_str()], args].concat(),
            &api_env,
        )
    };
    // `panoptes models canary default det 2.0 --percent 50` and `selection`.
    let canary_50 = |selection: &[&str]| {
        let start = [
            "models",
            "canary",
            "default",
            "det",
            "2.0",
            "--percent",
            "50",
        ];
        run(&[&start[..], selection].concat())
    };
    let (code, out, err) = canary_50(&["--cameras", "cam-a,cam-b,cam-c"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("now runs a canary of det@2.0 on 2 of its cameras (50 %)"),
        "{out}"
    );
    let (code, out, err) = run(&["models", "status", "default"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("canary: 2.0 on 50 %") && out.contains("verdict so far: hold"),
        "{out}"
    );
    assert!(
        out.contains("last canary: 3.0 promoted: promoted by default"),
        "{out}"
    );
    let (code, v) = f.post("rollback", None);
    assert_eq!(code, 200, "{v}");
    let r = f.record();
    let last = r.last_canary.unwrap();
    assert_eq!(
        (r.active.as_str(), r.previous.as_deref(), r.canary),
        ("3.0", Some("2.0"), None)
    );
    assert_eq!(
        (last.verdict.as_str(), last.reason.as_str()),
        ("rolled_back", "rolled back by default")
    );

    assert_eq!(f.verdicts("rolled_back", "coordinator"), 3.0);
    assert_eq!(f.verdicts("promoted", "coordinator"), 1.0);
    assert_eq!(f.verdicts("promoted", "operator"), 1.0);
    assert_eq!(f.verdicts("rolled_back", "operator"), 1.0);
    let (code, v) = f.coord.api("GET", "/v1/audit?limit=50", None).unwrap();
    assert_eq!(code, 200, "{v}");
    let by_coordinator = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["who"] == "coordinator" && e["op"] == "model.canary.rolled_back")
        .count();
    assert_eq!(by_coordinator, 3, "{v}");

    // By label: only the labelled cameras are eligible.
    for cam in ["cam-c", "cam-d"] {
        let (code, out, err) = run(&["cameras", "update", cam, "--label", "site=north"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = run(&["cameras", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("LABELS") && out.contains("site=north"),
        "{out}"
    );
    let (code, out, err) = canary_50(&["--label", "site=south"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("cameras labelled site=south: a canary needs at least 2 cameras"),
        "{err}"
    );
    let (code, out, err) = canary_50(&["--label", "site=north"]);
    assert_eq!(code, 0, "{out}{err}");
    let chosen = f.record().canary.unwrap().cameras;
    assert!(
        chosen.len() == 1 && ["cam-c", "cam-d"].contains(&chosen[0].as_str()),
        "{chosen:?}"
    );
    let (code, out, err) = run(&["models", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("CANDIDATE") && out.contains("canary 2.0 (50 %)"),
        "{out}"
    );
    let (code, out, err) = run(&["cameras", "update", "cam-d", "--unlabel", "site"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = run(&["cameras", "list"]);
    assert_eq!(out.matches("site=north").count(), 1, "{out}");
}

#[test]
fn the_shared_compare_and_set_refuses_a_stale_leader_and_a_changed_record() {
    use panoptes_coordinator::canary::record::compare_and_set;
    let redis = panoptes_testkit::RedisServer::start().unwrap();
    let mut c = redis.connection().unwrap();
    let first = ModelRollout {
        model: "det".into(),
        active: "1.0".into(),
        previous: None,
        generation: 1,
        updated_ms: 1,
        canary: None,
        last_canary: None,
        shadow: None,
    };
    assert!(compare_and_set(&mut c, "g", None, &first, None).unwrap());
    // Absent expected, present stored: refused.
    assert!(!compare_and_set(&mut c, "g", None, &first, None).unwrap());
    let second = ModelRollout {
        generation: 2,
        ..first.clone()
    };
    let _: () = redis::cmd("SET")
        .arg(keys::FENCE)
        .arg(7)
        .query(&mut c)
        .unwrap();
    let stale = compare_and_set(&mut c, "g", Some(&first), &second, Some(6)).unwrap_err();
    assert!(stale.to_string().contains("FENCED"), "{stale}");
    assert!(compare_and_set(&mut c, "g", Some(&first), &second, Some(7)).unwrap());
    // The record moved on: `first` is no longer what is stored.
    assert!(!compare_and_set(&mut c, "g", Some(&first), &second, Some(7)).unwrap());
    let stored: String = redis::cmd("GET")
        .arg(keys::rollout("g"))
        .query(&mut c)
        .unwrap();
    assert_eq!(ModelRollout::from_json(stored.as_bytes()).unwrap(), second);
}
