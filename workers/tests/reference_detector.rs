//! The reference detector on camera-simulator frames, through the worker's own path:
//! JPEG decode + letterbox ([`InputBatch`]) → TorchScript forward → decode → map back.
//! Precision and recall at IoU 0.5 must both reach 0.95 over ≥ 200 frames.

mod common;

use std::time::{Duration, Instant};

use panoptes_scene::{CLASS_NAMES, GroundTruthBox, SceneSpec};
use panoptes_workers::postprocess::{decode_output, to_detections};
use panoptes_workers::preprocess::InputBatch;
use panoptes_workers::tch;

#[test]
fn reference_detector_finds_simulator_objects() {
    let model = common::models().load_reference();
    let manifest = model.manifest().clone();
    let mut batch = InputBatch::for_manifest(&manifest, 4);

    let cameras = ["cam-0", "cam-1", "lobby", "dock-7", "north-gate"];
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    let mut ious = Vec::new();
    let mut frames = 0usize;
    let (mut t_pre, mut t_fwd, mut t_post) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for (ci, camera) in cameras.iter().enumerate() {
        for seed in [1u64, 7, 42] {
            let objects = [3u32, 4, 6][(ci + seed as usize) % 3];
            let spec = SceneSpec {
                width: common::SRC.0,
                height: common::SRC.1,
                objects,
                seed,
            };
            for k in 0..14u64 {
                let index = 1_000 + k * 97 + seed * 13;
                let (jpeg, truth) = common::simulator_frame(&spec, camera, index);
                let t0 = Instant::now();
                let lb = batch.set_jpeg(0, &jpeg).expect("decode");
                assert_eq!((lb.src_width, lb.src_height), common::ANALYTIC);
                let input = batch.to_tensor(1);
                let t1 = Instant::now();
                let output = model.forward(&input).unwrap();
                let t2 = Instant::now();
                let raw = decode_output(&manifest, &output).unwrap();
                let dets = to_detections(&raw[0], &lb, &manifest.classes);
                t_pre += t1 - t0;
                t_fwd += t2 - t1;
                t_post += t2.elapsed();
                frames += 1;

                // Greedy one-to-one matching by IoU, same class.
                let mut used = vec![false; truth.len()];
                for d in &dets {
                    let db = GroundTruthBox {
                        class_id: d.class_id,
                        x1: d.bbox[0],
                        y1: d.bbox[1],
                        x2: d.bbox[2],
                        y2: d.bbox[3],
                    };
                    let best = truth
                        .iter()
                        .enumerate()
                        .filter(|(i, t)| !used[*i] && t.class_id == d.class_id)
                        .map(|(i, t)| (i, t.iou(&db)))
                        .max_by(|a, b| a.1.total_cmp(&b.1));
                    match best {
                        Some((i, v)) if v >= 0.5 => {
                            used[i] = true;
                            tp += 1;
                            ious.push(v);
                        }
                        _ => {
                            fp += 1;
                            if fp <= 5 {
                                eprintln!(
                                    "false positive {camera} seed {seed} frame {index}: {d:?} truth {truth:?}"
                                );
                            }
                        }
                    }
                    assert_eq!(d.label, CLASS_NAMES[d.class_id as usize]);
                }
                let missed = used.iter().filter(|u| !**u).count();
                if missed > 0 && fn_ < 5 {
                    eprintln!(
                        "missed {missed} in {camera} seed {seed} frame {index}: truth {truth:?} dets {dets:?}"
                    );
                }
                fn_ += missed;
            }
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    let mean_iou = ious.iter().sum::<f32>() / ious.len().max(1) as f32;
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / frames as f64;
    eprintln!(
        "reference detector: {frames} frames, {} objects: precision {precision:.4}, recall {recall:.4}, mean IoU {mean_iou:.3}; \
         per frame: decode+letterbox {:.2} ms, forward {:.2} ms, decode+map {:.3} ms ({} threads)",
        tp + fn_,
        ms(t_pre),
        ms(t_fwd),
        ms(t_post),
        panoptes_workers::tch::get_num_threads(),
    );
    assert!(frames >= 200);
    assert!(precision >= 0.95, "precision {precision}");
    assert!(recall >= 0.95, "recall {recall}");
    // Boxes are tight, not merely overlapping.
    assert!(mean_iou >= 0.85, "mean IoU {mean_iou}");

    // Forward time on one intra-op thread (this binary has a single test, so the global
    // setting affects nothing else).
    let (jpeg, _) = common::simulator_frame(&SceneSpec::new(1280, 720), "cam-0", 5);
    batch.set_jpeg(0, &jpeg).unwrap();
    let input = batch.to_tensor(1);
    tch::set_num_threads(1);
    let _ = model.forward(&input).unwrap();
    let runs = 20;
    let t = Instant::now();
    for _ in 0..runs {
        let _ = model.forward(&input).unwrap();
    }
    eprintln!(
        "reference detector forward on 1 thread: {:.2} ms/frame",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(runs)
    );
}
