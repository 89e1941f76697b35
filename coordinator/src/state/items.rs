//! The items the planner places, built from a snapshot: every camera with an assignment
//! record, and the frames-partition copies that matter (the current cluster's, carrying the
//! camera's load, and every copy granted before). Linear in the records: cameras are
//! indexed by partition once.

use std::collections::BTreeMap;

use panoptes_coordinator_client::{CameraRecord, keys};

use super::Snapshot;
use crate::placement::Item;

/// Every camera with an assignment record, as the planner sees it: registered cameras are
/// active, orphans (assigned but no longer registered) are to be released.
pub fn camera_items(snap: &Snapshot) -> Vec<Item> {
    snap.camera_assign
        .iter()
        .map(|(id, rec)| {
            let cam = snap.cameras.get(id);
            Item {
                id: id.clone(),
                region: cam.map(|c| c.region.clone()).unwrap_or_default(),
                group: None,
                load: cam.map_or(0.0, |c| c.load()),
                active: cam.is_some(),
                record: rec.clone(),
            }
        })
        .collect()
}

/// The partition copies the planner places: the copy in the region whose Kafka the
/// camera's ingest node currently publishes to (carrying the camera's load), and every copy
/// granted before (carrying no load).
pub fn partition_items(snap: &Snapshot) -> Vec<Item> {
    let mut items = Vec::new();
    // The first camera (by id) of each partition, as a scan of the registry would find.
    let mut by_partition: BTreeMap<i32, &CameraRecord> = BTreeMap::new();
    for c in snap.cameras.values() {
        by_partition.entry(c.partition).or_insert(c);
    }
    for (id, rec) in &snap.partition_assign {
        let Some((cluster, p)) = keys::parse_partition_item(id) else {
            continue;
        };
        let cam = by_partition.get(&p).copied();
        let current = cam.and_then(|c| {
            snap.camera_assign
                .get(&c.id)
                .filter(|a| !a.owner.is_empty())
                .and_then(|a| a.cluster.clone())
        });
        let is_current = current.as_deref() == Some(cluster);
        let used_before = rec.epoch > 0;
        if !is_current && !used_before {
            continue;
        }
        items.push(Item {
            id: id.clone(),
            region: cluster.to_string(),
            group: Some(
                cam.map(|c| c.group.clone())
                    .unwrap_or_else(panoptes_coordinator_client::records::default_group),
            ),
            load: if is_current {
                cam.map_or(0.0, |c| c.load())
            } else {
                0.0
            },
            active: cam.is_some(),
            record: rec.clone(),
        });
    }
    items
}
