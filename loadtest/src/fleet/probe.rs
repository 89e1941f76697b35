//! What the fleet benchmark reads while it runs: the coordinators' `/metrics` text (the
//! round histogram, the round's Redis command counter, process CPU and memory), Redis
//! `INFO`, and whether every camera and its partition are granted to a live member. The
//! parsers are pure and unit-tested; the readers are thin.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use panoptes_coordinator_client::keys;
use redis::Connection;

/// The cumulative buckets (`le`, count) of histogram `name` in a Prometheus text
/// exposition, in increasing `le` order (`+Inf` last).
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket counts of `after` minus those of `before` (same buckets), for a window.
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let old = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - old)
        })
        .collect()
}

/// Quantile `q` of cumulative buckets, interpolated linearly inside the bucket it falls in
/// (as Prometheus' `histogram_quantile`); the last finite bound when it falls in `+Inf`.
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let inside = n - prev.1;
            let frac = if inside > 0.0 {
                (rank - prev.1) / inside
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, n);
    }
    Some(prev.0)
}

/// Field `name` of a Redis `INFO` reply, as a number.
pub fn info_field(info: &str, name: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Redis `INFO` (all sections).
pub fn redis_info(c: &mut Connection) -> Result<String> {
    Ok(redis::cmd("INFO").arg("all").query(c)?)
}

/// One camera as the probe needs it.
#[derive(Debug, Clone)]
pub struct CameraItem {
    /// Camera id.
    pub id: String,
    /// Its frames partition.
    pub partition: i32,
}

/// How many cameras, and cameras' current partitions, a live member holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Cameras granted to a live ingest member.
    pub cameras: usize,
    /// Cameras whose partition, in the cluster their frames go to, is granted to a live
    /// worker.
    pub partitions: usize,
}

/// Reads every camera's assignment, then the partition copy in its cluster, and counts
/// those whose owner is in `live`.
pub fn coverage(
    c: &mut Connection,
    frames_topic: &str,
    cameras: &[CameraItem],
    live: &BTreeSet<String>,
) -> Result<Coverage> {
    let mut pipe = redis::pipe();
    for cam in cameras {
        pipe.cmd("HMGET")
            .arg(keys::camera_assign(&cam.id))
            .arg("owner")
            .arg("cluster");
    }
    let rows: Vec<(Option<String>, Option<String>)> = pipe.query(c)?;
    let mut cov = Coverage::default();
    let mut pipe = redis::pipe();
    let mut asked = 0;
    for (cam, (owner, cluster)) in cameras.iter().zip(rows) {
        if owner.as_ref().is_some_and(|o| live.contains(o)) {
            cov.cameras += 1;
        }
        if let Some(cl) = cluster.filter(|c| !c.is_empty()) {
            pipe.hget(
                keys::partition_assign(&cl, frames_topic, cam.partition),
                "owner",
            );
            asked += 1;
        }
    }
    if asked > 0 {
        let owners: Vec<Option<String>> = pipe.query(c)?;
        cov.partitions = owners
            .iter()
            .filter(|o| o.as_ref().is_some_and(|o| live.contains(o)))
            .count();
    }
    Ok(cov)
}

/// The owner of each partition item (`<cluster>:<partition>`) in `items`.
pub fn partition_owners(
    c: &mut Connection,
    frames_topic: &str,
    items: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut pipe = redis::pipe();
    let mut asked = Vec::new();
    for item in items {
        if let Some((cl, p)) = keys::parse_partition_item(item) {
            pipe.hget(keys::partition_assign(cl, frames_topic, p), "owner");
            asked.push(item.clone());
        }
    }
    if asked.is_empty() {
        return Ok(BTreeMap::new());
    }
    let owners: Vec<Option<String>> = pipe.query(c)?;
    Ok(asked
        .into_iter()
        .zip(owners)
        .map(|(i, o)| (i, o.unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\n\
        panoptes_coordinator_round_seconds_bucket{le=\"0.001\"} 10\n\
        panoptes_coordinator_round_seconds_bucket{le=\"0.002\"} 90\n\
        panoptes_coordinator_round_seconds_bucket{le=\"+Inf\"} 100\n\
        panoptes_coordinator_round_seconds_sum 0.2\n\
        panoptes_coordinator_round_seconds_count 100\n";

    #[test]
    fn histogram_quantiles_interpolate_inside_buckets() {
        let b = histogram_buckets(TEXT, "panoptes_coordinator_round_seconds");
        assert_eq!(
            b,
            vec![(0.001, 10.0), (0.002, 90.0), (f64::INFINITY, 100.0)]
        );
        let p50 = histogram_quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.0015).abs() < 1e-9, "{p50}");
        assert_eq!(histogram_quantile(&b, 0.99), Some(0.002));
        assert_eq!(histogram_quantile(&[], 0.5), None);
        let d = bucket_delta(&b, &b);
        assert_eq!(histogram_quantile(&d, 0.5), None);
        let earlier = [(0.001, 10.0), (0.002, 10.0), (f64::INFINITY, 10.0)];
        let d = bucket_delta(&earlier, &b);
        assert_eq!(d[1], (0.002, 80.0));
    }

    #[test]
    fn info_fields_parse() {
        let info =
            "# Memory\r\nused_memory:1234\r\nused_memory_human:1.2K\r\nused_cpu_sys:1.50\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1234.0));
        assert_eq!(info_field(info, "used_cpu_sys"), Some(1.5));
        assert_eq!(info_field(info, "missing"), None);
    }
}
