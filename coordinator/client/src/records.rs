//! Records stored in Redis. Hashes are read field by field (so a field added later does not
//! break older readers); JSON values use serde with defaults for the same reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::CoordError;
use crate::sealed::{self, Keyring, SealError};

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
    /// The node's class (`cpu`, `cuda`, `ingest`, or what its configuration names): what
    /// the coordinator's `[cost]` prices. A member that wrote none (older versions) reads as
    /// [`default_node_class`] of its kind.
    #[serde(default)]
    pub node_class: String,
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
            ("node_class", self.node_class.clone()),
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
            node_class: h
                .get("node_class")
                .filter(|c| !c.is_empty())
                .cloned()
                .unwrap_or_else(|| default_node_class(kind).to_string()),
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

/// The node class of a member of `kind` whose configuration names none, and of a member
/// that reports none (written before node classes existed): `ingest` for ingest nodes,
/// `cpu` for workers (a worker derives `cuda` from its model device itself).
pub fn default_node_class(kind: MemberKind) -> &'static str {
    match kind {
        MemberKind::Ingest => "ingest",
        MemberKind::Worker => "cpu",
    }
}

/// A region: where its Kafka is (hash `panoptes:regions`, field = region name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRecord {
    /// Kafka bootstrap servers of the region.
    pub bootstrap_servers: String,
}

/// A registered camera (hash `panoptes:cameras`, field = camera id).
///
/// As stored, the URL's password is not in `url` but sealed in `password` (see
/// [`crate::sealed`]): [`CameraRecord::sealed`] makes the stored form, [`CameraRecord::opened`]
/// gives the URL with its password back (coordinators and ingest nodes, which hold the
/// keyring). A record stored by an older version with the password in `url` and no
/// `password` opens as it is, and is sealed by the coordinator's re-seal pass.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraRecord {
    /// Camera id (also the Kafka key of its frames).
    pub id: String,
    /// RTSP URL: without its password when stored (`password` holds it, sealed); with it
    /// once opened.
    pub url: String,
    /// The URL's password, sealed (`v1:<key id>:...`); absent when the URL has none, or in
    /// an opened record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
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
    /// Degradation priority, 0 (capped first) ..= 9 (capped last) under overload.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Lowest sampled rate the coordinator may cap the camera to under overload.
    #[serde(default = "default_min_fps")]
    pub min_fps: u32,
    /// The operator's labels (`site = "north"`), for selecting cameras (a canary's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The default degradation priority (the middle of 0..=9).
pub fn default_priority() -> u8 {
    5
}

/// The default minimum sampled rate under overload.
pub fn default_min_fps() -> u32 {
    1
}

/// The default worker group name.
pub fn default_group() -> String {
    "default".into()
}

/// The default frames topic name.
pub fn default_frames_topic() -> String {
    "panoptes.frames".into()
}

impl std::fmt::Debug for CameraRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraRecord")
            .field("id", &self.id)
            .field("url", &panoptes_runtime::redact::redact_text(&self.url))
            .field("password", &self.password.as_ref().map(|_| "sealed"))
            .field("region", &self.region)
            .field("group", &self.group)
            .field("partition", &self.partition)
            .field("fps", &self.fps)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("priority", &self.priority)
            .field("min_fps", &self.min_fps)
            .field("labels", &self.labels)
            .finish()
    }
}

impl CameraRecord {
    /// The stored form: a password in `url` moves, sealed under the primary key, into
    /// `password`. A record without a password needs no keyring; one with a password fails
    /// with [`SealError::NoKeyring`] when `keys` is `None` (never stored in clear).
    pub fn sealed(&self, keys: Option<&Keyring>) -> Result<Self, SealError> {
        let Some((bare, pw)) = sealed::split_password(&self.url) else {
            return Ok(self.clone());
        };
        let keys = keys.ok_or(SealError::NoKeyring)?;
        Ok(Self {
            url: bare,
            password: Some(keys.seal(&self.id, &pw)),
            ..self.clone()
        })
    }

