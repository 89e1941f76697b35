//! The camera registry: hash `panoptes:cameras` (camera id → [`CameraRecord`] JSON) and its
//! version counter `panoptes:cameras:version`, as the operator API changes them.
//!
//! Every change is one optimistic transaction: `WATCH` both keys, read the whole registry,
//! validate and plan in Rust, then `MULTI`/`EXEC` the writes together with the version bump.
//! Bad input is rejected before anything is written, so a rejected request leaves the
//! registry byte-identical; a concurrent change aborts the `EXEC` and the request is planned
//! again from the new state.
//!
//! Camera passwords are stored sealed (`panoptes_coordinator_client::sealed`): a write seals
//! the URL's password under the primary key of [`Limits::camera_keys`] (and is refused
//! without a keyring); planning opens the stored records, so an unchanged camera is
//! recognised and a redacted `***` keeps the stored password. A record the keyring cannot
//! open (a key rotated out) is planned in its sealed form: it can still be kept with `***`,
//! replaced with a new password, or deleted. [`reseal`] moves every record to the primary
//! key (key rotation). [`read`] gives the stored forms; everything this module hands out for
//! display goes through [`CameraView`], which carries the URL redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use panoptes_coordinator_client::sealed::Keyring;
use panoptes_coordinator_client::{CameraRecord, RedisLink, keys};
use panoptes_runtime::redact::redact_text;
use redis::Connection;
use serde::{Deserialize, Serialize};

mod error;
pub mod labels;
mod spec;

pub use self::error::RegistryError;
pub use self::spec::{
    CameraSpec, CameraView, DEFAULT_FPS, DEFAULT_HEIGHT, DEFAULT_WIDTH, FPS_RANGE, HEIGHT_RANGE,
    Limits, WIDTH_RANGE, redact_url, validate,
};

/// How often a transaction is replanned after concurrent changes before giving up.
const MAX_TX_RETRIES: usize = 16;

/// The registry as read in one go.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Camera id → record.
    pub cameras: BTreeMap<String, CameraRecord>,
    /// Camera id → why its stored record could not be parsed (written by something else, or
    /// by an older version). Such a camera can be replaced (`PUT`, `apply`) or deleted.
    pub unreadable: BTreeMap<String, String>,
    /// `panoptes:cameras:version` (0 when never written).
    pub version: u64,
}

/// What an `apply` changed (or would have changed: nothing is written when it fails).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplySummary {
    /// Ids of cameras created.
    pub added: Vec<String>,
    /// Ids of cameras whose record changed.
    pub updated: Vec<String>,
    /// Ids of cameras deleted (only with `prune`).
    pub removed: Vec<String>,
    /// Ids of cameras already as asked.
    pub unchanged: Vec<String>,
    /// The registry version after the apply (unchanged when nothing changed).
    pub version: u64,
}

/// The writes one transaction makes.
#[derive(Debug, Default)]
struct Plan {
    put: Vec<CameraRecord>,
    delete: Vec<String>,
}

/// Plans an apply against `snap`: validation, conflicts, partition allocation.
fn plan_apply(
    snap: &Snapshot,
    specs: &[CameraSpec],
    prune: bool,
    if_version: Option<u64>,
    limits: &Limits,
) -> Result<(Plan, ApplySummary), RegistryError> {
    if let Some(v) = if_version
        && v != snap.version
    {
        return Err(RegistryError::Conflict(format!(
            "registry version is {}, not {v}: it changed since you read it; read it again and retry",
            snap.version
        )));
    }
    let listed = unique_ids(specs)?;
    let mut wanted = specs
        .iter()
        .map(|s| validate(s, snap.cameras.get(&s.id), limits))
        .collect::<Result<Vec<_>, _>>()?;
    allocate_partitions(snap, &listed, &mut wanted, prune, limits)?;
    let (mut plan, mut sum) = (Plan::default(), ApplySummary::default());
    for c in wanted {
        match snap.cameras.get(&c.id) {
            None if snap.unreadable.contains_key(&c.id) => sum.updated.push(c.id.clone()),
            None => sum.added.push(c.id.clone()),
            Some(old) if *old == c => {
                sum.unchanged.push(c.id.clone());
                continue;
            }
            Some(_) => sum.updated.push(c.id.clone()),
        }
        plan.put.push(c);
    }
    if prune {
        for id in snap.cameras.keys().chain(snap.unreadable.keys()) {
            if !listed.contains(id.as_str()) {
                sum.removed.push(id.clone());
                plan.delete.push(id.clone());
            }
        }
    }
    sum.version = snap.version;
    Ok((plan, sum))
}

