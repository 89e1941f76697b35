//! Growable topics: Kafka's `CreatePartitions` on a development broker whose mock cannot
//! change a topic's partition count.
//!
//! On with `--grow` (or `--growable NAME:MAX`): the fronts then relay with these rewrites,
//! and topics are made growable at start (`--growable`) or by the control API
//! (`POST /topics` with `max_partitions`).
//!
//! librdkafka's mock has no `CreatePartitions` handler and no way to add partitions to an
//! existing topic (decision 82). A growable topic (`--growable NAME:MAX`) is therefore
//! created in the mock with its *maximum* partition count, and the fronts show clients only
//! the first `visible` partitions (the count it was created with), as if the topic had that
//! many:
//! - **Metadata** responses (v0–v12, the versions the fronts advertise) list only the
//!   visible partitions of a growable topic; other topics and every other field pass
//!   unchanged.
//! - **CreatePartitions** (v0–v3, added to the fronts' `ApiVersions` answers) is answered by
//!   the front itself with Kafka's codes: the topic's visible count rises to the asked count
//!   (never falls); `INVALID_PARTITIONS` (37) when the count is not above the current one,
//!   as Kafka answers; `POLICY_VIOLATION` (44) above the topic's maximum, with a message
//!   naming it; `UNKNOWN_TOPIC_OR_PARTITION` (3) for a topic that is not growable (the mock
//!   cannot grow it); `validate_only` checks without changing. Manual replica assignments
//!   are ignored (the mock places replicas). The mock receives an `ApiVersions` request with
//!   the same correlation id in its place, so responses keep their order on the connection.
//!
//! What it does not prove: the hidden partitions exist from the start, so a client that
//! addresses one without having seen it in metadata (Produce, Fetch, ListOffsets) is served
//! instead of refused. Panoptes's clients only address partitions they were granted, and a
//! grant follows growth.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::wire::{Reader, WireError, Writer};

/// `Metadata`.
pub const API_METADATA: i16 = 3;
/// `CreatePartitions`.
pub const API_CREATE_PARTITIONS: i16 = 37;
/// Metadata versions whose response layout [`Growth::rewrite_metadata`] knows; the fronts
/// advertise no higher one when a topic is growable.
pub const METADATA_VERSIONS: (i16, i16) = (0, 12);
/// CreatePartitions versions the fronts answer.
pub const CREATE_PARTITIONS_VERSIONS: (i16, i16) = (0, 3);

const ERR_UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ERR_INVALID_PARTITIONS: i16 = 37;
const ERR_POLICY_VIOLATION: i16 = 44;

/// One growable topic's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Partitions clients see.
    pub visible: i32,
    /// Partitions the mock holds: the most the topic can grow to.
    pub max: i32,
}

/// The growable topics of a cluster, shared by its fronts and its control API.
#[derive(Debug, Default)]
pub struct Growth {
    topics: Mutex<BTreeMap<String, Counts>>,
    served: AtomicBool,
}

/// One topic's answer to a `CreatePartitions` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAnswer {
    /// Kafka error code (0: done).
    pub error: i16,
    /// Why, for an error.
    pub message: Option<String>,
}

impl Growth {
    /// The topics (a poisoned lock still holds consistent counts: each change is one store).
    fn topics(&self) -> MutexGuard<'_, BTreeMap<String, Counts>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `name` as growable from `visible` up to `max` partitions.
    pub fn add(&self, name: &str, visible: i32, max: i32) {
        self.topics()
            .insert(name.to_string(), Counts { visible, max });
    }

    /// Marks that the fronts serve growth (`--grow`): topics may be made growable.
    pub fn serve(&self) {
        self.served.store(true, Ordering::Release);
    }