    /// The opened form: the URL with its password (from `password`) back in place.
    pub fn opened(&self, keys: Option<&Keyring>) -> Result<Self, SealError> {
        let Some(sealed_pw) = &self.password else {
            return Ok(self.clone());
        };
        let keys = keys.ok_or(SealError::NoKeyring)?;
        let pw = keys.open(&self.id, sealed_pw)?;
        let url = sealed::join_password(&self.url, pw.expose()).ok_or(SealError::Malformed)?;
        Ok(Self {
            url,
            password: None,
            ..self.clone()
        })
    }

    /// Whether the stored record needs sealing under `keys`' primary key: a password in
    /// clear in `url`, or one sealed under an older key.
    pub fn needs_reseal(&self, keys: &Keyring) -> bool {
        match &self.password {
            Some(p) => sealed::key_id(p) != Some(keys.primary_id()),
            None => sealed::split_password(&self.url).is_some(),
        }
    }

    /// Whether the camera has a password (sealed, or in clear in `url`).
    pub fn has_password(&self) -> bool {
        self.password.is_some() || sealed::split_password(&self.url).is_some()
    }

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
    /// Cameras: the sampling rate cap the leader set under overload (`None`: the registry
    /// fps); written by the leader's fenced batch, read by the owner without a restart.
    pub fps_cap: Option<u32>,
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
            fps_cap: int("fps_cap")?.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        })
    }
}

/// The member-hash field (besides [`MemberRecord::to_fields`]) in which a member reports the
/// highest epoch at which this process has held each item: JSON `{"<item>": <epoch>}`. A
/// leader that finds Redis empty (restarted without persistence) learns from it epochs
/// that only the members still remember, and grants above them (see `docs/coordinator.md`,
/// "Epochs that never go backwards").
pub const HELD_FIELD: &str = "held";

/// The member-hash field (besides [`MemberRecord::to_fields`]) in which a worker reports the
/// model it runs, `<name>@<version>` (empty or absent: none reported). Written with every
/// renewal from [`crate::MemberAgent::set_model`]; read by `GET /v1/rollouts/<group>`.
pub const MODEL_FIELD: &str = "model";

/// Parses the [`MODEL_FIELD`] of a member hash read with `HGETALL`.
pub fn model_field(h: &BTreeMap<String, String>) -> Option<String> {
    h.get(MODEL_FIELD).filter(|m| !m.is_empty()).cloned()
}

/// The [`HELD_FIELD`] value for `held`.
pub fn held_entry(held: &BTreeMap<String, u64>) -> String {
    serde_json::to_string(held).unwrap_or_else(|_| "{}".into())
}