/// The ids of `specs`; an id listed twice is an error.
fn unique_ids(specs: &[CameraSpec]) -> Result<BTreeSet<&str>, RegistryError> {
    let mut seen = BTreeSet::new();
    for s in specs {
        if !seen.insert(s.id.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "camera id {:?} appears more than once",
                s.id
            )));
        }
    }
    Ok(seen)
}

/// Gives every wanted camera without a partition the smallest free one, preferring
/// partitions no pruned camera held. Partitions held: by cameras of the file that name or
/// keep one, and by cameras not in the file (they keep theirs, or are being pruned: their
/// partition is not reused in the same apply, frames of the old camera may still be in it).
fn allocate_partitions(
    snap: &Snapshot,
    listed: &BTreeSet<&str>,
    wanted: &mut [CameraRecord],
    prune: bool,
    limits: &Limits,
) -> Result<(), RegistryError> {
    let mut holder: BTreeMap<i32, String> = BTreeMap::new();
    for c in wanted.iter() {
        if c.partition >= 0
            && let Some(other) = holder.insert(c.partition, c.id.clone())
        {
            return Err(RegistryError::Conflict(format!(
                "cameras {other} and {} both want partition {}",
                c.id, c.partition
            )));
        }
    }
    let mut pruned_partitions = BTreeSet::new();
    for (id, c) in &snap.cameras {
        if listed.contains(id.as_str()) {
            continue;
        }
        if let Some(other) = holder.get(&c.partition) {
            return Err(RegistryError::Conflict(format!(
                "camera {other} wants partition {}, which camera {id} holds",
                c.partition
            )));
        }
        pruned_partitions.insert(c.partition);
    }
    let mut used: BTreeSet<i32> = holder.keys().copied().collect();
    if !prune {
        used.extend(pruned_partitions.iter().copied());
    }
    // Free partitions in the order they are handed out, each part ascending: those no
    // pruned camera held, then the pruned cameras' (free only when pruning).
    let n = limits.frames_partitions;
    let free: Vec<i32> = (0..n)
        .filter(|p| !used.contains(p) && !pruned_partitions.contains(p))
        .chain((0..n).filter(|p| !used.contains(p) && pruned_partitions.contains(p)))
        .collect();
    let unplaced: Vec<&mut CameraRecord> = wanted.iter_mut().filter(|c| c.partition < 0).collect();
    if let Some(first) = unplaced.first()
        && unplaced.len() > free.len()
    {
        return Err(RegistryError::NoFreePartition {
            camera: first.id.clone(),
            have: n,
            need: n.saturating_add(i32::try_from(unplaced.len() - free.len()).unwrap_or(i32::MAX)),
        });
    }
    for (c, p) in unplaced.into_iter().zip(free) {
        c.partition = p;
    }
    Ok(())
}

/// Reads the registry (no transaction).
pub fn read(c: &mut Connection) -> Result<Snapshot, RegistryError> {
    let (raw, version): (BTreeMap<String, String>, Option<u64>) = redis::pipe()
        .cmd("HGETALL")
        .arg(keys::CAMERAS)
        .cmd("GET")
        .arg(keys::CAMERAS_VERSION)
        .query(c)?;
    let mut cameras = BTreeMap::new();
    let mut unreadable = BTreeMap::new();
    for (id, json) in raw {
        match serde_json::from_str::<CameraRecord>(&json) {
            Ok(rec) => {
                cameras.insert(id, rec);
            }
            Err(e) => {
                // serde's message may quote the stored text: redact it.
                let why = redact_text(&e.to_string());
                tracing::warn!(camera = %id, error = %why, "unreadable camera record in the registry");
                unreadable.insert(id, why);
            }
        }
    }
    Ok(Snapshot {
        cameras,
        unreadable,
        version: version.unwrap_or(0),
    })
}

/// The snapshot with every record opened that `keys` can open; the others stay sealed
/// (logged), see the module doc.
fn opened(mut snap: Snapshot, keys: Option<&Keyring>) -> Snapshot {
    let Some(keys) = keys else {
        return snap;
    };
    for rec in snap.cameras.values_mut() {
        if rec.password.is_none() {
            continue;
        }
        match rec.opened(Some(keys)) {
            Ok(r) => *rec = r,
            Err(e) => {
                tracing::warn!(camera = %rec.id, error = %e, "stored camera password cannot be opened")
            }
        }
    }
    snap
}

