//! Drift state rules on synthetic frames: steady scenes raise nothing, a dark scene raises
//! within the stated bound and clears after it goes, memory of forgotten cameras goes.

use std::time::Duration;

use super::*;

fn cfg() -> DriftConfig {
    DriftConfig {
        reference: Duration::from_secs(10),
        window: Duration::from_secs(6),
        evaluate_every: Duration::from_secs(1),
        min_samples: 5,
        ..DriftConfig::default()
    }
}

/// A 96×54 frame: a grey gradient with light noise and a red box moving with `t`;
/// `dim` divides every value (dark camera).
fn frame(t: u64, seed: &mut u64, dim: u8) -> ImageStats {
    let (w, h) = (96usize, 54usize);
    let bx = (t as usize * 3) % (w - 20);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((*seed >> 60) as u8) % 6;
            let px = if (bx..bx + 16).contains(&x) && (10..30).contains(&y) {
                [230, 20, 20]
            } else {
                let g = 90 + (x + y) as u8 + noise;
                [g, g, g]
            };
            rgb.extend(px.map(|v| v / dim));
        }
    }
    ImageStats::compute(&rgb, w as u32, h as u32).unwrap()
}

/// Feeds `secs` seconds at 5 fps from `from_ms`, evaluating every second; returns every
/// evaluation.
fn run(
    book: &mut DriftBook,
    cfg: &DriftConfig,
    from_ms: u64,
    secs: u64,
    dim: u8,
    seed: &mut u64,
) -> Vec<(u64, Evaluation)> {
    let mut out = Vec::new();
    for i in 0..secs * 5 {
        let now = from_ms + i * 200;
        let stats = frame(now / 200, seed, dim);
        book.observe("cam", 3, now, Observation::Image(&stats), cfg);
        let dets: &[(u32, f32)] = if dim == 1 {
            &[(0, 0.91), (1, 0.84)]
        } else {
            &[]
        };
        book.observe("cam", 3, now, Observation::Detections(dets), cfg);
        if (i + 1) % 5 == 0 {
            let (evals, gone) = book.evaluate(now, cfg);
            assert!(gone.is_empty());
            out.extend(evals.into_iter().map(|(_, e)| (now, e)));
        }
    }
    out
}

fn max_psi(e: &Evaluation) -> f64 {
    e.psi.iter().flatten().copied().fold(0.0, f64::max)
}

#[test]
fn a_steady_scene_raises_nothing() {
    let (cfg, mut book, mut seed) = (cfg(), DriftBook::default(), 1);
    let evals = run(&mut book, &cfg, 0, 120, 1, &mut seed);
    assert!(
        !evals[5].1.reference_ready,
        "reference still filling at 6 s"
    );
    let scored: Vec<_> = evals.iter().filter(|(_, e)| e.reference_ready).collect();
    assert!(scored.len() > 100);
    let worst = scored.iter().map(|(_, e)| max_psi(e)).fold(0.0, f64::max);
    assert!(worst < 0.1, "steady PSI {worst}");
    assert!(scored.iter().all(|(_, e)| !e.active && e.raised.is_none()));
    // Every signal is scored once both windows are full.
    assert!(scored.last().unwrap().1.psi.iter().all(Option::is_some));
}

#[test]
fn a_dark_scene_raises_within_the_bound_and_clears_after() {
    let (cfg, mut book, mut seed) = (cfg(), DriftBook::default(), 7);
    run(&mut book, &cfg, 0, 20, 1, &mut seed);
    let dark = run(&mut book, &cfg, 20_000, 15, 12, &mut seed);
    let (t, e) = dark
        .iter()
        .find(|(_, e)| e.raised.is_some())
        .expect("drift raised");
    // Bound: the first evaluation over raise_psi, then raise_after − 1 more.
    let took = t - 20_000;
    assert!(
        took <= 1_000 * u64::from(cfg.raise_after) + 1_000,
        "{took} ms"
    );
    assert!(e.active);
    assert!(
        matches!(
            e.raised,
            Some(Signal::Brightness | Signal::Contrast | Signal::Colour | Signal::Classes)
        ),
        "{:?}",
        e.raised
    );
    // No detections in the dark: confidence is not scored (too few samples).
    assert_eq!(dark.last().unwrap().1.psi[5], None);
    assert!(dark.last().unwrap().1.active);
    let back = run(&mut book, &cfg, 35_000, 15, 1, &mut seed);
    let (t, _) = back.iter().find(|(_, e)| !e.active).expect("cleared");
    assert!(
        t - 35_000 <= 6_000 + 3_000 + 1_000,
        "cleared after {} ms",
        t - 35_000
    );
    assert!(!back.last().unwrap().1.active);
}

#[test]
fn persistent_drift_rebaselines_when_asked_to() {
    let mut cfg = cfg();
    cfg.rebaseline_after = Some(Duration::from_secs(5));
    let (mut book, mut seed) = (DriftBook::default(), 3);
    run(&mut book, &cfg, 0, 20, 1, &mut seed);
    let dark = run(&mut book, &cfg, 20_000, 20, 12, &mut seed);
    assert!(dark.iter().any(|(_, e)| e.rebaselined));
    // The dark scene is now the reference: it stays quiet.
    let later = run(&mut book, &cfg, 40_000, 10, 12, &mut seed);
    assert!(later.iter().all(|(_, e)| !e.active), "{later:?}");
}

#[test]
fn cameras_are_forgotten_with_their_partition_or_when_idle() {
    let (cfg, mut book, mut seed) = (cfg(), DriftBook::default(), 5);
    run(&mut book, &cfg, 0, 2, 1, &mut seed);
    let s = frame(0, &mut seed, 1);
    book.observe("other", 4, 2_000, Observation::Image(&s), &cfg);
    assert_eq!(book.len(), 2);
    assert_eq!(book.forget_partition(3), vec!["cam".to_string()]);
    assert!(book.forget_partition(3).is_empty());
    let (evals, gone) = book.evaluate(2_000 + 600_000, &cfg);
    assert!(evals.is_empty());
    assert_eq!(gone, vec!["other".to_string()]);
    assert!(book.is_empty());
}

#[test]
fn config_bounds() {
    assert_eq!(DriftConfig::default().validate(), Ok(()));
    assert_eq!(cfg().validate(), Ok(()));
    let mut c = cfg();
    c.clear_psi = 0.5;
    assert!(c.validate().is_err());
    let mut c = cfg();
    c.evaluate_every = Duration::from_secs(10);
    assert!(c.validate().is_err());
}
