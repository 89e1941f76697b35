//! The coordinator's side of the protocol, played by hand: a test takes a fencing token and
//! writes camera records, grants and retargets with the protocol crate's own Lua scripts,
//! exactly as the leader would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use panoptes_coordinator_client::{
    AssignRecord, CameraRecord, MemberKind, MemberRecord, keys, scripts,
};
use panoptes_testkit::wait_until;

/// A hand-played leader holding a fencing token.
pub struct Leader {
    conn: redis::Connection,
    /// Its fencing token.
    pub token: u64,
}

impl Leader {
    /// Connects and takes a fresh fencing token (`INCR panoptes:fence`).
    pub fn new(redis_url: &str) -> Result<Self> {
        let mut conn = panoptes_coordinator_client::connect(redis_url, Duration::from_secs(2))?;
        let token: u64 = redis::cmd("INCR").arg(keys::FENCE).query(&mut conn)?;
        Ok(Self { conn, token })
    }

    /// Registers (or replaces) a camera in the registry.
    pub fn register(&mut self, camera: &CameraRecord) -> Result<()> {
        redis::cmd("HSET")
            .arg(keys::CAMERAS)
            .arg(&camera.id)
            .arg(serde_json::to_string(camera)?)
            .query::<()>(&mut self.conn)?;
        redis::cmd("INCR")
            .arg(keys::CAMERAS_VERSION)
            .query::<()>(&mut self.conn)?;
        Ok(())
    }

    /// Grants `camera` to ingest node `node` in `cluster`, starting at `start_seq`.
    pub fn grant(
        &mut self,
        camera: &str,
        node: &str,
        cluster: &str,
        start_seq: u64,
    ) -> Result<u64> {
        Ok(scripts::grant(
            &mut self.conn,
            self.token,
            MemberKind::Ingest,
            &keys::camera_assign(camera),
            &keys::camera_epoch(camera),
            camera,
            node,
            &[
                ("cluster", cluster.to_string()),
                ("start_seq", start_seq.to_string()),
            ],
        )?)
    }

    /// Asks `owner` (holding `camera` at `epoch`) to hand it over to `target`.
    pub fn retarget(
        &mut self,
        camera: &str,
        owner: &str,
        epoch: u64,
        target: &str,
    ) -> Result<bool> {
        Ok(scripts::retarget(
            &mut self.conn,
            self.token,
            MemberKind::Ingest,
            &keys::camera_assign(camera),
            owner,
            epoch,
            target,
        )?)
    }

    /// Retargets `camera` (held by `owner` at `epoch`) to `target` and waits (≤ 10 s) for the
    /// owner's release; returns the released record and how long the handover took.
    pub fn hand_over(
        &mut self,
        camera: &str,
        owner: &str,
        epoch: u64,
        target: &str,
    ) -> Result<(AssignRecord, Duration)> {
        let asked = Instant::now();
        ensure!(
            self.retarget(camera, owner, epoch, target)?,
            "retarget of {camera} refused"
        );
        let what = format!("{owner} releases {camera}");
        let released = wait_until(&what, Duration::from_secs(10), || {
            let r = self.assignment(camera).ok()?;
            (r.released == Some(epoch)).then_some(r)
        })?;
        Ok((released, asked.elapsed()))
    }

    /// The camera's assignment record, with its owner's release applied (as the leader
    /// reads it: members record releases in their own key).
    pub fn assignment(&mut self, camera: &str) -> Result<AssignRecord> {
        Ok(scripts::read_assignment(
            &mut self.conn,
            MemberKind::Ingest,
            &keys::camera_assign(camera),
            camera,
        )?)
    }

    /// An ingest member's record, `None` once its lease expired or it left.
    pub fn member(&mut self, node: &str) -> Result<Option<MemberRecord>> {
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::member(MemberKind::Ingest, node))
            .query(&mut self.conn)?;
        Ok(MemberRecord::from_fields(&h))
    }

    /// Waits (≤ 20 s) until ingest node `node` has registered.
    pub fn wait_registered(&mut self, node: &str) -> Result<()> {
        wait_until("registered", Duration::from_secs(20), || {
            self.member(node).ok()?.map(|_| ())
        })
    }

    /// Everything stored under `panoptes:*` (for leak checks), as text.
    pub fn dump(&mut self) -> Result<String> {
        let keys: Vec<String> = redis::cmd("KEYS").arg("panoptes:*").query(&mut self.conn)?;
        let mut out = String::new();
        for k in keys {
            if k == keys::CAMERAS {
                continue; // the registry (passwords sealed when written by a coordinator)
            }
            let t: String = redis::cmd("TYPE").arg(&k).query(&mut self.conn)?;
            let v = match t.as_str() {
                "hash" => format!(
                    "{:?}",
                    redis::cmd("HGETALL")
                        .arg(&k)
                        .query::<BTreeMap<String, String>>(&mut self.conn)?
                ),
                "string" => redis::cmd("GET").arg(&k).query::<String>(&mut self.conn)?,
                "set" => format!(
                    "{:?}",
                    redis::cmd("SMEMBERS")
                        .arg(&k)
                        .query::<Vec<String>>(&mut self.conn)?
                ),
                _ => String::new(),
            };
            out.push_str(&format!("{k} = {v}\n"));
        }
        Ok(out)
    }
}
