//! Redis key names. Every key starts with `panoptes:`; `docs/coordination-keys.md` is the
//! reference and lists who writes each one.

use crate::records::MemberKind;

/// The leader lease: a string holding the leader's coordinator id, with a TTL.
pub const LEADER: &str = "panoptes:leader";
/// The fencing token: an integer increased by every election. Every coordinator write
/// checks it atomically against the token the writer got when it was elected.
pub const FENCE: &str = "panoptes:fence";
/// Hash describing the current leader (`id`, `token`, `http`, `since_ms`, `tick_ms`).
pub const LEADER_INFO: &str = "panoptes:leader:info";
/// Hash region name → [`crate::RegionRecord`] JSON (bootstrap servers of its Kafka).
pub const REGIONS: &str = "panoptes:regions";
/// Hash camera id → [`crate::CameraRecord`] JSON: the camera registry (operator intent).
pub const CAMERAS: &str = "panoptes:cameras";
/// Integer bumped by every registry change (optimistic concurrency for `apply`).
pub const CAMERAS_VERSION: &str = "panoptes:cameras:version";
/// Integer: the partition count every region's frames topic was grown to by a coordinator
/// (absent until the first growth; only ever raised). Camera partitions are allocated below
/// the larger of it and the coordinators' `frames_partitions`.
pub const FRAMES_PARTITIONS: &str = "panoptes:frames:partitions";
/// Hash worker group → JSON `{"desired_replicas", "load", "capacity", "workers"}`, written by
/// the leader every round it changes (what an autoscaler reads, besides the metric).
pub const GROUPS: &str = "panoptes:groups";
/// Channel the coordinator listens on: members publish here after a release.
pub const NOTIFY_COORDINATOR: &str = "panoptes:notify:coordinator";

/// Set of member ids of one kind (an index; a member is alive only while its record exists).
pub fn members(kind: MemberKind) -> String {
    format!("panoptes:members:{kind}")
}

/// A member's record: a hash with a TTL, renewed by the member (its lease).
pub fn member(kind: MemberKind, id: &str) -> String {
    format!("panoptes:member:{kind}:{id}")
}

/// Operator drain flag of a member (string "1", no TTL).
pub fn drain(kind: MemberKind, id: &str) -> String {
    format!("panoptes:drain:{kind}:{id}")
}

/// Set of item ids assigned to a member (an index kept by the coordinator's scripts).
pub fn owned(kind: MemberKind, id: &str) -> String {
    format!("panoptes:owned:{kind}:{id}")
}

/// Hash of a member's releases: item id → `<epoch>` or `<epoch>:<next seq>` (written by the
/// member's release script, which first checks that the assignment record names it at that
/// epoch; read by the leader, which treats the record as released at that epoch; an entry
/// is removed by the next grant of the item). The member's own key, so that members never
/// write assignment records (the ACL gives them no write access to any).
pub fn released(kind: MemberKind, id: &str) -> String {
    format!("panoptes:released:{kind}:{id}")
}

/// Pub/sub channel a member subscribes to; the coordinator publishes after changing it.
pub fn notify(kind: MemberKind, id: &str) -> String {
    format!("panoptes:notify:{kind}:{id}")
}

/// Rollout record of a worker group: a string holding [`panoptes_schemas::model::ModelRollout`]
/// JSON, written by the coordinator only (operator API, canary verdicts).
pub fn rollout(group: &str) -> String {
    format!("panoptes:rollout:{group}")
}

/// Channel the coordinator publishes on after each write of [`rollout`]`(group)`.
pub fn rollout_notify(group: &str) -> String {
    format!("panoptes:notify:rollout:{group}")
}

/// Workers' figures for the canary of `group` that started at record generation `since`: a
/// hash, field = worker id, value = [`panoptes_schemas::model::CanaryReport`] JSON. Written
/// by the workers every second while the canary runs; expires [`CANARY_REPORT_TTL_S`] after
/// the last write.
pub fn canary_report(group: &str, since: u64) -> String {
    format!("panoptes:canary:{group}:{since}")
}

/// Lifetime of a [`canary_report`] hash after its last write, seconds.
pub const CANARY_REPORT_TTL_S: u64 = 3600;

/// Item id of a frames partition living in `cluster`'s Kafka: `<cluster>:<partition>`.
pub fn partition_item(cluster: &str, partition: i32) -> String {
    format!("{cluster}:{partition}")
}

/// Splits a partition item id into `(cluster, partition)`.
pub fn parse_partition_item(item: &str) -> Option<(&str, i32)> {
    let (c, p) = item.rsplit_once(':')?;
    Some((c, p.parse().ok()?))
}

/// Assignment record of a frames partition (hash, see [`crate::AssignRecord`]).
pub fn partition_assign(cluster: &str, frames_topic: &str, partition: i32) -> String {
    format!("panoptes:assign:{cluster}:{frames_topic}:{partition}")
}

/// Epoch counter of a frames partition, shared by its copies in every cluster, so epochs of
/// one camera's partition only grow, wherever its frames are routed.
pub fn partition_epoch(frames_topic: &str, partition: i32) -> String {
    format!("panoptes:epoch:{frames_topic}:{partition}")
}

/// Assignment record of a camera (hash, see [`crate::AssignRecord`]).
pub fn camera_assign(camera: &str) -> String {
    format!("panoptes:camassign:{camera}")
}

/// Epoch counter of a camera's assignment.
pub fn camera_epoch(camera: &str) -> String {
    format!("panoptes:camepoch:{camera}")
}

/// The assignment key of an item of `kind` (partition items for workers, camera ids for
/// ingest nodes).
pub fn assign_of(kind: MemberKind, frames_topic: &str, item: &str) -> Option<String> {
    match kind {
        MemberKind::Ingest => Some(camera_assign(item)),
        MemberKind::Worker => {
            parse_partition_item(item).map(|(c, p)| partition_assign(c, frames_topic, p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_items_round_trip() {
        let item = partition_item("eu-west", 7);
        assert_eq!(item, "eu-west:7");
        assert_eq!(parse_partition_item(&item), Some(("eu-west", 7)));
        assert_eq!(parse_partition_item("nope"), None);
        assert_eq!(
            assign_of(MemberKind::Worker, "panoptes.frames", &item).as_deref(),
            Some("panoptes:assign:eu-west:panoptes.frames:7")
        );
    }
}
