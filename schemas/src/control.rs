//! Control-plane messages between the coordinator and ingest/worker nodes.
//!
//! They are JSON, pushed over Redis pub/sub and also readable by polling, so each message is
//! self-contained and idempotent: it states the full assignment and its epoch rather than a
//! delta, and a receiver can apply the same message twice or drop a stale one by epoch.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::EnvelopeError;
use crate::ids::{CAMERA_ID_PATTERN, validate_camera_id};
use crate::{SCHEMA_VERSION, check_name, check_version};

/// A control-plane message; the JSON `"type"` field names the variant in snake case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
// `deny_unknown_fields` on an internally tagged enum applies to every variant's fields (the
// tag itself is consumed first), which is exactly what we want.
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// Coordinator → ingest node: this node now owns the camera.
    CameraAssignment {
        /// Layout version; always `SCHEMA_VERSION` (currently 1) when written by this build.
        #[schemars(extend("const" = SCHEMA_VERSION))]
        schema_version: u32,
        /// Camera being assigned.
        #[schemars(pattern(CAMERA_ID_PATTERN))]
        camera_id: String,
        /// Ingest node that should connect to the camera.
        node_id: String,
        /// Assignment epoch of the camera; grows with every move, so a node holding a lower
        /// epoch for this camera knows it lost it.
        epoch: u64,
        /// Region of the node (and of the Kafka cluster it publishes to).
        region: String,
    },
    /// Coordinator → worker node: this worker now owns the partition.
    PartitionAssignment {
        /// Layout version; always `SCHEMA_VERSION` (currently 1) when written by this build.
        #[schemars(extend("const" = SCHEMA_VERSION))]
        schema_version: u32,
        /// Topic of the partition, normally `panoptes.frames`.
        topic: String,
        /// Partition being assigned.
        #[schemars(range(min = 0))]
        partition: i32,
        /// Worker that should consume the partition.
        worker_id: String,
        /// Assignment epoch of the partition; copied into every detection record the worker
        /// publishes from it, so readers can discard output of a superseded owner.
        epoch: u64,
        /// Region of the worker (and of the Kafka cluster it consumes from).
        region: String,
    },
    /// Either direction: the node stops (or must stop) working on these cameras and
    /// partitions. A partition moves to a new owner only after its release or lease expiry.
    Release {
        /// Layout version; always `SCHEMA_VERSION` (currently 1) when written by this build.
        #[schemars(extend("const" = SCHEMA_VERSION))]
        schema_version: u32,
        /// Node giving up the work.
        node_id: String,
        /// Epoch of the assignments being released; a release older than the current
        /// assignment is stale and ignored.
        epoch: u64,
        /// Cameras released (ingest nodes).
        #[schemars(inner(pattern(CAMERA_ID_PATTERN)))]
        cameras: Vec<String>,
        /// Partitions of `panoptes.frames` released (workers).
        #[schemars(inner(range(min = 0)))]
        partitions: Vec<i32>,
    },
    /// Coordinator → node: finish in-flight work, release everything and stop taking more.
    Drain {
        /// Layout version; always `SCHEMA_VERSION` (currently 1) when written by this build.
        #[schemars(extend("const" = SCHEMA_VERSION))]
        schema_version: u32,
        /// Node to drain.
        node_id: String,
        /// Time the node has to finish, in milliseconds from receipt. Relative rather than
        /// absolute so that clock skew between hosts cannot shorten or stretch it.
        deadline_ms: u64,
    },
}

impl ControlMessage {
    /// The `"type"` tag of this message, e.g. `"partition_assignment"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CameraAssignment { .. } => "camera_assignment",
            Self::PartitionAssignment { .. } => "partition_assignment",
            Self::Release { .. } => "release",
            Self::Drain { .. } => "drain",
        }
    }

    /// The layout version the message carries.
    pub fn schema_version(&self) -> u32 {
        match self {
            Self::CameraAssignment { schema_version, .. }
            | Self::PartitionAssignment { schema_version, .. }
            | Self::Release { schema_version, .. }
            | Self::Drain { schema_version, .. } => *schema_version,
        }
    }

    /// The node (ingest node or worker) the message is about.
    pub fn node_id(&self) -> &str {
        match self {
            Self::CameraAssignment { node_id, .. }
            | Self::Release { node_id, .. }
            | Self::Drain { node_id, .. } => node_id,
            Self::PartitionAssignment { worker_id, .. } => worker_id,
        }
    }

    /// Checks the rules the type system cannot: version, camera ids, non-empty names
    /// without whitespace, non-negative partitions.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_version(self.schema_version())?;
        match self {
            Self::CameraAssignment {
                camera_id,
                node_id,
                region,
                ..
            } => {
                validate_camera_id(camera_id)?;
                check_name("node_id", node_id)?;
                check_name("region", region)?;
            }
            Self::PartitionAssignment {
                topic,
                partition,
                worker_id,
                region,
                ..
            } => {
                check_name("topic", topic)?;
                check_partition("partition", *partition)?;
                check_name("worker_id", worker_id)?;
                check_name("region", region)?;
            }
            Self::Release {
                node_id,
                cameras,
                partitions,
                ..
            } => {
                check_name("node_id", node_id)?;
                for (i, camera) in cameras.iter().enumerate() {
                    validate_camera_id(camera).map_err(|err| match err {
                        EnvelopeError::InvalidField { reason, .. } => {
                            EnvelopeError::invalid_field(format!("cameras[{i}]"), reason)
                        }
                        other => other,
                    })?;
                }
                for (i, partition) in partitions.iter().enumerate() {
                    check_partition(&format!("partitions[{i}]"), *partition)?;
                }
            }
            Self::Drain { node_id, .. } => check_name("node_id", node_id)?,
        }
        Ok(())
    }

    crate::json_codec!("a message");
}

fn check_partition(field: &str, partition: i32) -> Result<(), EnvelopeError> {
    if partition < 0 {
        return Err(EnvelopeError::invalid_field(
            field,
            format!("{partition} is negative"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tag_and_fields_on_the_wire() {
        let msg = ControlMessage::Drain {
            schema_version: SCHEMA_VERSION,
            node_id: "worker-1".into(),
            deadline_ms: 5000,
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"type": "drain", "schema_version": 1, "node_id": "worker-1", "deadline_ms": 5000})
        );
        assert_eq!(msg.kind(), "drain");
    }

    #[test]
    fn unknown_fields_rejected_inside_variants() {
        let err = serde_json::from_value::<ControlMessage>(json!({
            "type": "drain", "schema_version": 1, "node_id": "w", "deadline_ms": 1, "extra": true
        }))
        .unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn release_names_bad_camera_index() {
        let msg = ControlMessage::Release {
            schema_version: SCHEMA_VERSION,
            node_id: "ingest-1".into(),
            epoch: 3,
            cameras: vec!["ok".into(), "-bad".into()],
            partitions: vec![0],
        };
        assert_eq!(msg.validate().unwrap_err().field(), Some("cameras[1]"));
    }
}