/// Parses the [`HELD_FIELD`] of a member hash read with `HGETALL`; absent or unreadable
/// (an older member) reads as empty.
pub fn parse_held(h: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
    h.get(HELD_FIELD)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// A release entry in a member's released hash: `<epoch>` or `<epoch>:<next seq>`.
pub fn release_entry(epoch: u64, next_seq: Option<u64>) -> String {
    match next_seq {
        Some(s) => format!("{epoch}:{s}"),
        None => epoch.to_string(),
    }
}

/// Parses a release entry; `None` when it is not one.
pub fn parse_release_entry(s: &str) -> Option<(u64, Option<u64>)> {
    match s.split_once(':') {
        Some((e, seq)) => Some((e.parse().ok()?, Some(seq.parse().ok()?))),
        None => Some((s.parse().ok()?, None)),
    }
}

impl AssignRecord {
    /// Applies the owner's release entry (from its released hash) when it is for this
    /// record's epoch: the record then reads as released, with `released_seq` if given.
    /// Entries for other epochs (left from earlier grants) are ignored.
    pub fn apply_release(&mut self, entry: Option<&str>) {
        if let Some((epoch, seq)) = entry.and_then(parse_release_entry)
            && epoch == self.epoch
            && epoch > 0
        {
            self.released = Some(epoch);
            if seq.is_some() {
                self.released_seq = seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_entries_apply_only_at_their_epoch() {
        let mut r = AssignRecord {
            owner: "i1".into(),
            epoch: 4,
            ..Default::default()
        };
        r.apply_release(Some("3:99"));
        assert_eq!(r.released, None);
        r.apply_release(Some("garbage"));
        assert_eq!(r.released, None);
        r.apply_release(Some(&release_entry(4, Some(120))));
        assert_eq!((r.released, r.released_seq), (Some(4), Some(120)));
        let mut w = AssignRecord {
            owner: "w1".into(),
            epoch: 2,
            ..Default::default()
        };
        w.apply_release(Some(&release_entry(2, None)));
        assert_eq!((w.released, w.released_seq), (Some(2), None));
    }

    use super::*;

    #[test]
    fn held_epochs_round_trip_and_tolerate_garbage() {
        let held: BTreeMap<String, u64> = [("eu:1".to_string(), 7), ("cam-a".to_string(), 3)]
            .into_iter()
            .collect();
        let mut h = BTreeMap::new();
        assert!(parse_held(&h).is_empty(), "an older member reports nothing");
        h.insert(HELD_FIELD.to_string(), held_entry(&held));
        assert_eq!(parse_held(&h), held);
        h.insert(HELD_FIELD.to_string(), "{\"x\": -1}".to_string());
        assert!(parse_held(&h).is_empty(), "garbage reads as nothing");
    }

    #[test]
    fn member_records_round_trip_through_hash_fields() {
        let m = MemberRecord {
            id: "w1".into(),
            kind: MemberKind::Worker,
            region: "eu".into(),
            group: "default".into(),
            capacity: 30.5,
            node_class: "cuda".into(),
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
        assert_eq!(MemberRecord::from_fields(&h), Some(m.clone()));
        assert_eq!(MemberRecord::from_fields(&BTreeMap::new()), None);
        // A member written before node classes existed reads as its kind's default.
        let mut old = h.clone();
        old.remove("node_class");
        assert_eq!(MemberRecord::from_fields(&old).unwrap().node_class, "cpu");
        old.insert("kind".into(), "ingest".into());
        assert_eq!(
            MemberRecord::from_fields(&old).unwrap().node_class,
            "ingest"
        );
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
    fn camera_records_seal_and_open() {
        use base64::Engine;
        let k = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let ring = Keyring::parse(&format!("k1:{}", k(1))).unwrap();
        let plain = CameraRecord {
            id: "c".into(),
            url: "rtsp://viewer:hunter2@10.0.0.1:554/c".into(),
            password: None,
            region: "eu".into(),
            group: default_group(),
            partition: 0,
            fps: 5,
            width: 640,
            height: 360,
            priority: default_priority(),
            min_fps: default_min_fps(),
            labels: BTreeMap::new(),
        };
        assert!(!format!("{plain:?}").contains("hunter2"));
        assert_eq!(plain.sealed(None), Err(SealError::NoKeyring));
        let stored = plain.sealed(Some(&ring)).unwrap();
        let json = serde_json::to_string(&stored).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert_eq!(stored.url, "rtsp://viewer@10.0.0.1:554/c");
        assert!(stored.has_password() && !stored.needs_reseal(&ring));
        assert!(plain.needs_reseal(&ring), "clear text needs sealing");
        assert_eq!(stored.opened(Some(&ring)).unwrap(), plain);
        assert_eq!(stored.opened(None), Err(SealError::NoKeyring));
        let rotated = Keyring::parse(&format!("k2:{}\nk1:{}", k(2), k(1))).unwrap();
        assert!(stored.needs_reseal(&rotated));
        assert_eq!(stored.opened(Some(&rotated)).unwrap(), plain);
        // No password: nothing to seal, no keyring needed.
        let open = CameraRecord {
            url: "rtsp://10.0.0.2/x".into(),
            ..plain
        };
        assert_eq!(open.sealed(None).unwrap(), open);
        assert!(!open.has_password());
    }

    #[test]
    fn camera_load_scales_with_pixels_and_fps() {
        let c = CameraRecord {
            id: "c".into(),
            url: "rtsp://x/y".into(),
            password: None,
            region: "eu".into(),
            group: default_group(),
            partition: 0,
            fps: 10,
            width: 1280,
            height: 720,
            priority: default_priority(),
            min_fps: default_min_fps(),
            labels: BTreeMap::new(),
        };
        assert!((c.load() - 40.0).abs() < 1e-9);
    }
}
