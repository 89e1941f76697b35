use panoptes_schemas::model::{InputFormat, InputSpec, OutputContract};

use super::*;

fn manifest(name: &str, version: &str) -> ModelManifest {
    ModelManifest {
        name: name.into(),
        version: version.into(),
        input: InputSpec {
            width: 640,
            height: 640,
            format: InputFormat::Rgb,
            letterbox_fill: 114,
        },
        output: OutputContract::YoloRaw,
        classes: vec!["person".into(), "car".into()],
        score_threshold: 0.25,
        iou_threshold: 0.45,
        max_detections: 300,
        sha256: None,
        validation: Vec::new(),
    }
}

fn result(precision: f64) -> ValidationResult {
    ValidationResult {
        device_class: "cpu".into(),
        golden_set: "street@0123456789ab".into(),
        frames: 50,
        precision,
        recall: 0.8,
        latency_p99_ms: 40.0,
        batch: 1,
        measured_at_ms: 1,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    repo: ModelRepository,
    src: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    fs::create_dir(&root).unwrap();
    let src = dir.path().join("src.pt");
    fs::write(&src, b"not really torchscript, but bytes").unwrap();
    Fixture {
        repo: ModelRepository::open(&root).unwrap(),
        src,
        _dir: dir,
    }
}

#[test]
fn push_resolve_and_list() {
    let f = fixture();
    let pushed = f.repo.push(&f.src, &manifest("det", "1.10")).unwrap();
    let sha = sha256_file(&f.src).unwrap();
    assert_eq!(pushed.manifest.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(pushed.model_path, f.repo.root().join("det/1.10/model.pt"));
    f.repo.push(&f.src, &manifest("det", "1.9")).unwrap();
    f.repo.push(&f.src, &manifest("cls", "1")).unwrap();
    // Leftovers of an interrupted push and stray files are not listed.
    fs::create_dir(f.repo.root().join("det/.push-2-1-1")).unwrap();
    fs::create_dir(f.repo.root().join("det/empty")).unwrap();
    let listed = f.repo.list().unwrap();
    assert_eq!(
        listed,
        [
            ("cls".to_owned(), vec!["1".to_owned()]),
            ("det".to_owned(), vec!["1.9".to_owned(), "1.10".to_owned()]),
        ]
    );
    let resolved = f.repo.resolve("det", "1.10").unwrap();
    assert_eq!(resolved, pushed);
}

#[test]
fn same_bytes_are_idempotent_other_bytes_conflict() {
    let f = fixture();
    f.repo.push(&f.src, &manifest("det", "1")).unwrap();
    f.repo.record_validation("det", "1", result(0.9)).unwrap();
    let again = f.repo.push(&f.src, &manifest("det", "1")).unwrap();
    assert_eq!(again.manifest.validation.len(), 1, "validation kept");
    fs::write(&f.src, b"other bytes").unwrap();
    let err = f.repo.push(&f.src, &manifest("det", "1")).unwrap_err();
    assert!(matches!(err, ModelRepoError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("push a new version"), "{err}");
    // A claimed sha256 that the file does not have is refused.
    let mut claimed = manifest("det", "2");
    claimed.sha256 = Some("0".repeat(64));
    let err = f.repo.push(&f.src, &claimed).unwrap_err();
    assert!(matches!(err, ModelRepoError::Integrity { .. }), "{err}");
    assert!(!f.repo.root().join("det/2").exists());
}

#[test]
fn tampered_model_is_refused() {
    let f = fixture();
    let pushed = f.repo.push(&f.src, &manifest("det", "1")).unwrap();
    let mut bytes = fs::read(&pushed.model_path).unwrap();
    bytes[3] ^= 1;
    fs::write(&pushed.model_path, bytes).unwrap();
    let err = f.repo.resolve("det", "1").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelRepoError::Integrity { .. }), "{text}");
    assert!(
        text.contains("det@1") && text.contains("integrity"),
        "{text}"
    );
    // Listing still works (it does not hash), recording a result does not.
    assert!(f.repo.manifest("det", "1").is_ok());
    assert!(f.repo.record_validation("det", "1", result(0.5)).is_err());
}

#[test]
fn manifests_must_match_their_place_and_carry_a_hash() {
    let f = fixture();
    let pushed = f.repo.push(&f.src, &manifest("det", "1")).unwrap();
    let mut moved = pushed.manifest.clone();
    moved.version = "2".into();
    fs::write(&pushed.manifest_path, moved.to_json_pretty()).unwrap();
    let err = f.repo.resolve("det", "1").unwrap_err().to_string();
    assert!(err.contains("det@2") && err.contains("det/1"), "{err}");
    let mut unhashed = pushed.manifest;
    unhashed.sha256 = None;
    fs::write(&pushed.manifest_path, unhashed.to_json_pretty()).unwrap();
    let err = f.repo.resolve("det", "1").unwrap_err().to_string();
    assert!(err.contains("sha256"), "{err}");
}

#[test]
fn record_validation_replaces_or_appends() {
    let f = fixture();
    f.repo.push(&f.src, &manifest("det", "1")).unwrap();
    f.repo.record_validation("det", "1", result(0.5)).unwrap();
    f.repo.record_validation("det", "1", result(0.7)).unwrap();
    let mut cuda = result(0.6);
    cuda.device_class = "cuda".into();
    f.repo.record_validation("det", "1", cuda).unwrap();
    let m = f.repo.resolve("det", "1").unwrap().manifest;
    assert_eq!(m.validation.len(), 2);
    assert_eq!(m.validation[0].precision, 0.7);
    let err = f
        .repo
        .record_validation("det", "1", result(1.5))
        .unwrap_err();
    assert!(err.to_string().contains("precision"), "{err}");
}

#[test]
fn hostile_names_and_missing_things() {
    let f = fixture();
    for bad in ["../x", "..", ".hidden", "a/b", "", "a b"] {
        let err = f.repo.resolve(bad, "1").unwrap_err();
        assert!(matches!(err, ModelRepoError::BadName(_)), "{bad:?}: {err}");
        let err = f.repo.resolve("det", bad).unwrap_err();
        assert!(matches!(err, ModelRepoError::BadName(_)), "{bad:?}: {err}");
        let err = f.repo.push(&f.src, &manifest(bad, "1")).unwrap_err();
        assert!(matches!(err, ModelRepoError::BadName(_)), "{bad:?}: {err}");
    }
    let err = f.repo.resolve("det", "1").unwrap_err();
    assert_eq!(err.to_string(), "model det@* is not in the repository");
    f.repo.push(&f.src, &manifest("det", "1")).unwrap();
    let err = f.repo.resolve("det", "2").unwrap_err();
    assert_eq!(err.to_string(), "model det@2 is not in the repository");
    let err = ModelRepository::open(f.repo.root().join("nope")).unwrap_err();
    assert!(matches!(err, ModelRepoError::NoRepository { .. }), "{err}");
}

#[test]
fn versions_sort_numerically() {
    let mut v = vec!["2", "1.10", "1.9", "1.9-rc1", "1.2.3", "b", "a"];
    v.sort_by(|a, b| version_cmp(a, b));
    assert_eq!(v, ["1.2.3", "1.9", "1.9-rc1", "1.10", "2", "a", "b"]);
}
