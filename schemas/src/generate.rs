//! JSON Schema documents generated from the message types.
//!
//! The files under `schemas/json/` are produced by the `panoptes-gen-schemas` binary from
//! [`all_schemas`] and checked in, so that consumers in other languages (and reviewers of a
//! change to the wire format) see the schema without building Rust. A test regenerates them
//! and fails on any difference.

use schemars::JsonSchema;
use serde_json::Value;

use crate::model::{CanaryReport, ModelManifest, ModelRollout};
use crate::{ControlMessage, DeadLetter, DetectionRecord, FrameHeaders, SCHEMA_VERSION};

/// The `$id` of a schema file, e.g. `urn:panoptes:schema:v1:frame-headers`.
///
/// A URN rather than a URL: the documents are not served anywhere, and a URL would invite
/// tools to try fetching them.
pub fn schema_id(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".schema.json").unwrap_or(file_name);
    format!("urn:panoptes:schema:v{SCHEMA_VERSION}:{stem}")
}

/// Every schema document: (file name, schema), one per top-level message type.
///
/// Each carries `$id` (see [`schema_id`]), an id-like `title`, and a `description` that
/// states the schema version. Object keys are sorted at every level so the rendered files
/// are identical whichever `serde_json` map features the build happens to enable.
pub fn all_schemas() -> Vec<(&'static str, Value)> {
    vec![
        document::<FrameHeaders>(
            "frame-headers.schema.json",
            "Envelope of a frame record on Kafka topic `panoptes.frames`, carried as Kafka \
             headers `panoptes-*` and `traceparent` (this schema describes the fields as a \
             JSON object).",
        ),
        document::<DetectionRecord>(
            "detection-record.schema.json",
            "Detection output record on Kafka topics `panoptes.detections` and \
             `panoptes.detections.shadow` (JSON, key = camera id).",
        ),
        document::<DeadLetter>(
            "dead-letter.schema.json",
            "Dead letter for a frame that could not be processed, on Kafka topic \
             `panoptes.frames.dlq` (JSON).",
        ),
        document::<ControlMessage>(
            "control-message.schema.json",
            "Control-plane message between the coordinator and ingest/worker nodes (JSON, \
             internally tagged by `type`).",
        ),
        document::<ModelManifest>(
            "model-manifest.schema.json",
            "Manifest of a TorchScript model: `<repository>/<name>/<version>/manifest.json`, \
             or the file named by a worker's `model.manifest`.",
        ),
        document::<ModelRollout>(
            "model-rollout.schema.json",
            "Rollout record of a worker group: Redis string `panoptes:rollout:<group>` \
             (JSON), written by the coordinator (operator API, canary verdicts).",
        ),
        document::<CanaryReport>(
            "canary-report.schema.json",
            "One worker's figures per model version while a canary runs: Redis hash \
             `panoptes:canary:<group>:<since_generation>`, field = worker id (JSON).",
        ),
    ]
}

/// Renders a schema as it is stored on disk: pretty-printed with a trailing newline.
pub fn render_schema(schema: &Value) -> String {
    let mut text =
        serde_json::to_string_pretty(schema).expect("a serde_json::Value always serializes");
    text.push('\n');
    text
}

fn document<T: JsonSchema>(file_name: &'static str, what: &str) -> (&'static str, Value) {
    let mut schema = schemars::schema_for!(T).to_value();
    if let Value::Object(map) = &mut schema {
        let id = schema_id(file_name);
        let title = id.trim_start_matches("urn:").replace(':', ".");
        // The type's own doc comment becomes the description; the version and topic come
        // first so a reader of the file alone knows what it is for.
        let type_doc = map
            .get("description")
            .and_then(Value::as_str)
            .map(|doc| format!("\n\n{doc}"))
            .unwrap_or_default();
        map.insert("$id".to_owned(), Value::from(id));
        map.insert("title".to_owned(), Value::from(title));
        map.insert(
            "description".to_owned(),
            Value::from(format!(
                "Panoptes schema version {SCHEMA_VERSION}. {what}{type_doc}"
            )),
        );
    }
    sort_keys(&mut schema);
    (file_name, schema)
}

fn sort_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_titles_and_versions() {
        for (file, schema) in all_schemas() {
            assert!(file.ends_with(".schema.json"));
            let id = schema["$id"].as_str().unwrap();
            assert!(id.starts_with("urn:panoptes:schema:v1:"), "{id}");
            assert!(
                schema["title"]
                    .as_str()
                    .unwrap()
                    .starts_with("panoptes.schema.v1.")
            );
            let description = schema["description"].as_str().unwrap();
            assert!(description.contains("schema version 1"), "{description}");
        }
    }

    #[test]
    fn rendering_ends_with_newline() {
        let text = render_schema(&serde_json::json!({"a": 1}));
        assert_eq!(text, "{\n  \"a\": 1\n}\n");
    }
}
