//! Property-based tests of the ingest node's configuration: any file derived from a
//! realistic configuration (two cameras, one with credentials in its URL) with hostile
//! values (`panoptes_testkit::props::config_documents`) loads, validates and resolves its
//! cameras to a config or clear errors, never a panic; no error quotes a camera password.

use panoptes_ingest::config::{CameraConfig, IngestConfig};
use panoptes_runtime::config::from_toml_str;
use panoptes_testkit::props::config_documents;
use proptest::prelude::*;

/// The password of the realistic configuration's first camera.
const PASSWORD: &str = "Hunter2-s3cret";

fn realistic() -> serde_json::Value {
    let mut c = IngestConfig::default();
    let mut cam = |id: &str, url: String| {
        let mut camera = CameraConfig {
            id: id.into(),
            url,
            ..CameraConfig::default()
        };
        camera.fps = Some(10);
        camera.partition = Some(1);
        c.cameras.push(camera);
    };
    cam("lobby", format!("rtsp://viewer:{PASSWORD}@10.0.0.7:554/s1"));
    cam("dock", "rtsp://10.0.0.8/s1".into());
    serde_json::to_value(c).unwrap()
}

proptest! {
    #[test]
    fn config_files_load_or_fail_clearly(doc in config_documents(realistic())) {
        let c = match from_toml_str::<IngestConfig>(&doc) {
            Ok(c) => c,
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.len() > "invalid configuration: ".len());
                // Parse errors quote the offending line: never with the password in it.
                prop_assert!(!text.contains(PASSWORD), "{}", text);
                return Ok(());
            }
        };
        if let Err(e) = c.validate() {
            prop_assert!(!e.to_string().is_empty());
        }
        let (specs, errors) = c.camera_specs();
        prop_assert!(specs.len() + errors.len() <= c.cameras.len());
        for e in errors {
            let text = e.to_string();
            prop_assert!(!text.is_empty());
            prop_assert!(!text.contains(PASSWORD), "{}", text);
        }
        for s in specs {
            let shown = format!("{s:?}");
            prop_assert!(!shown.contains(PASSWORD), "{}", shown);
        }
    }
}
