use super::*;

fn prices(p: &[(&str, f64)]) -> CostConfig {
    CostConfig {
        price_per_hour: p.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

fn load(demand: f64, capacity: f64, cameras: usize) -> Load {
    Load {
        demand,
        capacity,
        cameras,
    }
}

fn streaming(p: &[(&str, usize)]) -> BTreeMap<String, usize> {
    p.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Group `a`: one cpu worker, 3 cameras; group `b`: one cuda worker, 1 camera; one ingest
/// node streams all four.
fn fleet() -> Inputs {
    Inputs {
        workers: vec![("a".into(), "cpu".into()), ("b".into(), "cuda".into())],
        ingest: vec![("ingest".into(), streaming(&[("a", 3), ("b", 1)]))],
        loads: [
            ("a".to_string(), load(30.0, 50.0, 3)),
            ("b".to_string(), load(10.0, 40.0, 1)),
        ]
        .into_iter()
        .collect(),
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn workers_cost_their_group_and_ingest_is_shared_by_streaming_cameras() {
    let cfg = prices(&[("cpu", 2.0), ("cuda", 10.0), ("ingest", 1.0)]);
    let r = compute(&cfg, &fleet());
    let a = &r.groups["a"];
    assert!(a.priced && a.unpriced.is_empty());
    assert_eq!((a.workers, a.cameras), (1, 3));
    assert!(close(a.workers_per_hour, 2.0), "{a:?}");
    assert!(close(a.ingest_per_hour, 0.75), "{a:?}");
    assert!(close(a.per_hour, 2.75), "{a:?}");
    assert!(close(a.per_camera_hour, 2.75 / 3.0), "{a:?}");
    assert!(close(a.packing, 0.6), "{a:?}");
    let b = &r.groups["b"];
    assert!(close(b.per_hour, 10.25), "{b:?}");
    assert!(close(b.per_camera_hour, 10.25), "{b:?}");
    assert!(close(b.packing, 0.25), "{b:?}");
    assert!(close(r.total_per_hour, 13.0), "{r:?}");
    assert!(close(r.idle_ingest_per_hour, 0.0), "{r:?}");
}

#[test]
fn without_prices_there_is_packing_but_no_cost() {
    let r = compute(&CostConfig::default(), &fleet());
    let a = &r.groups["a"];
    assert!(!a.priced);
    assert!(close(a.packing, 0.6));
    assert_eq!(
        (a.per_hour, a.per_camera_hour, a.workers_per_hour),
        (None, None, None)
    );
    assert!(
        a.unpriced.is_empty(),
        "nothing is 'unpriced' without prices"
    );
    assert_eq!((r.total_per_hour, r.idle_ingest_per_hour), (None, None));
}

#[test]
fn an_unpriced_class_makes_its_figures_unknown_never_free() {
    let cfg = prices(&[("cpu", 2.0), ("ingest", 1.0)]);
    let r = compute(&cfg, &fleet());
    assert!(close(r.groups["a"].per_hour, 2.75), "a has no cuda member");
    let b = &r.groups["b"];
    assert_eq!((b.per_hour, b.per_camera_hour), (None, None), "{b:?}");
    assert!(close(b.ingest_per_hour, 0.25));
    assert_eq!(b.unpriced.iter().collect::<Vec<_>>(), vec!["cuda"]);
    assert_eq!(r.total_per_hour, None);
    // An unpriced ingest node leaves the groups it serves unknown.
    let cfg = prices(&[("cpu", 2.0), ("cuda", 10.0)]);
    let r = compute(&cfg, &fleet());
    assert_eq!(r.groups["a"].per_hour, None);
    assert!(close(r.groups["a"].workers_per_hour, 2.0));
    assert!(r.groups["a"].unpriced.contains("ingest"));
}

#[test]
fn idle_ingest_nodes_and_groups_without_cameras_or_capacity() {
    let cfg = prices(&[("cpu", 2.0), ("ingest", 1.0)]);
    let inputs = Inputs {
        workers: vec![("a".into(), "cpu".into()), ("a".into(), "cpu".into())],
        ingest: vec![
            ("ingest".into(), BTreeMap::new()),
            ("ingest".into(), streaming(&[("c", 0)])),
        ],
        loads: [
            ("a".to_string(), load(0.0, 20.0, 0)),
            ("c".to_string(), load(5.0, 0.0, 0)),
        ]
        .into_iter()
        .collect(),
    };
    let r = compute(&cfg, &inputs);
    assert!(close(r.idle_ingest_per_hour, 2.0), "{r:?}");
    assert!(close(r.total_per_hour, 6.0), "{r:?}");
    let a = &r.groups["a"];
    assert!(close(a.per_hour, 4.0));
    assert_eq!(
        a.per_camera_hour, None,
        "no streaming camera: no per-camera figure"
    );
    assert!(close(a.packing, 0.0));
    let c = &r.groups["c"];
    assert_eq!(c.packing, None, "no capacity: no packing");
    assert!(
        close(c.per_hour, 0.0),
        "a group without workers costs nothing"
    );
}

#[test]
fn degradation_lowers_packing_not_cost_per_camera_hour() {
    // The same group before and after a shed: demand 90 → 42 over capacity 48.5.
    let cfg = prices(&[("cpu", 1.0), ("ingest", 0.25)]);
    let at = |demand: f64| Inputs {
        workers: vec![("g".into(), "cpu".into())],
        ingest: vec![("ingest".into(), streaming(&[("g", 6)]))],
        loads: [("g".to_string(), load(demand, 48.5, 6))]
            .into_iter()
            .collect(),
    };
    let (before, after) = (compute(&cfg, &at(90.0)), compute(&cfg, &at(42.0)));
    let (b, a) = (&before.groups["g"], &after.groups["g"]);
    assert!(b.packing.unwrap() > 1.8 && a.packing.unwrap() < 0.9);
    assert_eq!(b.per_camera_hour, a.per_camera_hour);
    assert!(close(a.per_camera_hour, 1.25 / 6.0));
}

#[test]
fn prices_are_validated_and_the_section_is_typed() {
    assert!(prices(&[("cpu", 0.0)]).validate().is_ok());
    assert!(prices(&[("cpu", -1.0)]).validate().is_err());
    assert!(prices(&[("cpu", f64::NAN)]).validate().is_err());
    assert!(prices(&[(" ", 1.0)]).validate().is_err());
    let load = panoptes_runtime::config::from_toml_str::<crate::config::CoordinatorConfig>;
    let c = load("[cost.price_per_hour]\ncpu = 0.2\ncuda = 2.5\n").unwrap();
    assert!(close(c.cost.price_per_hour.get("cuda").copied(), 2.5));
    assert!(c.cost.validate().is_ok());
    assert!(
        load("[cost]\nprices = {}\n").is_err(),
        "unknown fields are errors"
    );
    assert!(!load("").unwrap().cost.priced(), "no [cost]: no prices");
}
