use super::*;

fn cam(id: &str, priority: u8, fps: u32, min_fps: u32) -> Cam {
    Cam {
        id: id.into(),
        priority,
        fps,
        min_fps,
        unit: 1.0,
        active: true,
        cap: None,
    }
}

fn with_caps(cams: &[Cam], d: &Decision) -> Vec<Cam> {
    cams.iter()
        .map(|c| Cam {
            cap: d.caps[&c.id],
            ..c.clone()
        })
        .collect()
}

/// The thresholds these cases were worked out with (0.9 / 0.75); the defaults are lower
/// (decision 143), the rules the same.
fn degrader() -> Degrader {
    Degrader::new(DegradeConfig {
        shed_above: 0.9,
        restore_below: 0.75,
        ..DegradeConfig::default()
    })
}

/// Three classes of two 10-fps cameras (min 2): 60 units at full rate.
fn fleet() -> Vec<Cam> {
    vec![
        cam("hi-a", 9, 10, 2),
        cam("hi-b", 9, 10, 2),
        cam("mid-a", 5, 10, 2),
        cam("mid-b", 5, 10, 2),
        cam("lo-a", 0, 10, 2),
        cam("lo-b", 0, 10, 2),
    ]
}

#[test]
fn enough_capacity_changes_nothing() {
    let d = degrader().decide("g", 100.0, &fleet(), 0);
    assert_eq!(d.step, Step::Hold);
    assert_eq!(d.degraded(), 0);
    assert!((d.demand - 60.0).abs() < 1e-9);
}

#[test]
fn overload_sheds_lowest_priority_first_down_to_the_budget() {
    // Capacity 50: budget 45 of 60. The low class gives 15 of its 16 of headroom.
    let d = degrader().decide("g", 50.0, &fleet(), 0);
    assert_eq!(d.step, Step::Shed);
    assert!(d.demand_after <= 45.0 + 1e-9, "{d:?}");
    assert_eq!(d.caps["hi-a"], None);
    assert_eq!(d.caps["mid-b"], None);
    assert!(
        d.caps["lo-a"].is_some() && d.caps["lo-b"].is_some(),
        "{d:?}"
    );
    assert!(!d.saturated);
    // Deeper overload: the middle class sheds too, the low one sits at its minimum.
    let d = degrader().decide("g", 40.0, &fleet(), 0);
    assert_eq!((d.caps["lo-a"], d.caps["lo-b"]), (Some(2), Some(2)));
    assert_eq!(d.caps["mid-a"], Some(6), "{d:?}");
    assert_eq!(d.caps["hi-a"], None, "{d:?}");
    assert!(d.demand_after <= 36.0 + 1e-9);
}

#[test]
fn never_below_minimum_and_saturation_is_reported() {
    let d = degrader().decide("g", 5.0, &fleet(), 0);
    assert!(d.saturated);
    assert!(d.caps.values().all(|c| *c == Some(2)), "{d:?}");
    assert!((d.demand_after - 12.0).abs() < 1e-9);
}

#[test]
fn restore_waits_for_the_hold_then_raises_highest_priority_first() {
    let mut g = degrader();
    let cams = fleet();
    let shed = g.decide("g", 40.0, &cams, 0);
    let capped = with_caps(&cams, &shed);
    // Capacity up to 60: restore budget 45 > demand 36, but only after the hold.
    let d = g.decide("g", 60.0, &capped, 1_000);
    assert_eq!(d.step, Step::Hold);
    assert_eq!(d.caps, shed.caps);
    let d = g.decide("g", 60.0, &capped, 3_999);
    assert_eq!(d.step, Step::Hold);
    let d = g.decide("g", 60.0, &capped, 4_000);
    assert_eq!(d.step, Step::Restore, "{d:?}");
    assert!(d.demand_after <= 45.0 + 1e-9 && d.demand_after > shed.demand_after);
    assert_eq!(
        d.caps["mid-a"], None,
        "middle class restored before the low one: {d:?}"
    );
    assert!(d.caps["lo-a"].is_some());
    // Between the thresholds now: it holds (hysteresis).
    let again = g.decide("g", 60.0, &with_caps(&cams, &d), 20_000);
    assert_eq!(again.step, Step::Hold);
    // Plenty of capacity: everything restored after another hold.
    let restored = with_caps(&cams, &d);
    assert_eq!(g.decide("g", 200.0, &restored, 21_000).step, Step::Hold);
    let full = g.decide("g", 200.0, &restored, 24_000);
    assert_eq!(full.step, Step::Restore);
    assert_eq!(full.degraded(), 0);
}

