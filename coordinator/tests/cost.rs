//! Cost per camera-hour and packing, with a real `redis-server`, a real coordinator process
//! and lightweight members (`MemberAgent`, as the nodes run it) in a known configuration:
//! prices cpu 2, cuda 10, ingest 1 per hour; group `a` has a cpu worker (capacity 50) and
//! three 640×360 cameras at 10 fps, group `b` a cuda worker (capacity 40) and one; one
//! ingest node streams all four. Expected: `a` 2 + ¾ × 1 = 2.75 per hour, 0.9167 per
//! camera-hour, packing 30 / 50 = 0.6; `b` 10 + ¼ = 10.25 per hour and per camera-hour,
//! packing 0.25; 13 per hour in all. The metrics, `GET /v1/status` and `panoptes status`'s
//! text show them; once group `b` is gone (its camera removed, its worker stopped) its
//! series are removed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_coordinator::api::StatusView;
use panoptes_coordinator::cli::status_text;
use panoptes_coordinator_client::{MemberAgent, MemberKind};
use panoptes_testkit::coordinator::config;
use panoptes_testkit::{Coordinator, RedisServer, unique_name, wait_until};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use common::members::member;

const CAMERAS: [(&str, &str); 4] = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")];

fn near(v: Option<f64>, want: f64) -> bool {
    v.is_some_and(|v| (v - want).abs() < 1e-3)
}

fn series(c: &Coordinator, name: &str, group: &str) -> Option<f64> {
    c.metric(&format!("{name}{{group=\"{group}\"}}"))
}

#[test]
fn cost_and_packing_per_group_in_metrics_and_status() -> Result<()> {
    let redis = RedisServer::start()?;
    let topic = unique_name("frames");
    let mut cfg = config("c1", &redis.url, "127.0.0.1:9", &topic, 8);
    cfg.leader.ttl = Duration::from_secs(1);
    cfg.cost.price_per_hour = [("cpu", 2.0), ("cuda", 10.0), ("ingest", 1.0)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let coord = Coordinator::start(&cfg)?;
    coord.wait_leader(Duration::from_secs(10))?;
    for (i, (id, group)) in CAMERAS.iter().enumerate() {
        coord.add_camera(&json!({
            "id": id, "url": format!("rtsp://127.0.0.1:1/{id}"), "group": group,
            "fps": 10, "width": 640, "height": 360, "partition": i,
        }))?;
    }

    let cancel = CancellationToken::new();
    let w2_cancel = cancel.child_token();
    let (ingest, t_i) = MemberAgent::start(
        member(MemberKind::Ingest, "i1", &redis, &topic),
        cancel.clone(),
    )?;
    let mut report = serde_json::Map::new();
    for (id, _) in CAMERAS {
        report.insert(id.into(), json!({"state": "streaming", "fps": 10.0}));
    }
    ingest.set_report(json!({ "cameras": report }));
    let (_w1, t_w1) = MemberAgent::start(
        member(MemberKind::Worker, "w1", &redis, &topic).placed("local", "a", 50.0),
        cancel.clone(),
    )?;
    let (_w2, t_w2) = MemberAgent::start(
        member(MemberKind::Worker, "w2", &redis, &topic)
            .placed("local", "b", 40.0)
            .classed("cuda"),
        w2_cancel.clone(),
    )?;

    let per_cam = "panoptes_coordinator_group_cost_per_camera_hour";
    let packing = "panoptes_coordinator_group_packing_ratio";
    let per_hour = "panoptes_coordinator_group_cost_per_hour";
    wait_until("the cost metrics", Duration::from_secs(15), || {
        (near(series(&coord, per_cam, "a"), 2.75 / 3.0)
            && near(series(&coord, per_cam, "b"), 10.25))
        .then_some(())
    })
    .with_context(|| {
        format!(
            "a {:?}, b {:?}",
            series(&coord, per_cam, "a"),
            series(&coord, per_cam, "b")
        )
    })?;
    assert!(near(series(&coord, per_hour, "a"), 2.75));
    assert!(near(series(&coord, per_hour, "b"), 10.25));
    assert!(near(series(&coord, packing, "a"), 0.6));
    assert!(near(series(&coord, packing, "b"), 0.25));
    let fleet = |part: &str| {
        coord.metric(&format!(
            "panoptes_coordinator_fleet_cost_per_hour{{part=\"{part}\"}}"
        ))
    };
    assert!(near(fleet("total"), 13.0), "{:?}", fleet("total"));
    assert!(near(fleet("idle_ingest"), 0.0));

    // The API view `panoptes status` reads (the leader publishes right after it sets the
    // metrics), and its text.
    let view = wait_until("the figures in /v1/status", Duration::from_secs(5), || {
        let (code, body) = coord.api("GET", "/v1/status", None).ok()?;
        let view: StatusView = serde_json::from_value(body).ok().filter(|_| code == 200)?;
        let published = view.groups.iter().filter_map(|g| g.cost.as_ref());
        (published.filter(|c| c.per_camera_hour.is_some()).count() == 2).then_some(view)
    })?;
    let groups: BTreeMap<&str, _> = view.groups.iter().map(|g| (g.group.as_str(), g)).collect();
    let a = groups["a"]
        .cost
        .as_ref()
        .context("group a has cost figures")?;
    assert!(a.priced && a.unpriced.is_empty(), "{a:?}");
    assert_eq!((a.cameras, a.workers), (3, 1));
    assert!(
        near(a.per_camera_hour, 0.9167) && near(a.packing, 0.6),
        "{a:?}"
    );
    let b = groups["b"]
        .cost
        .as_ref()
        .context("group b has cost figures")?;
    assert!(
        near(b.workers_per_hour, 10.0) && near(b.ingest_per_hour, 0.25),
        "{b:?}"
    );
    let classes: BTreeMap<&str, &str> = view
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.node_class.as_str()))
        .collect();
    assert_eq!(
        classes,
        [("i1", "ingest"), ("w1", "cpu"), ("w2", "cuda")]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    );
    let text = status_text(&view);
    eprintln!("{text}");
    for needle in [
        "PACKING",
        "COST/H",
        "COST/CAM-H",
        "CLASS",
        "cuda",
        "frames partitions: ",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let row_a = text
        .lines()
        .find(|l| l.starts_with("a "))
        .context("group a's row")?;
    for cell in ["0.60", "2.750", "0.9167"] {
        assert!(row_a.contains(cell), "{cell} missing in {row_a:?}");
    }
    assert!(!text.contains("no prices configured"), "{text}");

    // Group b goes: its camera removed, its worker stopped. Its series go with it.
    let (code, body) = coord.api("DELETE", "/v1/cameras/b1", None)?;
    assert!((200..300).contains(&code), "{code} {body}");
    w2_cancel.cancel();
    t_w2.join().expect("w2 thread");
    wait_until("group b's series removed", Duration::from_secs(10), || {
        (series(&coord, per_cam, "b").is_none()
            && series(&coord, packing, "b").is_none()
            && series(&coord, per_hour, "b").is_none())
        .then_some(())
    })?;
    // The ingest node now serves group a alone: all of its price is a's.
    wait_until(
        "group a carries the whole ingest node",
        Duration::from_secs(10),
        || near(series(&coord, per_hour, "a"), 3.0).then_some(()),
    )?;
    assert!(near(series(&coord, per_cam, "a"), 1.0));

    cancel.cancel();
    for t in [t_i, t_w1] {
        t.join().expect("member thread");
    }
    Ok(())
}
