//! Validation runs with real TorchScript models on a generated golden set: the reference
//! detector, a variant of it that drops a class and one that is three times slower, through
//! the library ([`validate::run`]) and the `panoptes-model-validate` binary on a repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use panoptes_models::golden::{GoldenSpec, generate_golden};
use panoptes_models::variant::{Degradation, Variant, generate_variant};
use panoptes_models::{GeneratedModel, generate_reference};
use panoptes_schemas::model::ValidationResult;
use panoptes_workers::model::{LoadedModel, ManifestFile, ModelManifest};
use panoptes_workers::tch::{self, Device, Kind, Tensor};
use panoptes_workers::validate::{self, GoldenSet, Options, Report};
use sha2::{Digest, Sha256};

/// Frames in the test golden set (≈ 180 objects: 3 to 6 per frame).
const FRAMES: usize = 40;
/// The reference detector reaches ≥ 0.95 precision and recall on 210 simulator frames
/// (`reference_detector.rs`, the same render → halve → JPEG 80 path); 40 frames are held to
/// the same bar.
const GOOD: f64 = 0.95;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    reference: GeneratedModel,
    golden: GoldenSet,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_owned();
    let reference = generate_reference(&root.join("models")).expect("reference detector");
    let spec = GoldenSpec {
        frames: FRAMES,
        ..GoldenSpec::default()
    };
    let golden = generate_golden(&root.join("golden"), &spec).expect("golden set");
    Fixture {
        _dir: dir,
        root,
        reference,
        golden,
    }
}

fn variant(f: &Fixture, degradation: Degradation) -> Variant {
    let out = f.root.join(degradation.suffix());
    generate_variant(
        &f.reference.model_path,
        &f.reference.manifest,
        &degradation,
        &out,
        None,
    )
    .expect("variant")
}

fn run(model: &Path, manifest: &Path, golden: &GoldenSet, opts: Options) -> Report {
    let model = LoadedModel::load(model, manifest, Device::Cpu).expect("model loads");
    validate::run(&model, golden, opts).expect("validation run")
}

#[test]
fn reference_passes_and_drop_class_variant_loses_that_class() {
    let f = fixture();
    let counts = f.golden.index.class_counts();
    let objects: u64 = counts.values().sum();
    assert!(objects >= 3 * FRAMES as u64, "{counts:?}");
    let opts = Options {
        batch: 4,
        latency_passes: 3,
    };
    let good = run(
        &f.reference.model_path,
        &f.reference.manifest_path,
        &f.golden,
        opts,
    );
    let r = &good.result;
    eprintln!("reference: {r:?} {:?}", good.tally.per_class);
    assert_eq!(r.frames, FRAMES as u64);
    assert_eq!(r.device_class, "cpu");
    assert_eq!(r.golden_set, f.golden.id);
    assert_eq!(r.batch, 4);
    assert!(r.precision >= GOOD && r.recall >= GOOD, "{r:?}");
    assert_eq!(good.tally.total.tp + good.tally.total.fn_, objects);

    let dropped = "car";
    let v = variant(&f, Degradation::DropClass(dropped.into()));
    assert_eq!(v.manifest.version, "1.0.0-no-car");
    let bad = run(&v.model_path, &v.manifest_path, &f.golden, opts);
    let b = &bad.result;
    let share = counts[dropped] as f64 / objects as f64;
    eprintln!(
        "drop-{dropped}: {b:?}, {dropped} share {share:.3}, {:?}",
        bad.tally.per_class
    );
    // Not one car is found; every other class exactly as before.
    assert_eq!(bad.tally.per_class[dropped].tp, 0);
    for (class, c) in &good.tally.per_class {
        if class != dropped {
            assert_eq!(bad.tally.per_class[class], *c, "{class}");
        }
    }
    // Recall falls by the dropped class's share of objects (times its recall before).
    let expected = r.recall - share * good.tally.per_class[dropped].recall();
    assert!(
        (b.recall - expected).abs() < 1e-9,
        "{} vs {expected}",
        b.recall
    );
    assert!(b.recall < r.recall - 0.2, "{} vs {}", b.recall, r.recall);
    assert!(b.precision >= GOOD, "{b:?}");
}

