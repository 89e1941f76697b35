//! Growing the frames topic: when a camera needs a partition and every partition of the
//! frames topic is taken, the coordinator adds partitions to the topic in every region
//! (Kafka's `CreatePartitions`), up to `[frames_growth] max_partitions`, then allocates.
//!
//! Contract:
//! - **Off by default** (`max_partitions = 0`): a full topic answers 409 with what to do
//!   (remove a camera, grow the topic by hand and raise `frames_partitions`, or turn growth
//!   on). At the maximum, the 409 names it.
//! - **Every region or none counts**: the topic is grown to the count a write needs in each
//!   region in turn; only when every region has it is the count recorded in Redis
//!   ([`keys::FRAMES_PARTITIONS`], raised with a compare in Lua, never lowered). A region that
//!   fails leaves the write refused (503, retryable) with the region and Kafka's reason; the
//!   retry finds the regions already grown answering `INVALID_PARTITIONS` ("already has at
//!   least that many"), which counts as done, so growth is idempotent.
//! - **One count for every coordinator**: allocation reads `max(frames_partitions, recorded)`
//!   ([`current`]) on every registry write, so coordinators never disagree about which
//!   partitions exist; a count recorded by another coordinator is picked up on its next write.
//! - Nodes follow on their own: a grant names the partition; ingest producers and worker
//!   consumers refresh the topic's metadata when they meet a partition they do not know yet.
//! - Growth is rare and slow (a Kafka admin round trip per region), so an admin client is
//!   made for each growth and dropped after; nothing is held open between growths.
//! - Kafka cannot remove partitions: a grown topic stays grown after its cameras go.

use std::time::Duration;

use panoptes_coordinator_client::keys;
use panoptes_runtime::config::KafkaClientConfig;
use panoptes_runtime::config::kafka::KafkaConfigError;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use redis::Connection;
use serde::{Deserialize, Serialize};

/// `[frames_growth]`: may the coordinator grow the frames topic, how far, and how it reaches
/// the regions' Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FramesGrowthConfig {
    /// Most partitions the frames topic may be grown to; 0 (default): never grown.
    pub max_partitions: i32,
    /// How long one region's `CreatePartitions` may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The Kafka connection every region shares (`security_protocol`, `[tls]`, `[sasl]`,
    /// `properties`); each region's own `bootstrap_servers` replaces the one here.
    pub kafka: GrowthKafka,
}

impl Default for FramesGrowthConfig {
    fn default() -> Self {
        Self {
            max_partitions: 0,
            timeout: Duration::from_secs(10),
            kafka: GrowthKafka::default(),
        }
    }
}

/// `[frames_growth.kafka]`: the connection keys of every node's `[kafka]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrowthKafka {
    /// Connection and security settings.
    #[serde(flatten)]
    pub client: KafkaClientConfig,
}

/// Why the frames topic was not grown.
#[derive(Debug, thiserror::Error)]
pub enum GrowthError {
    /// Growth is off, or the topic is at its maximum: the operator must act (fatal for
    /// this write).
    #[error("{0}")]
    NotAllowed(String),
    /// A region's Kafka refused or did not answer (retryable: nothing was recorded).
    #[error(
        "growing the frames topic {topic} to {need} partitions failed in region {region}: {reason}. \
         Nothing was recorded; retry, or check [frames_growth.kafka] and that the coordinator may Alter the topic \
         (or grow it by hand with kafka-topics --alter --partitions {need} and raise frames_partitions)"
    )]
    Kafka {
        /// The frames topic.
        topic: String,
        /// The region whose Kafka failed.
        region: String,
        /// The count asked for.
        need: i32,
        /// Kafka's reason.
        reason: String,
    },
    /// The connection settings are unusable (fatal: fix the configuration).
    #[error("[frames_growth.kafka]: {0}")]
    Config(#[from] KafkaConfigError),
}

impl GrowthError {
    /// Whether retrying the same write may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, GrowthError::Kafka { .. })
    }
}

/// What growth needs: the topic, the bound, and each region's Kafka.
#[derive(Debug, Clone)]
pub struct FramesGrowth {
    topic: String,
    configured: i32,
    cfg: FramesGrowthConfig,
    /// (region name, bootstrap servers).
    regions: Vec<(String, String)>,
}

impl FramesGrowth {
    /// Growth for the coordinator's frames topic and regions.
    pub fn new(
        topic: &str,
        configured: i32,
        cfg: &FramesGrowthConfig,
        regions: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Self {
            topic: topic.to_string(),
            configured,
            cfg: cfg.clone(),
            regions: regions.into_iter().collect(),
        }
    }

    /// Growth that never happens: a full topic answers 409 with what to do.
    pub fn off(topic: &str, configured: i32) -> Self {
        Self::new(topic, configured, &FramesGrowthConfig::default(), [])
    }

    /// The most partitions the topic may have (0: growth off).
    pub fn max_partitions(&self) -> i32 {
        self.cfg.max_partitions
    }

