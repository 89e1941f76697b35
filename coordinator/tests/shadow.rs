//! Shadow rollouts end to end: a real `redis-server` and the real `panoptes-coordinator`
//! process. A shadow skips the promotion gate (an unvalidated version is accepted) but not
//! the integrity check; its share is 1–100 %; an identical request changes nothing, another
//! one replaces it; it excludes a canary both ways; `DELETE` ends it once; promote and
//! rollback end it; every change is published with the shadow; the CLI starts, shows and
//! stops one.

mod common;

use std::time::Duration;

use common::cli;
use common::models::{Rollouts, error};
use panoptes_coordinator_client::keys;
use panoptes_schemas::model::{ModelRollout, ModelShadow};
use panoptes_testkit::coordinator::TEST_TOKEN;
use serde_json::{Value, json};

/// The shared rollout fixture and the shadow's calls.
struct Fixture(Rollouts);

impl std::ops::Deref for Fixture {
    type Target = Rollouts;

    fn deref(&self) -> &Rollouts {
        &self.0
    }
}

impl Fixture {
    /// Versions 1.0 and 2.0 pass the gate, 3.0 is not validated, 4.0's model file was
    /// changed after its push (SHA-256 mismatch); two cameras in group `default`.
    fn start() -> Self {
        let r = Rollouts::start(
            &["1.0", "2.0", "3.0", "4.0"],
            &["1.0", "2.0", "4.0"],
            &["cam-a", "cam-b"],
            |_| {},
        );
        std::fs::write(r.root.join("det/4.0/model.pt"), b"tampered").unwrap();
        Self(r)
    }

    fn shadow(&self, version: &str, percent: u8) -> (u16, Value) {
        self.candidate("shadow", version, percent)
    }

    fn stop(&self) -> (u16, Value) {
        self.coord
            .api("DELETE", "/v1/rollouts/default/shadow", None)
            .unwrap()
    }

    fn shadows(&self, result: &str) -> f64 {
        self.coord
            .metric(&format!(
                "panoptes_coordinator_model_shadows_total{{result=\"{result}\"}}"
            ))
            .unwrap_or(0.0)
    }
}

