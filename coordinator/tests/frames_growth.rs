//! Growing the frames topic (`panoptes_coordinator::growth`) against real brokers: two
//! development brokers (one per region) whose fronts answer Kafka's CreatePartitions, a real
//! `redis-server`, and the operator API. A camera that finds every partition taken grows the
//! topic in both regions (seen by a fresh Kafka client's metadata) and gets the new
//! partition; past the maximum, and with growth off, the 409 says what to do; a region whose
//! Kafka is down refuses the write (503, nothing recorded) and the retry completes.

mod common;

use std::time::Duration;

use common::{Api, ApiOptions};
use panoptes_coordinator::growth::{FramesGrowth, FramesGrowthConfig};
use panoptes_testkit::DevBroker;
use panoptes_testkit::kafka::partition_count;
use serde_json::{Value, json};

fn camera(id: &str) -> Value {
    json!({ "id": id, "url": format!("rtsp://10.0.0.9/{id}"), "region": "eu" })
}

fn recorded(api: &Api) -> Option<i32> {
    api.redis_cmd::<Option<i32>>(&["GET", "panoptes:frames:partitions"])
}

fn growths(api: &Api, outcome: &str) -> f64 {
    panoptes_testkit::metric_value(
        &api.metrics_text(),
        &format!("panoptes_coordinator_frames_growth_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn a_full_frames_topic_grows_in_every_region_up_to_its_maximum() {
    let eu = DevBroker::start_growable(1).unwrap();
    let us = DevBroker::start_growable(1).unwrap();
    let topic = panoptes_testkit::unique_name("frames");
    for b in [&eu, &us] {
        b.create_growable_topic(&topic, 2, 4).unwrap();
    }
    let cfg = FramesGrowthConfig {
        max_partitions: 4,
        timeout: Duration::from_secs(3),
        ..FramesGrowthConfig::default()
    };
    let growth = FramesGrowth::new(
        &topic,
        2,
        &cfg,
        [
            ("eu".to_string(), eu.bootstrap.clone()),
            ("us".to_string(), us.bootstrap.clone()),
        ],
    );
    let api = Api::start_opts(ApiOptions {
        frames_partitions: 2,
        growth: Some(growth),
        ..ApiOptions::default()
    });

    for id in ["a", "b"] {
        let (code, v) = api.req("POST", "/v1/cameras", Some(&camera(id)));
        assert_eq!(code, 201, "{v}");
    }
    assert_eq!(recorded(&api), None, "no growth while partitions are free");

    // The third camera: both regions' topics grow to 3 and it gets partition 2.
    let (code, v) = api.req("POST", "/v1/cameras", Some(&camera("c")));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["camera"]["partition"], 2, "{v}");
    for b in [&eu, &us] {
        assert_eq!(partition_count(&b.bootstrap, &topic).unwrap(), 3);
    }
    assert_eq!(recorded(&api), Some(3));
    assert_eq!(growths(&api, "grown"), 1.0);

    // Two more at once need 5, over the maximum of 4: refused, nothing changes.
    let (code, v) = api.req(
        "POST",
        "/v1/apply",
        Some(&json!({ "cameras": [camera("a"), camera("b"), camera("c"), camera("d"), camera("e")] })),
    );
    assert_eq!(code, 409, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("maximum of 4") && msg.contains("max_partitions"),
        "{msg}"
    );
    assert_eq!(partition_count(&eu.bootstrap, &topic).unwrap(), 3);
    assert_eq!(growths(&api, "refused"), 1.0);
    let (_, list) = api.req("GET", "/v1/cameras", None);
    assert_eq!(list["cameras"].as_array().unwrap().len(), 3, "{list}");

    // Region us's Kafka down: eu grows, us does not answer, the write is refused with the
    // region named and nothing recorded.
    let (code, body) = us.api("POST", "/down", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, v) = api.req("POST", "/v1/cameras", Some(&camera("d")));
    assert_eq!(code, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("region us"), "{v}");
    assert_eq!(recorded(&api), Some(3));
    assert_eq!(growths(&api, "failed"), 1.0);
    let (code, _) = api.req("GET", "/v1/cameras/d", None);
    assert_eq!(code, 404);

    // Back up: the retry finds eu grown already (INVALID_PARTITIONS counts as done).
    let (code, body) = us.api("POST", "/up", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, v) = api.req("POST", "/v1/cameras", Some(&camera("d")));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["camera"]["partition"], 3, "{v}");
    for b in [&eu, &us] {
        assert_eq!(partition_count(&b.bootstrap, &topic).unwrap(), 4);
    }
    assert_eq!(recorded(&api), Some(4));
    assert_eq!(growths(&api, "grown"), 2.0);
    let (code, status) = api.req("GET", "/v1/status", None);
    assert_eq!(code, 200, "{status}");
    assert_eq!(
        (
            &status["frames_partitions"],
            &status["frames_partitions_max"]
        ),
        (&json!(4), &json!(4)),
        "{status}"
    );
}

#[test]
fn with_growth_off_a_full_topic_says_what_to_do() {
    let api = Api::start_with(1);
    let (code, v) = api.req("POST", "/v1/cameras", Some(&camera("a")));
    assert_eq!(code, 201, "{v}");
    let (code, v) = api.req("POST", "/v1/cameras", Some(&camera("b")));
    assert_eq!(code, 409, "{v}");
    let msg = v["error"].as_str().unwrap();
    for hint in [
        "Remove a camera",
        "--partitions 2",
        "frames_partitions",
        "[frames_growth] max_partitions",
    ] {
        assert!(msg.contains(hint), "{hint:?} in {msg}");
    }
    assert_eq!(recorded(&api), None);
    assert_eq!(growths(&api, "refused"), 1.0);
    let (_, status) = api.req("GET", "/v1/status", None);
    assert_eq!(
        (
            &status["frames_partitions"],
            &status["frames_partitions_max"]
        ),
        (&json!(1), &json!(0)),
        "{status}"
    );
}
