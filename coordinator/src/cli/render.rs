//! The human forms of the operator API's answers: plain text tables, columns padded to
//! their widest cell, `-` for what is unknown or empty.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::api::{
    CameraList, CameraStatus, GroupView, LeaderView, NodeView, PartitionStatus, StatusView,
};
use crate::cost::GroupCost;
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
        &[
            "ID",
            "REGION",
            "GROUP",
            "PARTITION",
            "FPS",
            "SIZE",
            "LABELS",
            "URL",
        ],
        cams,
        |c| {
            vec![
                c.id.clone(),
                c.region.clone(),
                c.group.clone(),
                c.partition.to_string(),
                c.fps.to_string(),
                format!("{}x{}", c.width, c.height),
                or_dash(&crate::registry::labels::display(&c.labels)),
                c.url.clone(),
            ]
        },
    )
}

/// Nodes, one row each.
pub(crate) fn nodes_table(nodes: &[NodeView]) -> String {
    table_of(
        &[
            "KIND", "ID", "ALIVE", "STATE", "DRAIN", "REGION", "GROUP", "CLASS", "LOAD/CAP",
            "ITEMS", "BROKER",
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
                or_dash(&n.node_class),
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
    let _ = writeln!(out, "registry version: {}", s.registry_version);
    let growth = match s.frames_partitions_max {
        0 => "fixed".to_string(),
        m => format!("the coordinator grows it up to {m}"),
    };
    let _ = writeln!(
        out,
        "frames partitions: {} ({growth})\n",
        s.frames_partitions
    );
    for (title, table) in [
        ("NODES", nodes_table(&s.nodes)),
        ("GROUPS", groups_table(&s.groups) + &cost_note(&s.groups)),
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
            "PACKING",
            "COST/H",
            "COST/CAM-H",
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
                cost_cell(g, |c| c.packing, 2),
                cost_cell(g, |c| c.per_hour, 3),
                cost_cell(g, |c| c.per_camera_hour, 4),
            ]
        },
    )
}

/// A figure of the group's cost, `-` when unknown.
fn cost_cell(g: &GroupView, f: impl Fn(&GroupCost) -> Option<f64>, decimals: usize) -> String {
    g.cost
        .as_ref()
        .and_then(f)
        .map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

/// What the cost columns cannot say: no prices configured, or classes without a price.
fn cost_note(groups: &[GroupView]) -> String {
    let costs: Vec<(&str, &GroupCost)> = groups
        .iter()
        .filter_map(|g| g.cost.as_ref().map(|c| (g.group.as_str(), c)))
        .collect();
    if costs.is_empty() {
        return String::new();
    }
    if costs.iter().all(|(_, c)| !c.priced) {
        return "cost: no prices configured (coordinator [cost] price_per_hour): no cost figures\n"
            .into();
    }
    let mut out = String::new();
    for (g, c) in costs.iter().filter(|(_, c)| !c.unpriced.is_empty()) {
        let classes: Vec<&str> = c.unpriced.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "cost: group {g}: no price for node class {} (cost unknown)",
            classes.join(", ")
        );
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, cost: GroupCost) -> GroupView {
        GroupView {
            group: name.into(),
            cost: Some(cost),
            ..Default::default()
        }
    }

    #[test]
    fn cost_columns_and_what_they_cannot_say() {
        let priced = GroupCost {
            priced: true,
            cameras: 3,
            workers: 1,
            packing: Some(0.6),
            per_hour: Some(2.75),
            per_camera_hour: Some(2.75 / 3.0),
            ..Default::default()
        };
        let groups = vec![group("a", priced.clone())];
        let t = groups_table(&groups);
        assert!(
            t.contains("0.60") && t.contains("2.750") && t.contains("0.9167"),
            "{t}"
        );
        assert_eq!(cost_note(&groups), "");
        let unpriced = GroupCost {
            per_hour: None,
            per_camera_hour: None,
            unpriced: ["cuda".to_string()].into_iter().collect(),
            ..priced
        };
        let note = cost_note(&[group("b", unpriced)]);
        assert!(
            note.contains("group b: no price for node class cuda"),
            "{note}"
        );
        let none = GroupCost {
            packing: Some(0.5),
            ..Default::default()
        };
        let note = cost_note(&[group("c", none)]);
        assert!(note.contains("no prices configured"), "{note}");
        assert_eq!(
            cost_note(&[GroupView::default()]),
            "",
            "no leader figures yet"
        );
    }
}