#[test]
fn shadows_skip_the_gate_exclude_canaries_and_end_with_a_new_active_version() {
    let f = Fixture::start();
    let (code, v) = f.shadow("3.0", 10);
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("no active version of det"), "{v}");
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "1.0"})));
    assert_eq!(code, 200, "{v}");

    // Refusals: the share, the active version, a tampered file, an unknown group.
    for percent in [0, 101] {
        let (code, v) = f.shadow("3.0", percent);
        assert_eq!(code, 422, "{percent}: {v}");
    }
    let (code, v) = f.shadow("1.0", 10);
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("already the active version"), "{v}");
    let (code, v) = f.shadow("4.0", 10);
    assert_eq!(code, 409, "{v}");
    assert!(
        error(&v).contains("integrity check failed for det@4.0"),
        "{v}"
    );
    let (code, v) = f
        .coord
        .api(
            "POST",
            "/v1/rollouts/nowhere/shadow",
            Some(&json!({"model": "det", "version": "3.0", "percent": 10})),
        )
        .unwrap();
    assert_eq!(code, 404, "{v}");
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "3.0"})));
    assert_eq!(code, 409, "the gate refuses 3.0 for a promotion: {v}");

    // Unvalidated 3.0 as a shadow: accepted, published with the shadow.
    let mut sub = f.redis.connection().unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(keys::rollout_notify("default")).unwrap();
    let (code, v) = f.shadow("3.0", 10);
    assert_eq!((code, &v["changed"]), (200, &json!(true)), "{v}");
    let published: String = pubsub.get_message().unwrap().get_payload().unwrap();
    drop(pubsub);
    let r = ModelRollout::from_json(published.as_bytes()).unwrap();
    let s = r
        .shadow
        .clone()
        .expect("the published record carries the shadow");
    assert_eq!(
        (
            s.version.as_str(),
            s.percent,
            s.since_generation,
            r.generation
        ),
        ("3.0", 10, 2, 2)
    );
    assert_eq!(f.record(), r);
    let (code, v) = f.shadow("3.0", 10);
    assert_eq!((code, &v["changed"]), (200, &json!(false)), "{v}");
    assert_eq!(f.record(), r);

    // Another share replaces it; a canary is refused while it runs.
    let (code, v) = f.shadow("3.0", 40);
    assert_eq!(code, 200, "{v}");
    let r = f.record();
    let s = r.shadow.clone().unwrap();
    assert_eq!((s.percent, s.since_generation, r.generation), (40, 3, 3));
    let canary = json!({"model": "det", "version": "2.0", "percent": 50});
    let (code, v) = f.post("canary", Some(canary.clone()));
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("a shadow of det@3.0 on 40 %"), "{v}");

    // DELETE ends it once.
    let (code, v) = f.stop();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["shadow_ended"]["version"], "3.0", "{v}");
    let r = f.record();
    assert_eq!((r.shadow.clone(), r.generation), (None, 4));
    let (code, v) = f.stop();
    assert_eq!(code, 404, "{v}");

    // A canary refuses a shadow; rolling the canary back frees the group.
    let (code, v) = f.post("canary", Some(canary));
    assert_eq!(code, 200, "{v}");
    let (code, v) = f.shadow("3.0", 10);
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("a canary of det@2.0 is running"), "{v}");
    let (code, v) = f.post("rollback", None);
    assert_eq!(code, 200, "{v}");

    // Promote ends a running shadow (promoting the active version again does not).
    let (code, v) = f.shadow("3.0", 100);
    assert_eq!(code, 200, "{v}");
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "1.0"})));
    assert_eq!((code, &v["changed"]), (200, &json!(false)), "{v}");
    assert!(f.record().shadow.is_some());
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "2.0"})));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["shadow_ended"]["version"], "3.0", "{v}");
    let r = f.record();
    assert_eq!(
        (r.active.as_str(), r.previous.as_deref(), r.shadow.clone()),
        ("2.0", Some("1.0"), None)
    );
    let (code, v) = f.coord.api("GET", "/v1/rollouts/default", None).unwrap();
    assert_eq!(code, 200, "{v}");
    assert!(v["rollout"]["shadow"].is_null(), "{v}");

    // So does a rollback.
    let (code, v) = f.shadow("3.0", 25);
    assert_eq!(code, 200, "{v}");
    let (code, v) = f.post("rollback", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["shadow_ended"]["version"], "3.0", "{v}");
    let r = f.record();
    assert_eq!((r.active.as_str(), r.shadow.clone()), ("1.0", None));

    assert_eq!(f.shadows("ok"), 4.0);
    assert_eq!(f.shadows("rejected"), 6.0);
    assert_eq!(f.shadows("unchanged"), 1.0);
    assert_eq!(f.shadows("integrity"), 1.0);
    let (code, v) = f.coord.api("GET", "/v1/audit?limit=50", None).unwrap();
    assert_eq!(code, 200, "{v}");
    let ops = |op: &str| {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["op"] == op)
            .count()
    };
    assert_eq!(
        (ops("model.shadow"), ops("model.shadow.stop")),
        (4, 1),
        "{v}"
    );
}

#[test]
fn the_cli_starts_shows_and_stops_a_shadow() {
    let f = Fixture::start();
    let (code, v) = f.post("promote", Some(json!({"model": "det", "version": "1.0"})));
    assert_eq!(code, 200, "{v}");
    let api_env = [("PANOPTES_API_TOKEN", TEST_TOKEN)];
    let run = |args: &[&str]| {
        cli(
            &[&["--url", f.coord.http.as_str(), "models"], args].concat(),
            &api_env,
        )
    };

    let (code, out, err) = run(&["shadow", "default", "det", "3.0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("now shadows det@3.0 on 10 % of its frames beside det@1.0 (generation 2)"),
        "{out}"
    );
    let (code, out, err) = run(&[
        "shadow",
        "default",
        "det",
        "3.0",
        "--percent",
        "30",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let s: ModelShadow = serde_json::from_value(v["rollout"]["shadow"].clone()).unwrap();
    assert_eq!(
        (s.version.as_str(), s.percent, s.since_generation),
        ("3.0", 30, 3)
    );

    let (code, out, err) = run(&["status", "default"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("shadow: 3.0 on 30 % of the frames since ")
            && out.contains("generation 3")
            && out.contains("panoptes_worker_shadow_agreement{class}"),
        "{out}"
    );
    // Bad invocations never reach the API.
    for args in [
        &["shadow", "default", "det", "3.0", "--percent", "0"][..],
        &["shadow", "default", "det"],
        &["shadow", "default", "det", "3.0", "--stop"],
    ] {
        let (code, out, _) = run(args);
        assert_ne!(code, 0, "{args:?}: {out}");
    }
    assert_eq!(f.record().generation, 3);

    let (code, out, err) = run(&["shadow", "default", "--stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ended the shadow of det@3.0; it runs det@1.0 (generation 4)"),
        "{out}"
    );
    let (code, out, _) = run(&["status", "default"]);
    assert_eq!(code, 0);
    assert!(!out.contains("shadow:"), "{out}");
    let (code, out, err) = run(&["shadow", "default", "--stop", "--json"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("no shadow runs on group"), "{out}{err}");
}