#[test]
fn steady_load_does_not_oscillate() {
    let mut g = degrader();
    let mut cams = fleet();
    let mut steps = Vec::new();
    for t in 0..200u64 {
        let d = g.decide("g", 50.0, &cams, t * 100);
        steps.push(d.step);
        cams = with_caps(&cams, &d);
    }
    let changes = steps.iter().filter(|s| **s != Step::Hold).count();
    assert_eq!(changes, 1, "{steps:?}");
}

#[test]
fn a_demand_spike_sheds_in_the_same_round() {
    let mut g = degrader();
    let mut cams = fleet();
    let d = g.decide("g", 100.0, &cams, 0);
    assert_eq!(d.step, Step::Hold);
    // Six more low-priority cameras arrive.
    for i in 0..6 {
        cams.push(cam(&format!("new-{i}"), 0, 10, 1));
    }
    let d = g.decide("g", 100.0, &cams, 100);
    assert_eq!(d.step, Step::Shed);
    assert!(d.demand_after <= 90.0 + 1e-9);
    assert!(
        cams.iter()
            .filter(|c| c.priority > 0)
            .all(|c| d.caps[&c.id].is_none())
    );
}

#[test]
fn inactive_cameras_use_no_budget_and_keep_their_cap() {
    let mut cams = fleet();
    cams[4].active = false;
    cams[4].cap = Some(3);
    let d = degrader().decide("g", 60.0, &cams, 0);
    assert_eq!(d.step, Step::Hold, "50 units active against 54: {d:?}");
    assert!((d.demand - 50.0).abs() < 1e-9);
    assert_eq!(d.caps["lo-a"], Some(3));
}

#[test]
fn caps_are_normalized_to_min_and_fps() {
    let mut cams = fleet();
    cams[0].cap = Some(1); // below its minimum 2
    cams[1].cap = Some(10); // at its fps: no cap
    let d = degrader().decide("g", 1000.0, &cams, 0);
    assert_eq!(d.caps["hi-a"], Some(2));
    assert_eq!(d.caps["hi-b"], None);
}

#[test]
fn no_capacity_leaves_caps_and_disabled_removes_them() {
    let mut cams = fleet();
    cams[5].cap = Some(4);
    let d = degrader().decide("g", 0.0, &cams, 0);
    assert_eq!((d.step, d.caps["lo-b"]), (Step::Unmeasured, Some(4)));
    let mut off = Degrader::new(DegradeConfig {
        enabled: false,
        ..DegradeConfig::default()
    });
    let d = off.decide("g", 10.0, &cams, 0);
    assert_eq!((d.step, d.degraded()), (Step::Disabled, 0));
}

#[test]
fn load_units_weigh_big_cameras() {
    let mut cams = vec![cam("big", 0, 10, 1), cam("small", 5, 10, 1)];
    cams[0].unit = 4.0; // 1280×720
    // 50 units at full rate; budget 27: small keeps 10, big gets 4 fps (16 + 10 = 26).
    let d = degrader().decide("g", 30.0, &cams, 0);
    assert_eq!(d.caps["small"], None);
    assert_eq!(d.caps["big"], Some(4), "{d:?}");
}

#[test]
fn config_thresholds_are_checked() {
    assert!(DegradeConfig::default().validate().is_ok());
    let bad = DegradeConfig {
        restore_below: 0.95,
        ..DegradeConfig::default()
    };
    assert!(bad.validate().is_err());
}
