//! Loading real TorchScript files produced by the generator: manifests, output shapes, and
//! clear failures for missing, corrupt and contract-violating models.

mod common;

use std::time::Instant;

use panoptes_workers::ModelError;
use panoptes_workers::model::{
    LoadedModel, ManifestFile, ModelManifest, ModelSpecError, OutputContract,
};
use panoptes_workers::tch::{Device, Kind, Tensor};

#[test]
fn generated_manifests_and_output_shapes() {
    let m = common::models();
    let reference = m.load_reference();
    let man = reference.manifest();
    assert_eq!(man.name, "reference-detector");
    assert_eq!(man.version, "1.0.0");
    assert_eq!((man.input.width, man.input.height), (640, 640));
    assert_eq!(man.output, OutputContract::PostNms);
    assert_eq!(man.classes, ["person", "car", "bicycle"]);
    let on_disk = ModelManifest::from_file(&m.reference.manifest_path).unwrap();
    assert_eq!(&on_disk, man);
    for batch in [1, 3] {
        let out = reference
            .forward(&Tensor::rand(
                [batch, 3, 640, 640],
                (Kind::Float, Device::Cpu),
            ))
            .unwrap();
        assert_eq!(out.size(), [batch, 48, 6]);
    }

    let yolo = LoadedModel::load(&m.yolo.model_path, &m.yolo.manifest_path, Device::Cpu)
        .expect("yolov8n-like loads");
    let man = yolo.manifest();
    assert_eq!(man.output, OutputContract::YoloRaw);
    assert_eq!(man.classes.len(), 80);
    assert_eq!(m.yolo.parameters, 3_151_888);
    let gflops = m.yolo.flops.unwrap() / 1e9;
    assert!((8.6..8.8).contains(&gflops), "{gflops} GFLOPs");
    for batch in [1i64, 4] {
        let input = Tensor::rand([batch, 3, 640, 640], (Kind::Float, Device::Cpu));
        let out = yolo.forward(&input).unwrap();
        assert_eq!(out.size(), [batch, 84, 8400]);
        let t = Instant::now();
        let runs = 3;
        for _ in 0..runs {
            let _ = yolo.forward(&input).unwrap();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(runs) / batch as f64;
        eprintln!(
            "yolov8n-like: batch {batch}: {ms:.1} ms/image ({} intra-op threads)",
            panoptes_workers::tch::get_num_threads()
        );
    }
    // A second image in a batch does not change the first one's output.
    let a = Tensor::rand([1, 3, 640, 640], (Kind::Float, Device::Cpu));
    let b = Tensor::rand([1, 3, 640, 640], (Kind::Float, Device::Cpu));
    let single = yolo.forward(&a).unwrap();
    let pair = yolo.forward(&Tensor::cat(&[&a, &b], 0)).unwrap();
    let diff = (single - pair.narrow(0, 0, 1))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-3, "batching changed the output by {diff}");
}

#[test]
fn missing_model_is_reported() {
    let m = common::models();
    let missing = m.path.join("no-such-model.pt");
    let err = LoadedModel::load(&missing, &m.reference.manifest_path, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-model.pt"), "{err}");
    assert!(err.is_fatal());
    let err = LoadedModel::load(
        &m.reference.model_path,
        &m.path.join("nope.json"),
        Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");
}

#[test]
fn corrupt_model_is_reported() {
    let m = common::models();
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.pt");
    // Deterministic pseudo-random bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&corrupt, bytes).unwrap();
    let err = LoadedModel::load(&corrupt, &m.reference.manifest_path, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Unloadable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("corrupt.pt") && text.contains("not a loadable TorchScript"),
        "{text}"
    );
    assert!(!text.contains('\n'), "message should be one line: {text}");
    assert!(err.is_fatal());
    eprintln!("corrupt model: {text}");

    // A truncated real model is also refused.
    let real = std::fs::read(&m.yolo.model_path).unwrap();
    let truncated = dir.path().join("truncated.pt");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let err = LoadedModel::load(&truncated, &m.yolo.manifest_path, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Unloadable { .. }), "{err:?}");
}

#[test]
fn output_contradicting_the_manifest_is_reported() {
    let m = common::models();
    // The reference detector ([B, 48, 6], post_nms) described by a yolo_raw manifest.
    let err =
        LoadedModel::load(&m.reference.model_path, &m.yolo.manifest_path, Device::Cpu).unwrap_err();
    assert!(
        matches!(err, ModelError::Spec(ModelSpecError::OutputShape { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("[1, 48, 6]") && text.contains("[1, 84, N]") && text.contains("yolo_raw"),
        "{text}"
    );
    eprintln!("contract mismatch: {text}");

    // A yolo_raw manifest with the wrong class count.
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = m.yolo.manifest.clone();
    manifest.classes.truncate(3);
    let path = dir.path().join("three-classes.json");
    manifest.write(&path).unwrap();
    let err = LoadedModel::load(&m.yolo.model_path, &path, Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("[1, 7, N]") && text.contains("[1, 84, 8400]"),
        "{text}"
    );

    // An invalid manifest is refused before the model runs.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name": "x"}"#).unwrap();
    let err = LoadedModel::load(&m.yolo.model_path, &bad, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::ManifestParse { .. }), "{err:?}");
}

#[test]
fn wrong_input_shape_is_reported() {
    let model = common::models().load_reference();
    let err = model
        .forward(&Tensor::zeros([1, 3, 320, 320], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(matches!(err, ModelError::InputShape { .. }), "{err:?}");
    assert!(err.to_string().contains("[B, 3, 640, 640]"), "{err}");
}
