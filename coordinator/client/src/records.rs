//! Records stored in Redis. Hashes are read field by field (so a field added later does not
//! break older readers); JSON values use serde with defaults for the same reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::CoordError;

/// The two kinds of members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    /// An ingest node (owns cameras).
    Ingest,
    /// A worker node (owns frames partitions).
    Worker,
}

impl MemberKind {
    /// The name used in keys and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Worker => "worker",
        }
    }

    /// Parses `ingest` or `worker`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ingest" => Some(Self::Ingest),
            "worker" => Some(Self::Worker),
            _ => None,
        }
    }
}

impl std::fmt::Display for MemberKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member as it describes itself (hash `panoptes:member:<kind>:<id>`, with a TTL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Node id (unique per kind).
    pub id: String,
    /// Ingest or worker.
    pub kind: MemberKind,
    /// Region the node runs in; its Kafka is that region's.
    pub region: String,
    /// Worker group (workers) or ingest pool (ingest); placement keeps items in their group.
    pub group: String,
    /// Capacity in load units per second (frames/s at 640×360; see `docs/coordinator.md`).
    pub capacity: f64,
    /// Measured load now, same units.
    pub load: f64,
    /// The node's HTTP base URL (metrics, health).
    pub http: String,
    /// `active` or `draining` (the node asked to leave, e.g. on SIGTERM).
    pub state: String,
    /// Whether the node can reach its region's Kafka.
    pub broker_ok: bool,
    /// Random id of this process's registration (changes on restart).
    pub session: String,
    /// Free-form status the node reports (per-camera fps and next sequence numbers, per
    /// partition lag), shown by `panoptes status`.
    pub report: serde_json::Value,
    /// When the record was last renewed (ms since the epoch).
    pub updated_ms: u64,
}

