use std::collections::BTreeMap;
use std::time::Duration;

use panoptes_schemas::model::{
    ArmStats, CanaryReport, ClassStats, ModelCanary, ModelRollout, PassStats,
};

use super::*;

fn cams(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cam-{i}")).collect()
}

#[test]
fn fnv_matches_the_reference_vectors() {
    assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64("foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn camera_choice_is_stable_clamped_and_grows_as_a_superset() {
    let all = cams(10);
    assert_eq!(choose_cameras(&all, 25).unwrap().len(), 3);
    assert_eq!(choose_cameras(&all, 1).unwrap().len(), 1);
    assert_eq!(choose_cameras(&all, 99).unwrap().len(), 9);
    // The order of the input does not matter; duplicates count once.
    let mut shuffled = all.clone();
    shuffled.reverse();
    shuffled.push("cam-3".into());
    assert_eq!(
        choose_cameras(&shuffled, 25).unwrap(),
        choose_cameras(&all, 25).unwrap()
    );
    let mut previous: Vec<String> = Vec::new();
    for p in 1..=99 {
        let chosen = choose_cameras(&all, p).unwrap();
        assert!(chosen.windows(2).all(|w| w[0] < w[1]), "sorted: {chosen:?}");
        assert!(
            previous.iter().all(|c| chosen.contains(c)),
            "{p} %: {previous:?} ⊄ {chosen:?}"
        );
        previous = chosen;
    }
    // Two cameras: one each side whatever the share.
    assert_eq!(choose_cameras(&cams(2), 99).unwrap().len(), 1);
    assert_eq!(
        choose_cameras(&cams(1), 50),
        Err(ChooseError::TooFewCameras(1))
    );
    assert_eq!(choose_cameras(&[], 50), Err(ChooseError::TooFewCameras(0)));
    assert_eq!(choose_cameras(&all, 0), Err(ChooseError::BadPercent(0)));
    assert_eq!(choose_cameras(&all, 100), Err(ChooseError::BadPercent(100)));
}

fn arm(frames: u64, batch_ms: &[(usize, u64, f64)], classes: &[(&str, u64, f64)]) -> ArmStats {
    ArmStats {
        frames,
        passes: batch_ms
            .iter()
            .map(|(b, n, mean)| {
                (
                    b.to_string(),
                    PassStats {
                        count: *n,
                        total_ms: *n as f64 * mean,
                    },
                )
            })
            .collect(),
        classes: classes
            .iter()
            .map(|(c, n, mean)| {
                (
                    (*c).to_owned(),
                    ClassStats {
                        count: *n,
                        score_sum: *n as f64 * mean,
                    },
                )
            })
            .collect(),
    }
}

fn base() -> ArmStats {
    arm(
        100,
        &[(1, 40, 10.0), (4, 20, 30.0)],
        &[("car", 100, 0.8), ("person", 30, 0.6), ("dog", 2, 0.5)],
    )
}

const MIN: Duration = Duration::from_secs(61);

#[test]
fn equal_arms_hold_until_observed_then_promote() {
    let c = CanaryCriteria::default();
    let v = judge(&c, &base(), &base(), None, Duration::from_secs(10));
    assert!(
        matches!(&v, Verdict::Hold(r) if r.contains("observing for 50 s more")),
        "{v:?}"
    );
    let v = judge(&c, &base(), &base(), None, MIN);
    assert!(
        matches!(&v, Verdict::Promote(r) if r.contains("latency 1.00x")),
        "{v:?}"
    );
}

#[test]
fn too_few_frames_hold_then_roll_back_after_max_duration() {
    let c = CanaryCriteria::default();
    let few = arm(49, &[(1, 40, 10.0)], &[]);
    let v = judge(&c, &base(), &few, None, MIN);
    assert!(
        matches!(&v, Verdict::Hold(r) if r.contains("49 on the candidate (50 needed")),
        "{v:?}"
    );
    let v = judge(&c, &base(), &few, None, Duration::from_secs(600));
    assert!(
        matches!(&v, Verdict::Rollback(r) if r.starts_with("undecided after 600 s")),
        "{v:?}"
    );
}

#[test]
fn a_refusal_rolls_back_at_once() {
    let c = CanaryCriteria::default();
    let v = judge(
        &c,
        &ArmStats::default(),
        &ArmStats::default(),
        Some("worker w-1: integrity"),
        Duration::ZERO,
    );
    assert!(
        matches!(&v, Verdict::Rollback(r) if r.contains("refused the candidate: worker w-1")),
        "{v:?}"
    );
}

#[test]
fn latency_is_compared_at_equal_batch_sizes_only() {
    let c = CanaryCriteria::default();
    // 3x slower at both sizes; a batch size only the candidate ran does not count.
    let slow = arm(
        100,
        &[(1, 40, 30.0), (4, 20, 90.0), (8, 50, 1.0)],
        &[("car", 100, 0.8), ("person", 30, 0.6)],
    );
    let v = judge(&c, &base(), &slow, None, Duration::from_secs(5));
    assert_eq!(
        v,
        Verdict::Rollback("latency 3.00x the baseline's at equal batch sizes (max 1.50x)".into())
    );
    // Weighted by the candidate's passes: 10 x 10 ms (batch 1, same) + 10 x 60 ms (batch 4,
    // 2x) over 10 x 10 + 10 x 30 = 700 / 400 = 1.75.
    let mixed = arm(
        100,
        &[(1, 10, 10.0), (4, 10, 60.0)],
        &[("car", 100, 0.8), ("person", 30, 0.6)],
    );
    let v = judge(&c, &base(), &mixed, None, MIN);
    assert!(
        matches!(&v, Verdict::Rollback(r) if r.starts_with("latency 1.75x")),
        "{v:?}"
    );
    // Too few common passes: undecided, whatever the ratio.
    let thin = arm(
        100,
        &[(1, 9, 50.0), (2, 100, 1.0)],
        &[("car", 100, 0.8), ("person", 30, 0.6)],
    );
    let v = judge(&c, &base(), &thin, None, MIN);
    assert!(
        matches!(&v, Verdict::Hold(r) if r.contains("latency undecided: 9 candidate passes")),
        "{v:?}"
    );
    let v = judge(&c, &base(), &thin, None, Duration::from_secs(700));
    assert!(
        matches!(&v, Verdict::Rollback(r) if r.contains("undecided after 700 s: latency")),
        "{v:?}"
    );
}

#[test]
fn class_rates_must_stay_within_the_ratios() {
    let c = CanaryCriteria::default();
    let passes = [(1, 40, 10.0), (4, 20, 30.0)];
    let no_cars = arm(100, &passes, &[("person", 30, 0.6)]);
    assert_eq!(
        judge(&c, &base(), &no_cars, None, MIN),
        Verdict::Rollback(
            "class car: 0.00 per frame vs 1.00 on the baseline (min ratio 0.50)".into()
        )
    );
    let many_people = arm(100, &passes, &[("car", 100, 0.8), ("person", 70, 0.6)]);
    assert_eq!(
        judge(&c, &base(), &many_people, None, MIN),
        Verdict::Rollback(
            "class person: 0.70 per frame vs 0.30 on the baseline (max ratio 2.00)".into()
        )
    );
    // A class only the candidate reports (at the counted rate) is a ratio above the max.
    let cats = arm(
        100,
        &passes,
        &[("car", 100, 0.8), ("person", 30, 0.6), ("cat", 10, 0.5)],
    );
    let v = judge(&c, &base(), &cats, None, MIN);
    assert!(
        matches!(&v, Verdict::Rollback(r) if r.starts_with("class cat: 0.10 per frame vs 0.00")),
        "{v:?}"
    );
    // Rare classes (dog: 0.02 per frame) do not count either way.
    let no_dogs = arm(100, &passes, &[("car", 100, 0.8), ("person", 30, 0.6)]);
    assert!(matches!(
        judge(&c, &base(), &no_dogs, None, MIN),
        Verdict::Promote(_)
    ));
    // Rates are per frame: twice the frames, twice the detections is the same rate.
    let double = arm(200, &passes, &[("car", 200, 0.8), ("person", 60, 0.6)]);
    assert!(matches!(
        judge(&c, &base(), &double, None, MIN),
        Verdict::Promote(_)
    ));
}

#[test]
fn score_shift_counts_classes_with_enough_detections() {
    let c = CanaryCriteria::default();
    let passes = [(1, 40, 10.0), (4, 20, 30.0)];
    let shy = arm(100, &passes, &[("car", 100, 0.6), ("person", 30, 0.6)]);
    assert_eq!(
        judge(&c, &base(), &shy, None, MIN),
        Verdict::Rollback(
            "class car: mean score 0.60 vs 0.80 on the baseline (shift 0.20, max 0.15)".into()
        )
    );
    // Under min_class_detections (20) in one arm: not compared.
    let b = arm(100, &passes, &[("car", 100, 0.8), ("person", 10, 0.9)]);
    let k = arm(100, &passes, &[("car", 100, 0.8), ("person", 10, 0.2)]);
    assert!(matches!(judge(&c, &b, &k, None, MIN), Verdict::Promote(_)));
}

#[test]
fn criteria_validation_names_the_key() {
    assert_eq!(CanaryCriteria::default().validate(), Ok(()));
    let bad = |f: &dyn Fn(&mut CanaryCriteria)| {
        let mut c = CanaryCriteria::default();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(bad(&|c| c.max_latency_ratio = 0.0).contains("max_latency_ratio = 0"));
    assert!(bad(&|c| c.min_class_rate_ratio = 3.0).contains("min_class_rate_ratio = 3 is above"));
    assert!(bad(&|c| c.observe = Duration::from_secs(700)).contains("observe = 700 s is longer"));
    assert!(bad(&|c| c.min_frames = 0).contains("min_frames"));
    assert!(bad(&|c| c.max_score_shift = f64::NAN).contains("max_score_shift"));
    let parsed: CanaryCriteria =
        serde_json::from_value(serde_json::json!({"observe": "2s", "min_frames": 5})).unwrap();
    assert_eq!(
        (parsed.observe, parsed.min_frames, parsed.min_passes),
        (Duration::from_secs(2), 5, 10)
    );
    assert!(serde_json::from_value::<CanaryCriteria>(serde_json::json!({"obsrve": "2s"})).is_err());
}

#[test]
fn reports_merge_per_arm_and_name_the_first_refusal() {
    let report = |active: ArmStats, cand: ArmStats, refused: Option<&str>| {
        CanaryReport {
            versions: [("1".to_owned(), active), ("2".to_owned(), cand)]
                .into_iter()
                .collect(),
            refused: refused
                .map(|r| ("2".to_owned(), r.to_owned()))
                .into_iter()
                .collect(),
            at_ms: 1,
        }
        .to_json()
    };
    let a = arm(10, &[(1, 2, 5.0)], &[("car", 3, 0.9)]);
    let raw: BTreeMap<String, String> = [
        ("w-1".to_owned(), report(a.clone(), a.clone(), None)),
        (
            "w-2".to_owned(),
            report(a.clone(), ArmStats::default(), Some("sha256 mismatch")),
        ),
        ("w-3".to_owned(), "{not json".to_owned()),
        (
            "w-4".to_owned(),
            report(a.clone(), ArmStats::default(), Some("later")),
        ),
    ]
    .into_iter()
    .collect();
    let m = merge_reports(&raw, "1", "2");
    assert_eq!((m.workers, m.unreadable), (3, 1));
    assert_eq!(m.baseline.frames, 30);
    assert_eq!(m.baseline.passes["1"].count, 6);
    assert_eq!(m.candidate.frames, 10);
    assert_eq!(m.refused.as_deref(), Some("worker w-2: sha256 mismatch"));
    // Refusing the active version is not the canary's business.
    let m = merge_reports(&raw, "2", "1");
    assert_eq!(m.refused, None);
}

#[test]
fn ending_a_canary_promotes_or_keeps_the_active_version() {
    let canary = ModelCanary {
        version: "2".into(),
        percent: 25,
        cameras: vec!["cam-1".into()],
        since_generation: 4,
        started_ms: 1,
    };
    let cur = ModelRollout {
        model: "det".into(),
        active: "1".into(),
        previous: Some("0".into()),
        generation: 4,
        updated_ms: 1,
        canary: Some(canary.clone()),
        last_canary: None,
        shadow: None,
    };
    let p = end(&cur, &canary, true, "coordinator: fine".into(), 9);
    assert_eq!(
        (
            p.active.as_str(),
            p.previous.as_deref(),
            p.generation,
            p.canary.is_none()
        ),
        ("2", Some("1"), 5, true)
    );
    let o = p.last_canary.unwrap();
    assert_eq!(
        (o.version.as_str(), o.verdict.as_str(), o.at_ms),
        ("2", "promoted", 9)
    );
    let r = end(&cur, &canary, false, "rolled back by ops".into(), 9);
    assert_eq!(
        (r.active.as_str(), r.previous.as_deref(), r.generation),
        ("1", Some("0"), 5)
    );
    assert_eq!(r.last_canary.as_ref().unwrap().verdict, "rolled_back");
    assert!(r.canary.is_none());
    r.validate().unwrap();
}
