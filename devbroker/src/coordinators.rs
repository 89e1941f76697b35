//! Where the group and transaction coordinators live, and where they move when a broker
//! goes down: the pure bookkeeping behind the control API's `/coordinators` (no I/O here;
//! [`crate::cluster`] applies the moves to the mock).
//!
//! Kafka keeps a coordinator on a live broker: the coordinator of a consumer group or a
//! transactional id is the leader of one partition of `__consumer_offsets` or
//! `__transaction_state`, and when that broker dies the leadership, hence the coordinator,
//! moves to a live replica. librdkafka's mock never moves one by itself: it hashes the key
//! onto a broker (`crc32(key) % broker_count`, brokers in id order) and answers with that
//! broker whether it is up or not, so a client whose coordinator is down waits for it
//! however long it is away. The mock can pin a key's coordinator
//! (`rd_kafka_mock_coordinator_set`), but it needs the key, and it does not say which keys
//! clients used. So keys are registered (`POST /coordinators`); a registered key starts on
//! its home broker, the one the mock's hash gives it (nothing changes for clients already
//! using it), moves to the next live broker (in id order, wrapping) when its broker goes
//! down, and moves back home when that broker returns: Kafka's preferred-leader election
//! (`auto.leader.rebalance.enable`), which Kafka runs every few minutes, done at once here.
//! Keys that were never registered keep the mock's behaviour.
//!
//! Contract: [`Coordinators::moves_for`] never places a key on a broker that is down while
//! one is up; with every broker down it leaves keys where they are;
//! [`Coordinators::moves_home`] moves a key only onto its home broker, and only when that
//! is up. At most [`MAX_KEYS`] keys of at most [`MAX_KEY_LEN`] bytes each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most keys the table holds (bounded memory whatever the control API is sent).
pub const MAX_KEYS: usize = 4096;
/// Longest key accepted, in bytes (Kafka's own limit for a transactional id is larger, but
/// nothing here needs more).
pub const MAX_KEY_LEN: usize = 512;

/// The two kinds of coordinator a Kafka client looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordinatorKind {
    /// A consumer group's coordinator (offsets, membership).
    Group,
    /// A transactional id's coordinator.
    Transaction,
}

impl CoordinatorKind {
    /// The mock's name for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            CoordinatorKind::Group => "group",
            CoordinatorKind::Transaction => "transaction",
        }
    }
}

/// One registered key and the broker coordinating it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Group or transaction.
    pub kind: CoordinatorKind,
    /// The group id or transactional id.
    pub key: String,
    /// The coordinating broker's id.
    pub broker: i32,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// An empty key, or one longer than [`MAX_KEY_LEN`] bytes.
    #[error("coordinator key must be 1..={MAX_KEY_LEN} bytes, got {0}")]
    BadKey(usize),
    /// The table would hold more than [`MAX_KEYS`] keys.
    #[error("at most {MAX_KEYS} coordinator keys can be registered")]
    TooMany,
}

/// The registered keys and where each is coordinated.
#[derive(Debug, Default)]
pub struct Coordinators {
    placed: BTreeMap<(CoordinatorKind, String), i32>,
}

impl Coordinators {
    /// The broker librdkafka's mock hashes `key` onto, with brokers `1..=broker_count`.
    pub fn hashed(key: &str, broker_count: i32) -> i32 {
        let n = u32::try_from(broker_count.max(1)).unwrap_or(1);
        // Below `broker_count`, so it fits an i32.
        (crc32(key.as_bytes()) % n) as i32 + 1
    }

    /// Checks the new keys of `keys` against the bounds; returns those not registered yet
    /// (deduplicated, in order).
    pub fn new_keys(
        &self,
        kind: CoordinatorKind,
        keys: &[String],
    ) -> Result<Vec<String>, RegisterError> {
        let mut fresh: Vec<String> = Vec::new();
        for k in keys {
            if k.is_empty() || k.len() > MAX_KEY_LEN {
                return Err(RegisterError::BadKey(k.len()));
            }
            if !self.placed.contains_key(&(kind, k.clone())) && !fresh.contains(k) {
                fresh.push(k.clone());
            }
        }
        if self.placed.len() + fresh.len() > MAX_KEYS {
            return Err(RegisterError::TooMany);
        }
        Ok(fresh)
    }

    /// Records that `key` is coordinated by `broker`.
    pub fn place(&mut self, kind: CoordinatorKind, key: String, broker: i32) {
        self.placed.insert((kind, key), broker);
    }

    /// Every registered key with its broker, sorted by kind and key.
    pub fn list(&self) -> Vec<Placement> {
        self.placed
            .iter()
            .map(|((kind, key), &broker)| Placement {
                kind: *kind,
                key: key.clone(),
                broker,
            })
            .collect()
    }