    /// Whether growing from `have` to `need` partitions is allowed; the refusal says what
    /// the operator can do.
    pub fn check(&self, have: i32, need: i32) -> Result<(), GrowthError> {
        let max = self.cfg.max_partitions;
        if max <= 0 {
            return Err(GrowthError::NotAllowed(format!(
                "all {have} partitions of the frames topic {} are taken (one camera per partition). \
                 Remove a camera; or grow the topic in every region (kafka-topics --alter --partitions {need}) \
                 and raise the coordinators' frames_partitions to {need}; or let the coordinator grow it \
                 ([frames_growth] max_partitions)",
                self.topic
            )));
        }
        if need > max {
            return Err(GrowthError::NotAllowed(format!(
                "the frames topic {} would need {need} partitions, over its maximum of {max} \
                 ([frames_growth] max_partitions; it has {have}). Remove a camera or raise max_partitions",
                self.topic
            )));
        }
        Ok(())
    }

    /// Grows the topic to at least `need` partitions in every region. Call
    /// [`FramesGrowth::check`] first, and [`record`] the count after.
    pub async fn grow(&self, need: i32) -> Result<(), GrowthError> {
        for (region, bootstrap) in &self.regions {
            self.grow_region(region, bootstrap, need).await?;
        }
        Ok(())
    }

    async fn grow_region(
        &self,
        region: &str,
        bootstrap: &str,
        need: i32,
    ) -> Result<(), GrowthError> {
        let kafka = KafkaClientConfig {
            bootstrap_servers: bootstrap.to_string(),
            ..self.cfg.kafka.client.clone()
        };
        let mut client: ClientConfig = kafka.connection_properties()?.into_iter().collect();
        client.extend(kafka.override_properties());
        let failed = |reason: String| GrowthError::Kafka {
            topic: self.topic.clone(),
            region: region.to_string(),
            need,
            reason,
        };
        let admin: AdminClient<DefaultClientContext> =
            client.create().map_err(|e| failed(e.to_string()))?;
        let opts = AdminOptions::new()
            .request_timeout(Some(self.cfg.timeout))
            .operation_timeout(Some(self.cfg.timeout));
        let ask = NewPartitions::new(&self.topic, usize::try_from(need).unwrap_or(0));
        let answer = tokio::time::timeout(
            self.cfg.timeout + Duration::from_secs(1),
            admin.create_partitions(&[ask], &opts),
        )
        .await
        .map_err(|_| failed(format!("no answer within {:?}", self.cfg.timeout)))?
        .map_err(|e| failed(e.to_string()))?;
        for result in answer {
            match result {
                Ok(_) => {
                    tracing::info!(region, topic = %self.topic, partitions = need, "frames topic grown")
                }
                // Kafka: the topic already has at least that many (grown by an earlier try
                // or another coordinator).
                Err((_, RDKafkaErrorCode::InvalidPartitions)) => {
                    tracing::info!(region, topic = %self.topic, partitions = need, "frames topic already grown");
                }
                Err((_, code)) => return Err(failed(format!("{code:?} ({code})"))),
            }
        }
        Ok(())
    }

    /// The partition count allocation uses now: the configured one, or the recorded count
    /// when a coordinator grew the topic past it.
    pub fn current(&self, c: &mut Connection) -> redis::RedisResult<i32> {
        current(c, self.configured)
    }
}

/// The partition count allocation uses: `max(configured, recorded)`.
pub fn current(c: &mut Connection, configured: i32) -> redis::RedisResult<i32> {
    let recorded: Option<i32> = redis::cmd("GET").arg(keys::FRAMES_PARTITIONS).query(c)?;
    Ok(recorded.map_or(configured, |r| r.max(configured)))
}

/// The partition count for restoring the registry after Redis lost it, and the recorded
/// count with it: the restored cameras' partitions existed, so the count the highest of them
/// (`highest`) needs is recorded again, up to `[frames_growth] max_partitions`.
pub fn restored(
    c: &mut Connection,
    cfg: &crate::config::CoordinatorConfig,
    highest: Option<i32>,
) -> redis::RedisResult<i32> {
    let needed = highest.map_or(0, |p| p.saturating_add(1));
    let now = current(c, cfg.frames_partitions)?;
    if needed > now && needed <= cfg.frames_growth.max_partitions {
        return record(c, needed);
    }
    Ok(now)
}

/// Records that every region's frames topic has `count` partitions (raises, never lowers);
/// returns the recorded count.
pub fn record(c: &mut Connection, count: i32) -> redis::RedisResult<i32> {
    redis::cmd("EVAL")
        .arg(
            "local n = tonumber(redis.call('GET', KEYS[1]) or '0') \
             local want = tonumber(ARGV[1]) \
             if want > n then redis.call('SET', KEYS[1], want) n = want end \
             return n",
        )
        .arg(1)
        .arg(keys::FRAMES_PARTITIONS)
        .arg(count)
        .query(c)
}
