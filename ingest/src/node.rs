//! The set of cameras a node pulls, changeable at run time.
//!
//! [`IngestNode::apply`] takes the desired list of cameras (from the config file, or from
//! the coordinator's grants in coordinator mode) and starts, restarts or stops camera
//! threads to match, without touching the cameras that did not change. A camera whose
//! settings change keeps its sequence numbers going, so downstream order checks hold
//! across the change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::camera::{CameraContext, CameraHandle, CameraStatus};
use crate::config::CameraSpec;

type Cameras = Arc<Mutex<BTreeMap<String, CameraHandle>>>;

/// The running cameras of this node.
pub struct IngestNode {
    ctx: Arc<CameraContext>,
    cameras: Cameras,
    cancel: CancellationToken,
}

impl IngestNode {
    /// An empty node; cameras are children of `cancel`.
    pub fn new(ctx: Arc<CameraContext>, cancel: CancellationToken) -> Self {
        Self {
            ctx,
            cameras: Arc::default(),
            cancel,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CameraHandle>> {
        self.cameras.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `spec`, or restarts the camera with that id if its settings changed.
    /// Blocking (a restart waits for the old pipeline's teardown): call off the async runtime.
    pub fn upsert(&self, mut spec: CameraSpec) -> std::io::Result<()> {
        let mut cams = self.lock();
        if let Some(old) = cams.get(&spec.id) {
            let mut old_spec = old.spec.clone();
            old_spec.start_seq = spec.start_seq;
            if old_spec == spec {
                return Ok(());
            }
            let old = cams.remove(&spec.id).expect("present");
            tracing::info!(camera = %spec.id, "camera settings changed: restarting");
            // The old thread must be gone before its successor takes over the sequence,
            // or both could publish the same number. Blocks for the RTSP teardown.
            let status = old.stop_and_join();
            spec.start_seq = spec.start_seq.max(status.next_seq);
        }
        let handle =
            CameraHandle::spawn(spec.clone(), self.ctx.clone(), self.cancel.child_token())?;
        cams.insert(spec.id, handle);
        self.ctx.metrics.cameras.set(cams.len() as i64);
        Ok(())
    }

    /// Caps camera `id`'s sampling rate without restarting it (`None`: its fps); false when
    /// it does not run here.
    pub fn set_rate_cap(&self, id: &str, cap: Option<u32>) -> bool {
        self.lock().get(id).map(|h| h.set_rate_cap(cap)).is_some()
    }

    /// Stops and forgets camera `id`; its metric series go once its thread has ended.
    pub fn remove(&self, id: &str) -> bool {
        let mut cams = self.lock();
        let Some(handle) = cams.remove(id) else {
            return false;
        };
        self.ctx.metrics.cameras.set(cams.len() as i64);
        drop(cams);
        handle.cancel();
        let (cameras, ctx, id) = (self.cameras.clone(), self.ctx.clone(), id.to_string());
        std::thread::spawn(move || {
            handle.stop_and_join();
            // A camera re-added meanwhile owns the series now.
            if !cameras
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&id)
            {
                ctx.metrics.remove_camera(&id);
                ctx.publisher.forget(&id);
            }
        });
        true
    }

    /// Stops camera `id`, waits for its thread (so it publishes nothing more) and forgets
    /// it; returns its final status (with the next sequence number), `None` if it did not
    /// run here. Its metric series go. Blocking: call off the async runtime.
    pub fn stop(&self, id: &str) -> Option<CameraStatus> {
        let handle = {
            let mut cams = self.lock();
            let h = cams.remove(id)?;
            self.ctx.metrics.cameras.set(cams.len() as i64);
            h
        };
        let status = handle.stop_and_join();
        if !self.lock().contains_key(id) {
            self.ctx.metrics.remove_camera(id);
        }
        Some(status)
    }

    /// Stops several cameras at once (their teardowns overlap) and returns their final
    /// statuses; ids not running here are skipped. Blocking.
    pub fn stop_many(&self, ids: &[String]) -> Vec<CameraStatus> {
        let handles: Vec<CameraHandle> = {
            let mut cams = self.lock();
            let hs = ids.iter().filter_map(|id| cams.remove(id)).collect();
            self.ctx.metrics.cameras.set(cams.len() as i64);
            hs
        };
        for h in &handles {
            h.cancel();
        }
        let statuses: Vec<CameraStatus> = handles
            .into_iter()
            .map(CameraHandle::stop_and_join)
            .collect();
        let cams = self.lock();
        for s in &statuses {
            if !cams.contains_key(&s.id) {
                self.ctx.metrics.remove_camera(&s.id);
            }
        }
        statuses
    }

    /// Ids of the running cameras.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The spec a camera runs with.
    pub fn spec(&self, id: &str) -> Option<CameraSpec> {
        self.lock().get(id).map(|h| h.spec.clone())
    }

    /// Makes the running cameras match `desired`. Blocking, like [`IngestNode::upsert`].
    pub fn apply(&self, desired: Vec<CameraSpec>) -> std::io::Result<()> {
        let wanted: Vec<String> = desired.iter().map(|s| s.id.clone()).collect();
        let current: Vec<String> = self.lock().keys().cloned().collect();
        for id in current.iter().filter(|id| !wanted.contains(id)) {
            self.remove(id);
        }
        for spec in desired {
            self.upsert(spec)?;
        }
        Ok(())
    }

    /// Status of every camera, by id.
    pub fn statuses(&self) -> Vec<CameraStatus> {
        self.lock().values().map(CameraHandle::status).collect()
    }

    /// Status of one camera.
    pub fn status(&self, id: &str) -> Option<CameraStatus> {
        self.lock().get(id).map(CameraHandle::status)
    }

    /// Stops every camera and waits for their threads (blocking); returns their final
    /// statuses.
    pub fn shutdown(&self) -> Vec<CameraStatus> {
        let cams: Vec<CameraHandle> = std::mem::take(&mut *self.lock()).into_values().collect();
        for c in &cams {
            c.cancel();
        }
        let statuses = cams.into_iter().map(CameraHandle::stop_and_join).collect();
        self.ctx.metrics.cameras.set(0);
        statuses
    }
}