impl MemberRecord {
    /// The hash fields to write.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("kind", self.kind.to_string()),
            ("region", self.region.clone()),
            ("group", self.group.clone()),
            ("capacity", self.capacity.to_string()),
            ("load", self.load.to_string()),
            ("http", self.http.clone()),
            ("state", self.state.clone()),
            ("broker_ok", if self.broker_ok { "1" } else { "0" }.into()),
            ("session", self.session.clone()),
            ("report", self.report.to_string()),
            ("updated_ms", self.updated_ms.to_string()),
        ]
    }

    /// Parses a hash read with `HGETALL`; `None` for an empty (expired) hash.
    pub fn from_fields(h: &BTreeMap<String, String>) -> Option<Self> {
        let kind = MemberKind::parse(h.get("kind")?)?;
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Some(Self {
            id: h.get("id")?.clone(),
            kind,
            region: h.get("region").cloned().unwrap_or_default(),
            group: h.get("group").cloned().unwrap_or_default(),
            capacity: num("capacity"),
            load: num("load"),
            http: h.get("http").cloned().unwrap_or_default(),
            state: h.get("state").cloned().unwrap_or_else(|| "active".into()),
            broker_ok: h.get("broker_ok").is_none_or(|v| v == "1"),
            session: h.get("session").cloned().unwrap_or_default(),
            report: h
                .get("report")
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(serde_json::Value::Null),
            updated_ms: h
                .get("updated_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

/// A region: where its Kafka is (hash `panoptes:regions`, field = region name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRecord {
    /// Kafka bootstrap servers of the region.
    pub bootstrap_servers: String,
}

/// A registered camera (hash `panoptes:cameras`, field = camera id). Holds the URL with its
/// credentials: only ingest nodes read it; the operator API redacts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraRecord {
    /// Camera id (also the Kafka key of its frames).
    pub id: String,
    /// RTSP URL, credentials included.
    pub url: String,
    /// Home region: where its frames go while the region is healthy.
    pub region: String,
    /// Worker group that processes its frames.
    #[serde(default = "default_group")]
    pub group: String,
    /// Frames partition (the same number in every region's frames topic).
    pub partition: i32,
    /// Sampled frames per second.
    pub fps: u32,
    /// Analytic bounding box width.
    pub width: u32,
    /// Analytic bounding box height.
    pub height: u32,
}

/// The default worker group name.
pub fn default_group() -> String {
    "default".into()
}

/// The default frames topic name.
pub fn default_frames_topic() -> String {
    "panoptes.frames".into()
}

impl CameraRecord {
    /// Load of this camera in load units: frames/s scaled by pixels against 640×360.
    pub fn load(&self) -> f64 {
        f64::from(self.fps) * f64::from(self.width) * f64::from(self.height) / (640.0 * 360.0)
    }
}

/// An item's assignment (hash `panoptes:assign:...` for partitions, `panoptes:camassign:...`
/// for cameras).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignRecord {
    /// Owning member id; empty when unassigned.
    pub owner: String,
    /// Epoch of this grant; increases with every grant of the item.
    pub epoch: u64,
    /// A member the coordinator wants to move the item to: the owner should finish, commit
    /// and release it.
    pub target: Option<String>,
    /// Set by the owner when it released the item at that epoch.
    pub released: Option<u64>,
    /// Cameras: the next sequence number, reported by the owner with its release.
    pub released_seq: Option<u64>,
    /// Cameras: the sequence number the next owner starts from (from the previous owner's
    /// release, or estimated after a lease expiry).
    pub start_seq: Option<u64>,
    /// Cameras: the region whose Kafka the frames go to while this grant lasts.
    pub cluster: Option<String>,
}

impl AssignRecord {
    /// Parses `HGETALL`; an empty hash is the default (unassigned, epoch 0).
    pub fn from_fields(h: &BTreeMap<String, String>) -> Result<Self, CoordError> {
        let int = |k: &str| -> Result<Option<u64>, CoordError> {
            match h.get(k).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| CoordError::Invalid(format!("field {k} = {v:?} is not a number"))),
            }
        };
        Ok(Self {
            owner: h.get("owner").cloned().unwrap_or_default(),
            epoch: int("epoch")?.unwrap_or(0),
            target: h.get("target").filter(|t| !t.is_empty()).cloned(),
            released: int("released")?,
            released_seq: int("released_seq")?,
            start_seq: int("start_seq")?,
            cluster: h.get("cluster").filter(|t| !t.is_empty()).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_records_round_trip_through_hash_fields() {
        let m = MemberRecord {
            id: "w1".into(),
            kind: MemberKind::Worker,
            region: "eu".into(),
            group: "default".into(),
            capacity: 30.5,
            load: 12.0,
            http: "http://127.0.0.1:1".into(),
            state: "active".into(),
            broker_ok: false,
            session: "abc".into(),
            report: serde_json::json!({"items": {"eu:1": {"lag": 3}}}),
            updated_ms: 42,
        };
        let h: BTreeMap<String, String> = m
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(MemberRecord::from_fields(&h), Some(m));
        assert_eq!(MemberRecord::from_fields(&BTreeMap::new()), None);
    }

    #[test]
    fn assign_records_reject_garbage_epochs() {
        let mut h = BTreeMap::new();
        h.insert("owner".to_string(), "w1".to_string());
        h.insert("epoch".to_string(), "x".to_string());
        assert!(AssignRecord::from_fields(&h).is_err());
        h.insert("epoch".to_string(), "4".to_string());
        h.insert("target".to_string(), String::new());
        let r = AssignRecord::from_fields(&h).unwrap();
        assert_eq!((r.owner.as_str(), r.epoch, r.target), ("w1", 4, None));
    }

    #[test]
    fn camera_load_scales_with_pixels_and_fps() {
        let c = CameraRecord {
            id: "c".into(),
            url: "rtsp://x/y".into(),
            region: "eu".into(),
            group: default_group(),
            partition: 0,
            fps: 10,
            width: 1280,
            height: 720,
        };
        assert!((c.load() - 40.0).abs() < 1e-9);
    }
}