#[test]
fn slow_variant_has_identical_output_and_higher_latency() {
    // One intra-op thread: timings compare work, not how many cores happen to be free.
    tch::set_num_threads(1);
    let f = fixture();
    let v = variant(&f, Degradation::Slow(3));
    let source = LoadedModel::load(
        &f.reference.model_path,
        &f.reference.manifest_path,
        Device::Cpu,
    )
    .unwrap();
    let slow = LoadedModel::load(&v.model_path, &v.manifest_path, Device::Cpu).unwrap();
    let input = Tensor::rand([2, 3, 640, 640], (Kind::Float, Device::Cpu));
    let (a, b) = (
        source.forward(&input).unwrap(),
        slow.forward(&input).unwrap(),
    );
    assert!(a.equal(&b), "slow variant's output differs");

    let opts = Options {
        batch: 4,
        latency_passes: 15,
    };
    // Interleaved twice, so a burst of load on the machine hits both alike.
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for _ in 0..2 {
        good.push(run(
            &f.reference.model_path,
            &f.reference.manifest_path,
            &f.golden,
            opts,
        ));
        bad.push(run(&v.model_path, &v.manifest_path, &f.golden, opts));
    }
    let p99 = |rs: &[Report]| {
        rs.iter()
            .map(|r| r.result.latency_p99_ms)
            .fold(f64::MAX, f64::min)
    };
    let median = |rs: &[Report]| {
        let all: Vec<f64> = rs.iter().flat_map(|r| r.latencies_ms.clone()).collect();
        validate::matching::quantile(&all, 0.5)
    };
    let (gp, bp, gm, bm) = (p99(&good), p99(&bad), median(&good), median(&bad));
    eprintln!(
        "forward at batch 4, 1 thread: reference p99 {gp:.1} ms median {gm:.1} ms; \
         slow3 p99 {bp:.1} ms median {bm:.1} ms; median ratio {:.2}",
        bm / gm
    );
    // Same detections, so the same precision and recall.
    assert_eq!(good[0].tally, bad[0].tally);
    assert!(bp > gp, "p99 {bp} vs {gp}");
    assert!(bm / gm >= 2.0, "median ratio {}", bm / gm);
}

/// `<repo>/<name>/<version>/{model.pt, manifest.json}` with the manifest's `sha256` set.
fn add_to_repository(repo: &Path, model: &Path, manifest: &ModelManifest) -> PathBuf {
    let dir = repo.join(&manifest.name).join(&manifest.version);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(model).unwrap();
    std::fs::write(dir.join("model.pt"), &bytes).unwrap();
    let mut manifest = manifest.clone();
    manifest.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
    let path = dir.join("manifest.json");
    manifest.write(&path).unwrap();
    path
}

fn validate_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_panoptes-model-validate"))
        .args(args)
        .output()
        .expect("panoptes-model-validate runs")
}

#[test]
fn cli_writes_the_result_into_the_repository_manifest_and_replaces_it() {
    let f = fixture();
    let repo = f.root.join("repository");
    let manifest_path = add_to_repository(&repo, &f.reference.model_path, &f.reference.manifest);
    let golden = f.root.join("golden");
    let args = [
        "--repository",
        repo.to_str().unwrap(),
        "--model",
        "reference-detector",
        "--version",
        "1.0.0",
        "--golden",
        golden.to_str().unwrap(),
        "--batch",
        "2",
        "--latency-passes",
        "3",
        "--write",
        "--json",
    ];
    let mut stored = Vec::new();
    for _ in 0..2 {
        let out = validate_cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: ValidationResult =
            serde_json::from_slice(&out.stdout).expect("one JSON result on stdout");
        let manifest = ModelManifest::from_file(&manifest_path).unwrap();
        assert_eq!(manifest.validation.len(), 1, "{:?}", manifest.validation);
        assert_eq!(manifest.validation[0], printed);
        assert_eq!(printed.golden_set, f.golden.id);
        assert_eq!((printed.device_class.as_str(), printed.batch), ("cpu", 2));
        assert!(printed.precision >= GOOD && printed.recall >= GOOD);
        stored.push(printed);
    }
    assert!(stored[1].measured_at_ms >= stored[0].measured_at_ms);

    // Text output from a file outside any repository; `--write` needs a repository.
    let model_file = f.reference.model_path.to_str().unwrap();
    let out = validate_cli(&[
        "--model-file",
        model_file,
        "--golden",
        golden.to_str().unwrap(),
        "--batch",
        "8",
        "--latency-passes",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("precision") && text.contains(&f.golden.id),
        "{text}"
    );
    let out = validate_cli(&["--model-file", model_file, "--golden", "x", "--write"]);
    assert!(!out.status.success());

    // A model whose bytes no longer match its manifest's sha256 is refused before loading.
    let model_pt = repo.join("reference-detector/1.0.0/model.pt");
    let mut bytes = std::fs::read(&model_pt).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&model_pt, bytes).unwrap();
    let out = validate_cli(&args);
    assert!(!out.status.success());
    let manifest = ModelManifest::from_file(&manifest_path).unwrap();
    assert_eq!(manifest.validation, stored[1..]);
}