    /// The moves that put every registered key on a live broker, given which brokers are
    /// up (`up[i]` is broker `i + 1`): a key on a down broker goes to the next live broker
    /// after it in id order (wrapping), so the keys of one broker spread no further than
    /// needed and a key never moves while its broker is up. Empty when every broker is
    /// down (nowhere to go) or nothing is on a down broker.
    pub fn moves_for(&self, up: &[bool]) -> Vec<Placement> {
        if !up.iter().any(|&u| u) {
            return Vec::new();
        }
        let is_up = |id: i32| {
            usize::try_from(id - 1)
                .ok()
                .and_then(|i| up.get(i))
                .copied()
                .unwrap_or(false)
        };
        let n = i32::try_from(up.len()).unwrap_or(i32::MAX);
        self.placed
            .iter()
            .filter(|&(_, &b)| !is_up(b))
            .filter_map(|((kind, key), &b)| {
                let next = (1..=n)
                    .map(|d| (b - 1 + d).rem_euclid(n) + 1)
                    .find(|&id| is_up(id))?;
                Some(Placement {
                    kind: *kind,
                    key: key.clone(),
                    broker: next,
                })
            })
            .collect()
    }
}

impl Coordinators {
    /// The moves that bring every registered key back to its home broker (where the mock's
    /// hash puts it, `broker_count` brokers) if that broker is up: Kafka's preferred-leader
    /// election, done at once when a broker returns.
    pub fn moves_home(&self, up: &[bool]) -> Vec<Placement> {
        let n = i32::try_from(up.len()).unwrap_or(i32::MAX);
        self.placed
            .iter()
            .filter_map(|((kind, key), &b)| {
                let home = Self::hashed(key, n);
                let home_up = usize::try_from(home - 1)
                    .ok()
                    .and_then(|i| up.get(i))
                    .copied()
                    .unwrap_or(false);
                (home != b && home_up).then(|| Placement {
                    kind: *kind,
                    key: key.clone(),
                    broker: home,
                })
            })
            .collect()
    }
}

/// CRC-32 (IEEE, reflected, as zlib's `crc32`), which librdkafka's `rd_crc32` computes.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_zlib() {
        // zlib.crc32(b"123456789") == 0xCBF43926, the check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn hashing_follows_the_mock() {
        // Values computed with zlib: crc32 % 3 + 1.
        assert_eq!(Coordinators::hashed("panoptes-workers", 3), 1);
        assert_eq!(
            Coordinators::hashed("panoptes-worker.panoptes.frames.4", 3),
            3
        );
        assert_eq!(Coordinators::hashed("anything", 1), 1);
    }

    fn table(keys: &[(&str, i32)]) -> Coordinators {
        let mut c = Coordinators::default();
        for (k, b) in keys {
            c.place(CoordinatorKind::Transaction, (*k).into(), *b);
        }
        c
    }

    #[test]
    fn keys_of_a_down_broker_move_to_the_next_live_one() {
        let c = table(&[("a", 1), ("b", 2), ("c", 3)]);
        let moves = c.moves_for(&[false, true, true]);
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].key.as_str(), moves[0].broker), ("a", 2));
        let moves = c.moves_for(&[true, true, false]);
        assert_eq!((moves[0].key.as_str(), moves[0].broker), ("c", 1), "wraps");
        let moves = c.moves_for(&[false, false, true]);
        let got: Vec<_> = moves.iter().map(|m| (m.key.as_str(), m.broker)).collect();
        assert_eq!(got, [("a", 3), ("b", 3)]);
    }

    #[test]
    fn keys_go_home_when_their_broker_is_back() {
        // "panoptes-workers" hashes onto broker 1 of 3.
        let mut c = Coordinators::default();
        c.place(CoordinatorKind::Group, "panoptes-workers".into(), 2);
        assert!(
            c.moves_home(&[false, true, true]).is_empty(),
            "home is down"
        );
        let m = c.moves_home(&[true, true, true]);
        assert_eq!((m.len(), m[0].broker), (1, 1));
        c.place(CoordinatorKind::Group, "panoptes-workers".into(), 1);
        assert!(c.moves_home(&[true, true, true]).is_empty(), "already home");
    }

    #[test]
    fn nothing_moves_while_brokers_are_up_or_all_are_down() {
        let c = table(&[("a", 1), ("b", 2)]);
        assert!(c.moves_for(&[true, true]).is_empty());
        assert!(c.moves_for(&[false, false]).is_empty());
    }

    #[test]
    fn registration_is_bounded_and_deduplicated() {
        let mut c = Coordinators::default();
        let k = |s: &str| s.to_string();
        let fresh = c
            .new_keys(CoordinatorKind::Group, &[k("g"), k("g"), k("h")])
            .unwrap();
        assert_eq!(fresh, [k("g"), k("h")]);
        c.place(CoordinatorKind::Group, k("g"), 1);
        let fresh = c.new_keys(CoordinatorKind::Group, &[k("g")]).unwrap();
        assert!(fresh.is_empty());
        let fresh = c.new_keys(CoordinatorKind::Transaction, &[k("g")]).unwrap();
        assert_eq!(fresh, [k("g")], "kinds are separate");
        assert_eq!(
            c.new_keys(CoordinatorKind::Group, &[k("")]),
            Err(RegisterError::BadKey(0))
        );
        let long = "x".repeat(MAX_KEY_LEN + 1);
        assert!(c.new_keys(CoordinatorKind::Group, &[long]).is_err());
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| i.to_string()).collect();
        assert_eq!(
            c.new_keys(CoordinatorKind::Group, &many),
            Err(RegisterError::TooMany)
        );
    }
}