/// The stored form of a planned record: its password sealed under the primary key.
fn stored(rec: &CameraRecord, keys: Option<&Keyring>) -> Result<CameraRecord, RegistryError> {
    rec.sealed(keys)
        .map_err(|e| RegistryError::Invalid(format!("camera {}: {e}", rec.id)))
}

/// Runs `plan_fn` against a watched, opened snapshot and commits its writes (passwords
/// sealed) with a version bump, in one `MULTI`/`EXEC`; replans when a concurrent change
/// aborted the commit. Nothing is written when sealing any record fails.
fn transact<T>(
    c: &mut Connection,
    keys: Option<&Keyring>,
    mut plan_fn: impl FnMut(&Snapshot) -> Result<(Plan, T), RegistryError>,
) -> Result<(T, u64), RegistryError> {
    for _ in 0..MAX_TX_RETRIES {
        redis::cmd("WATCH")
            .arg(keys::CAMERAS)
            .arg(keys::CAMERAS_VERSION)
            .query::<()>(c)?;
        let planned = read(c).and_then(|snap| {
            let snap = opened(snap, keys);
            let (plan, out) = plan_fn(&snap)?;
            let puts = plan
                .put
                .iter()
                .map(|r| stored(r, keys))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(((Plan { put: puts, ..plan }, out), snap.version))
        });
        let ((plan, out), version) = match planned {
            Ok(p) => p,
            Err(e) => {
                let _ = redis::cmd("UNWATCH").query::<()>(c);
                return Err(e);
            }
        };
        if plan.put.is_empty() && plan.delete.is_empty() {
            redis::cmd("UNWATCH").query::<()>(c)?;
            return Ok((out, version));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for rec in &plan.put {
            let json =
                serde_json::to_string(rec).map_err(|e| RegistryError::Internal(e.to_string()))?;
            pipe.cmd("HSET")
                .arg(keys::CAMERAS)
                .arg(&rec.id)
                .arg(json)
                .ignore();
        }
        if !plan.delete.is_empty() {
            pipe.cmd("HDEL")
                .arg(keys::CAMERAS)
                .arg(&plan.delete)
                .ignore();
        }
        pipe.cmd("INCR").arg(keys::CAMERAS_VERSION);
        let done: Option<(u64,)> = pipe.query(c)?;
        if let Some((version,)) = done {
            return Ok((out, version));
        }
        // EXEC aborted: someone changed the registry in between; plan again.
    }
    Err(RegistryError::Conflict(
        "the registry kept changing concurrently; retry".into(),
    ))
}

/// Makes the registry match `specs` (adds, updates, and with `prune` removes), atomically.
pub fn apply(
    c: &mut Connection,
    limits: &Limits,
    specs: &[CameraSpec],
    prune: bool,
    if_version: Option<u64>,
) -> Result<ApplySummary, RegistryError> {
    let keys = limits.camera_keys.as_ref();
    let (mut sum, version) = transact(c, keys, |snap| {
        plan_apply(snap, specs, prune, if_version, limits)
    })?;
    sum.version = version;
    Ok(sum)
}

/// Creates one camera; 409 when the id exists or its partition is taken.
pub fn create(
    c: &mut Connection,
    limits: &Limits,
    spec: &CameraSpec,
) -> Result<(CameraRecord, u64), RegistryError> {
    transact(c, limits.camera_keys.as_ref(), |snap| {
        if snap.cameras.contains_key(&spec.id) || snap.unreadable.contains_key(&spec.id) {
            return Err(RegistryError::Conflict(format!(
                "camera {} already exists (use PUT /v1/cameras/{} to change it)",
                spec.id, spec.id
            )));
        }
        let (plan, _) = plan_apply(snap, std::slice::from_ref(spec), false, None, limits)?;
        let rec = plan_result(&plan, &spec.id)?;
        Ok((plan, rec))
    })
}

/// Replaces one existing camera; 404 when it does not exist.
pub fn update(
    c: &mut Connection,
    limits: &Limits,
    spec: &CameraSpec,
) -> Result<(CameraRecord, u64), RegistryError> {
    transact(c, limits.camera_keys.as_ref(), |snap| {
        let old = snap.cameras.get(&spec.id);
        if old.is_none() && !snap.unreadable.contains_key(&spec.id) {
            return Err(unknown_camera(&spec.id));
        }
        let (plan, _) = plan_apply(snap, std::slice::from_ref(spec), false, None, limits)?;
        let rec = match (plan.put.iter().find(|r| r.id == spec.id), old) {
            (Some(r), _) => r.clone(),
            (None, Some(old)) => old.clone(),
            (None, None) => plan_result(&plan, &spec.id)?,
        };
        Ok((plan, rec))
    })
}

/// Deletes one camera; 404 when it does not exist.
pub fn delete(c: &mut Connection, id: &str) -> Result<u64, RegistryError> {
    let ((), version) = transact(c, None, |snap| {
        if !snap.cameras.contains_key(id) && !snap.unreadable.contains_key(id) {
            return Err(unknown_camera(id));
        }
        Ok((
            Plan {
                put: vec![],
                delete: vec![id.to_string()],
            },
            (),
        ))
    })?;
    Ok(version)
}

/// The 404 for a camera id.
pub fn unknown_camera(id: &str) -> RegistryError {
    RegistryError::NotFound(format!("unknown camera {id:?}"))
}

fn plan_result(plan: &Plan, id: &str) -> Result<CameraRecord, RegistryError> {
    plan.put
        .iter()
        .find(|r| r.id == id)
        .cloned()
        .ok_or_else(|| RegistryError::Internal(format!("camera {id} missing from its own plan")))
}

/// Moves every stored camera password to the keyring's primary key (key rotation) and
/// seals passwords stored in clear by older versions, in one transaction; returns the ids
/// resealed. Records the keyring cannot open are left as they are (logged). Idempotent:
/// nothing is written when every record is already sealed under the primary key.
pub fn reseal(c: &mut Connection, keys: &Keyring) -> Result<Vec<String>, RegistryError> {
    let ids: Vec<String> = read(c)?
        .cameras
        .values()
        .filter(|r| r.needs_reseal(keys))
        .map(|r| r.id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(ids);
    }
    let (done, _) = transact(c, Some(keys), |snap| {
        let put: Vec<CameraRecord> = ids
            .iter()
            .filter_map(|id| snap.cameras.get(id))
            .filter(|r| r.password.is_none())
            .cloned()
            .collect();
        let done = put.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        Ok((
            Plan {
                put,
                delete: vec![],
            },
            done,
        ))
    })?;
    Ok(done)
}

/// Runs [`reseal`] once on its own thread (at start, when a keyring is configured):
/// retries every 2 s while Redis is unreachable, gives up on any other error (logged).
pub fn spawn_reseal(link: RedisLink, keys: Keyring) {
    let spawned = std::thread::Builder::new()
        .name("reseal".into())
        .spawn(move || {
            for _ in 0..30 {
                let result = link
                    .connect(Duration::from_secs(3))
                    .map_err(RegistryError::from)
                    .and_then(|mut c| reseal(&mut c, &keys));
                match result {
                    Ok(ids) if ids.is_empty() => return,
                    Ok(ids) => {
                        tracing::info!(cameras = ?ids, primary = keys.primary_id(), "camera passwords resealed under the primary key");
                        return;
                    }
                    Err(RegistryError::Unavailable(e)) => {
                        tracing::debug!(error = %e, "reseal: Redis unavailable; retrying");
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reseal of camera passwords failed");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the reseal thread");
    }
}

/// A small pool of synchronous Redis connections for blocking tasks.
pub struct Pool {
    redis: panoptes_runtime::config::RedisClientConfig,
    link: parking_lot::Mutex<Option<RedisLink>>,
    timeout: Duration,
    idle: parking_lot::Mutex<Vec<Connection>>,
}

impl Pool {
    /// A pool for `redis` (the coordinator's Redis settings: URL, TLS, ACL user; or a bare
    /// URL); connections are opened on demand.
    pub fn new(
        redis: impl Into<panoptes_runtime::config::RedisClientConfig>,
        timeout: Duration,
    ) -> Self {
        Self {
            redis: redis.into(),
            link: parking_lot::Mutex::new(None),
            timeout,
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    fn connect(&self) -> Result<Connection, RegistryError> {
        let mut link = self.link.lock();
        if link.is_none() {
            *link = Some(RedisLink::open(&self.redis)?);
        }
        Ok(link.as_ref().expect("opened above").connect(self.timeout)?)
    }

    /// Runs `f` on a pooled connection (blocking: call from `spawn_blocking`). A connection
    /// whose call failed is dropped rather than reused.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let conn = self.idle.lock().pop();
        let mut conn = match conn {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&mut conn);
        if matches!(
            out,
            Ok(_)
                | Err(RegistryError::NotFound(_)
                    | RegistryError::Conflict(_)
                    | RegistryError::Invalid(_)
                    | RegistryError::BadRequest(_))
        ) {
            let mut idle = self.idle.lock();
            if idle.len() < 8 {
                idle.push(conn);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            frames_partitions: 4,
            regions: vec!["eu".into(), "us".into()],
            camera_keys: None,
        }
    }

    fn spec(id: &str) -> CameraSpec {
        CameraSpec {
            id: id.into(),
            url: format!("rtsp://u:pw@cam/{id}"),
            region: "eu".into(),
            ..Default::default()
        }
    }

    fn snap(recs: &[CameraRecord]) -> Snapshot {
        Snapshot {
            cameras: recs.iter().map(|r| (r.id.clone(), r.clone())).collect(),
            unreadable: BTreeMap::new(),
            version: 3,
        }
    }

    #[test]
    fn defaults_and_allocation() {
        let (plan, sum) = plan_apply(
            &Snapshot::default(),
            &[spec("a"), spec("b")],
            true,
            None,
            &limits(),
        )
        .unwrap();
        assert_eq!(sum.added, vec!["a", "b"]);
        assert_eq!(plan.put[0].partition, 0);
        assert_eq!(plan.put[1].partition, 1);
        assert_eq!(
            (plan.put[0].fps, plan.put[0].width, plan.put[0].height),
            (5, 640, 360)
        );
        assert_eq!(plan.put[0].group, "default");
    }

    #[test]
    fn rejects_bad_fields() {
        let l = limits();
        let bad = [
            CameraSpec {
                fps: Some(0),
                ..spec("a")
            },
            CameraSpec {
                fps: Some(61),
                ..spec("a")
            },
            CameraSpec {
                region: "mars".into(),
                ..spec("a")
            },
            CameraSpec {
                url: "http://u:pw@h/x".into(),
                ..spec("a")
            },
            CameraSpec {
                url: "rtspt://h/x".into(),
                ..spec("a")
            },
            CameraSpec {
                url: "not a url".into(),
                ..spec("a")
            },
            CameraSpec {
                id: "-x".into(),
                ..spec("a")
            },
            CameraSpec {
                partition: Some(4),
                ..spec("a")
            },
            CameraSpec {
                width: Some(10_000),
                ..spec("a")
            },
            CameraSpec {
                group: Some("a b".into()),
                ..spec("a")
            },
        ];
        for s in bad {
            let e = validate(&s, None, &l).unwrap_err();
            assert!(matches!(e, RegistryError::Invalid(_)), "{s:?}: {e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn redacted_password_keeps_the_stored_one() {
        let l = limits();
        let old = validate(&spec("a"), None, &l).unwrap();
        let back = CameraSpec {
            url: "rtsp://u:***@cam/a".into(),
            ..spec("a")
        };
        assert_eq!(
            validate(&back, Some(&old), &l).unwrap().url,
            "rtsp://u:pw@cam/a"
        );
        let moved = CameraSpec {
            url: "rtsp://u:***@other/a".into(),
            ..spec("a")
        };
        assert!(validate(&moved, Some(&old), &l).is_err());
    }

    #[test]
    fn conflicts() {
        let l = limits();
        let mut a = validate(&spec("a"), None, &l).unwrap();
        a.partition = 2;
        let s = snap(&[a]);
        // Two cameras in the file on one partition.
        let e = plan_apply(
            &s,
            &[
                CameraSpec {
                    partition: Some(1),
                    ..spec("x")
                },
                CameraSpec {
                    partition: Some(1),
                    ..spec("y")
                },
            ],
            true,
            None,
            &l,
        )
        .unwrap_err();
        assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
        // A partition held by a camera not in the file.
        let e = plan_apply(
            &s,
            &[CameraSpec {
                partition: Some(2),
                ..spec("x")
            }],
            true,
            None,
            &l,
        )
        .unwrap_err();
        assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
        // Stale version, duplicate ids.
        let e = plan_apply(&s, &[], true, Some(2), &l).unwrap_err();
        assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
        let e = plan_apply(&s, &[spec("x"), spec("x")], true, None, &l).unwrap_err();
        assert!(matches!(e, RegistryError::Invalid(_)), "{e}");
        // Full.
        let specs: Vec<_> = ["p", "q", "r", "s"].iter().map(|i| spec(i)).collect();
        let e = plan_apply(&s, &specs, false, None, &l).unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::NoFreePartition {
                    have: 4,
                    need: 5,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn views_never_show_passwords() {
        let r = validate(&spec("a"), None, &limits()).unwrap();
        let v = CameraView::from(&r);
        assert_eq!(v.url, "rtsp://u:***@cam/a");
    }
}