    /// Whether the fronts serve growth.
    pub fn is_served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }

    /// A growable topic's counts.
    pub fn counts(&self, name: &str) -> Option<Counts> {
        self.topics().get(name).copied()
    }

    /// Grows `name` to `count` partitions (only checks with `validate_only`).
    pub fn grow(&self, name: &str, count: i32, validate_only: bool) -> TopicAnswer {
        let mut topics = self.topics();
        let Some(t) = topics.get_mut(name) else {
            return answer(
                ERR_UNKNOWN_TOPIC_OR_PARTITION,
                format!(
                    "topic {name} is not growable on this development broker (start it with --growable {name}:MAX)"
                ),
            );
        };
        if count <= t.visible {
            return answer(
                ERR_INVALID_PARTITIONS,
                format!(
                    "Topic currently has {} partitions, which is higher than or equal to the requested {count}.",
                    t.visible
                ),
            );
        }
        if count > t.max {
            return answer(
                ERR_POLICY_VIOLATION,
                format!(
                    "topic {name} can grow to at most {} partitions on this development broker (--growable {name}:{})",
                    t.max, t.max
                ),
            );
        }
        if !validate_only {
            tracing::info!(
                topic = name,
                from = t.visible,
                to = count,
                "partitions created"
            );
            t.visible = count;
        }
        TopicAnswer {
            error: 0,
            message: None,
        }
    }

    /// Answers a `CreatePartitions` request frame (versions in
    /// [`CREATE_PARTITIONS_VERSIONS`]); `None` for anything else.
    pub fn answer_create_partitions(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let (h, mut r) = super::wire::request_header(frame).ok()?;
        let (min, max) = CREATE_PARTITIONS_VERSIONS;
        if h.api_key != API_CREATE_PARTITIONS || !(min..=max).contains(&h.api_version) {
            return None;
        }
        let flex = h.api_version >= 2;
        let request = parse_create_partitions(&mut r, flex).ok()?;
        let mut w = Writer::response(h.correlation_id);
        if flex {
            w = w.uvarint(0);
        }
        w = array_len(w.i32(0), flex, request.topics.len());
        for (name, count) in &request.topics {
            let a = self.grow(name, *count, request.validate_only);
            w = string(w, flex, Some(name)).i16(a.error);
            w = string(w, flex, a.message.as_deref());
            if flex {
                w = w.uvarint(0);
            }
        }
        if flex {
            w = w.uvarint(0);
        }
        Some(w.finish())
    }

    /// A Metadata response of request version `version` with the hidden partitions of the
    /// growable topics left out, and a real controller: the mock names broker 0, which does
    /// not exist, so an admin client would wait for it forever (the first listed broker is
    /// named instead). `None` when nothing changes, or for a version or layout not
    /// understood (the caller then forwards the response as it is).
    pub fn rewrite_metadata(&self, response: &[u8], version: i16) -> Option<Vec<u8>> {
        if !(METADATA_VERSIONS.0..=METADATA_VERSIONS.1).contains(&version) {
            return None;
        }
        rewrite(response, version, |name| {
            self.counts(name).map(|c| c.visible)
        })
        .ok()
        .flatten()
    }
}

fn answer(error: i16, message: String) -> TopicAnswer {
    TopicAnswer {
        error,
        message: Some(message),
    }
}

/// What the front reads of a `CreatePartitions` request.
struct CreatePartitions {
    topics: Vec<(String, i32)>,
    validate_only: bool,
}

fn parse_create_partitions(r: &mut Reader<'_>, flex: bool) -> Result<CreatePartitions, WireError> {
    if flex {
        r.tagged_fields("request header tags")?;
    }
    let n = r.count(flex, "topics")?;
    let mut topics = Vec::new();
    for _ in 0..n {
        let name = r
            .nullable_string_in(flex, "topic name")?
            .ok_or(WireError::Malformed("topic"))?;
        let count = r.i32("count")?;
        // Assignments: a nullable array of broker-id arrays.
        for _ in 0..r.count(flex, "assignments")? {
            skip_i32s(r, flex)?;
            if flex {
                r.tagged_fields("assignment tags")?;
            }
        }
        if flex {
            r.tagged_fields("topic tags")?;
        }
        topics.push((String::from_utf8_lossy(name).into_owned(), count));
    }
    r.i32("timeout")?;
    let validate_only = r.take_bytes(1, "validate only")?[0] != 0;
    Ok(CreatePartitions {
        topics,
        validate_only,
    })
}

