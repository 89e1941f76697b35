//! The human forms of the operator API's answers: plain text tables, columns padded to
//! their widest cell, `-` for what is unknown or empty.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::api::{
    CameraList, CameraStatus, GroupView, LeaderView, NodeView, PartitionStatus, StatusView,
};
use crate::registry::{ApplySummary, CameraView};

/// The human form of `POST /v1/apply`.
pub(crate) fn apply_summary(s: &ApplySummary) -> String {
    let mut out = String::new();
    for (what, ids) in [
        ("added", &s.added),
        ("updated", &s.updated),
        ("removed", &s.removed),
    ] {
        if !ids.is_empty() {
            let _ = writeln!(out, "{what}: {}", ids.join(", "));
        }
    }
    let _ = writeln!(
        out,
        "{} added, {} updated, {} removed, {} unchanged; registry version {}",
        s.added.len(),
        s.updated.len(),
        s.removed.len(),
        s.unchanged.len(),
        s.version
    );
    out
}

/// Plain text table: columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// [`table`] with a row of cells for each of `items`.
fn table_of<T>(headers: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(headers, &rows)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn cameras_table(cams: &[CameraView]) -> String {
    table_of(
        &["ID", "REGION", "GROUP", "PARTITION", "FPS", "SIZE", "URL"],
        cams,
        |c| {
            vec![
                c.id.clone(),
                c.region.clone(),
                c.group.clone(),
                c.partition.to_string(),
                c.fps.to_string(),
                format!("{}x{}", c.width, c.height),
                c.url.clone(),
            ]
        },
    )
}

/// Nodes, one row each.
pub(crate) fn nodes_table(nodes: &[NodeView]) -> String {
    table_of(
        &[
            "KIND", "ID", "ALIVE", "STATE", "DRAIN", "REGION", "GROUP", "LOAD/CAP", "ITEMS",
            "BROKER",
        ],
        nodes,
        |n| {
            vec![
                n.kind.to_string(),
                n.id.clone(),
                if n.alive { "yes" } else { "no" }.into(),
                or_dash(&n.state),
                if n.drain { "yes" } else { "-" }.into(),
                or_dash(&n.region),
                or_dash(&n.group),
                format!("{:.1}/{:.1}", n.load, n.capacity),
                n.owned.to_string(),
                if n.alive && !n.broker_ok { "DOWN" } else { "-" }.into(),
            ]
        },
    )
}

/// The human form of `GET /v1/cameras`.
pub(crate) fn camera_list_text(list: &CameraList) -> String {
    let mut out = cameras_table(&list.cameras);
    if !list.unreadable.is_empty() {
        let _ = writeln!(
            out,
            "unreadable records: {} (replace them with apply, or remove them with cameras rm)",
            list.unreadable.join(", ")
        );
    }
    let _ = writeln!(out, "registry version {}", list.version);
    out
}

/// The human form of `GET /v1/status`: the leader, then one table per section.
pub fn status_text(s: &StatusView) -> String {
    let mut out = leader_line(s.leader.as_ref());
    let _ = writeln!(out, "registry version: {}\n", s.registry_version);
    for (title, table) in [
        ("NODES", nodes_table(&s.nodes)),
        ("GROUPS", groups_table(&s.groups)),
        ("CAMERAS", camera_status_table(&s.cameras)),
        ("PARTITIONS", partitions_table(&s.partitions)),
    ] {
        if title != "NODES" {
            out.push('\n');
        }
        let _ = writeln!(out, "{title}");
        out.push_str(&table);
    }
    out
}

fn leader_line(leader: Option<&LeaderView>) -> String {
    let Some(l) = leader else {
        return "leader: none\n".into();
    };
    format!(
        "leader: {} ({}) term {}{}\n",
        l.id,
        or_dash(&l.http),
        l.token,
        if l.holds_lease {
            ""
        } else {
            " [lease expired: election pending]"
        }
    )
}

fn groups_table(groups: &[GroupView]) -> String {
    table_of(
        &[
            "GROUP",
            "WORKERS",
            "DESIRED",
            "LOAD",
            "CAPACITY",
            "CAMERA-LOAD",
            "DEMAND",
            "DEGRADED",
        ],
        groups,
        |g| {
            vec![
                g.group.clone(),
                g.workers.to_string(),
                opt(g.desired_replicas),
                format!("{:.1}", g.load),
                format!("{:.1}", g.capacity),
                format!("{:.1}", g.camera_load),
                g.demand.map_or_else(|| "-".into(), |d| format!("{d:.1}")),
                format!(
                    "{}{}",
                    g.degraded.len(),
                    if g.saturated { " SATURATED" } else { "" }
                ),
            ]
        },
    )
}

fn camera_status_table(cameras: &[CameraStatus]) -> String {
    table_of(
        &[
            "ID",
            "REGION",
            "PARTITION",
            "OWNER",
            "CLUSTER",
            "EPOCH",
            "FPS",
            "PRIO",
            "CAP",
            "STATE",
            "MOVING-TO",
        ],
        cameras,
        |c| {
            vec![
                c.id.clone(),
                c.region.clone(),
                c.partition.to_string(),
                or_dash(&c.owner),
                opt(c.cluster.clone()),
                c.epoch.to_string(),
                format!(
                    "{}/{}",
                    c.fps.map_or_else(|| "-".into(), |f| format!("{f:.1}")),
                    c.fps_target
                ),
                c.priority.to_string(),
                opt(c.fps_cap),
                opt(c.state.clone()),
                opt(c.target.clone()),
            ]
        },
    )
}

fn partitions_table(partitions: &[PartitionStatus]) -> String {
    table_of(
        &["PARTITION", "OWNER", "EPOCH", "LAG", "MOVING-TO", "CAMERAS"],
        partitions,
        |p| {
            vec![
                keys_item(&p.cluster, p.partition),
                or_dash(&p.owner),
                p.epoch.to_string(),
                opt(p.lag),
                opt(p.target.clone()),
                if p.cameras.is_empty() {
                    "-".into()
                } else {
                    p.cameras.join(",")
                },
            ]
        },
    )
}

fn keys_item(cluster: &str, partition: i32) -> String {
    panoptes_coordinator_client::keys::partition_item(cluster, partition)
}

/// The human form of `GET /v1/audit`: one row per entry, newest first. Entries are taken as
/// JSON so that an unreadable one still gets a row.
pub(crate) fn audit_table(entries: &[Value]) -> String {
    let text = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .map_or_else(|| "-".into(), str::to_owned)
    };
    table_of(
        &[
            "TIME",
            "WHO",
            "ROLE",
            "OPERATION",
            "TARGET",
            "VERSION",
            "OUTCOME",
        ],
        entries,
        |e| {
            let time = e.get("time_ms").and_then(Value::as_u64).map_or_else(
                || "-".into(),
                |ms| {
                    let t = UNIX_EPOCH + Duration::from_millis(ms);
                    humantime_serde::re::humantime::format_rfc3339_seconds(t).to_string()
                },
            );
            let version = match (
                e.get("version_before").and_then(Value::as_u64),
                e.get("version_after").and_then(Value::as_u64),
            ) {
                (Some(b), Some(a)) if a != b => format!("{b}->{a}"),
                (_, Some(a)) => a.to_string(),
                _ => "-".into(),
            };
            let outcome = if e.get("unreadable").is_some() {
                "unreadable".into()
            } else {
                text(e, "outcome")
            };
            vec![
                time,
                text(e, "who"),
                text(e, "role"),
                text(e, "op"),
                text(e, "target"),
                version,
                outcome,
            ]
        },
    )
}