/// The Metadata rewrite: copies `response` leaving out, for each topic `visible` names, the
/// partitions at or past its visible count.
fn rewrite(
    response: &[u8],
    version: i16,
    visible: impl Fn(&str) -> Option<i32>,
) -> Result<Option<Vec<u8>>, WireError> {
    let flex = version >= 9;
    let mut r = Reader::new(response);
    r.i32("correlation id")?;
    if flex {
        r.tagged_fields("response header tags")?;
    }
    if version >= 3 {
        r.i32("throttle")?;
    }
    let mut nodes = Vec::new();
    for _ in 0..r.count(flex, "brokers")? as usize {
        nodes.push(r.i32("node id")?);
        r.nullable_string_in(flex, "host")?;
        r.i32("port")?;
        if version >= 1 {
            r.nullable_string_in(flex, "rack")?;
        }
        if flex {
            r.tagged_fields("broker tags")?;
        }
    }
    if version >= 2 {
        r.nullable_string_in(flex, "cluster id")?;
    }
    let mut out = Writer::empty().raw(&response[..r.position()]);
    let mut changed = false;
    if version >= 1 {
        let controller = r.i32("controller id")?;
        let real = match nodes.first() {
            Some(&first) if !nodes.contains(&controller) => {
                changed = true;
                first
            }
            _ => controller,
        };
        out = out.i32(real);
    }
    let topics = r.count(flex, "topics")? as usize;
    out = array_len(out, flex, topics);
    for _ in 0..topics {
        let start = r.position();
        r.i16("topic error")?;
        let name = r.nullable_string_in(flex, "topic name")?;
        if version >= 10 {
            r.take_bytes(16, "topic id")?;
        }
        if version >= 1 {
            r.take_bytes(1, "is internal")?;
        }
        let head = &response[start..r.position()];
        let limit = name.and_then(|n| visible(&String::from_utf8_lossy(n)));
        let mut kept: Vec<&[u8]> = Vec::new();
        let partitions = r.count(flex, "partitions")? as usize;
        for _ in 0..partitions {
            let p_start = r.position();
            r.i16("partition error")?;
            let index = r.i32("partition index")?;
            r.i32("leader")?;
            if version >= 7 {
                r.i32("leader epoch")?;
            }
            skip_i32s(&mut r, flex)?;
            skip_i32s(&mut r, flex)?;
            if version >= 5 {
                skip_i32s(&mut r, flex)?;
            }
            if flex {
                r.tagged_fields("partition tags")?;
            }
            if limit.is_none_or(|l| index < l) {
                kept.push(&response[p_start..r.position()]);
            }
        }
        let tail_start = r.position();
        if version >= 8 {
            r.i32("topic authorized operations")?;
        }
        if flex {
            r.tagged_fields("topic tags")?;
        }
        changed |= kept.len() != partitions;
        out = array_len(out.raw(head), flex, kept.len());
        for p in kept {
            out = out.raw(p);
        }
        out = out.raw(&response[tail_start..r.position()]);
    }
    if !changed {
        return Ok(None);
    }
    Ok(Some(out.raw(r.rest()).finish()))
}

fn skip_i32s(r: &mut Reader<'_>, flex: bool) -> Result<(), WireError> {
    let n = r.count(flex, "int32 array")? as usize;
    r.take_bytes(
        n.checked_mul(4)
            .ok_or(WireError::Malformed("int32 array"))?,
        "int32 array",
    )?;
    Ok(())
}

fn array_len(w: Writer, flex: bool, n: usize) -> Writer {
    if flex {
        w.uvarint(n as u32 + 1)
    } else {
        w.i32(n as i32)
    }
}

fn string(w: Writer, flex: bool, s: Option<&str>) -> Writer {
    match (flex, s) {
        (false, s) => w.nullable_string(s),
        (true, None) => w.uvarint(0),
        (true, Some(s)) => w.uvarint(s.len() as u32 + 1).raw(s.as_bytes()),
    }
}

#[cfg(test)]
mod tests;
