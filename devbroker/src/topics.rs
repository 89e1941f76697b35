//! Topic specifications and their validation (Kafka's naming rules, partition limits).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Smallest partition count accepted for a topic.
pub const MIN_PARTITIONS: i32 = 1;
/// Largest partition count accepted for a topic.
pub const MAX_PARTITIONS: i32 = 1024;
/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Camera frames.
pub const FRAMES: &str = "panoptes.frames";
/// Detections published by the workers.
pub const DETECTIONS: &str = "panoptes.detections";
/// Detections of a shadow (candidate) model.
pub const DETECTIONS_SHADOW: &str = "panoptes.detections.shadow";
/// Dead-letter queue for frames that could not be processed.
pub const FRAMES_DLQ: &str = "panoptes.frames.dlq";
/// Partition count of [`FRAMES_DLQ`].
pub const FRAMES_DLQ_PARTITIONS: i32 = 4;

/// A topic to create: name and partition count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
}

/// Why a topic specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicSpecError {
    /// The name breaks Kafka's rules.
    #[error("invalid topic name {0:?}: use 1 to 249 of [a-zA-Z0-9._-], and not \".\" or \"..\"")]
    BadName(String),
    /// The partition count is outside the accepted range.
    #[error("invalid partition count {0}: must be within {MIN_PARTITIONS}..={MAX_PARTITIONS}")]
    BadPartitions(i64),
    /// The `NAME:PARTITIONS` text could not be parsed.
    #[error("invalid topic spec {0:?}: expected NAME:PARTITIONS")]
    BadSyntax(String),
}

/// Checks a topic name against Kafka's rules.
pub fn validate_name(name: &str) -> Result<(), TopicSpecError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TopicSpecError::BadName(name.to_owned()))
    }
}

/// Checks a partition count and narrows it to `i32`.
pub fn validate_partitions(partitions: i64) -> Result<i32, TopicSpecError> {
    if (i64::from(MIN_PARTITIONS)..=i64::from(MAX_PARTITIONS)).contains(&partitions) {
        // In range, so it fits.
        Ok(partitions as i32)
    } else {
        Err(TopicSpecError::BadPartitions(partitions))
    }
}

impl TopicSpec {
    /// Builds a validated topic specification.
    pub fn new(name: impl Into<String>, partitions: i64) -> Result<Self, TopicSpecError> {
        let name = name.into();
        validate_name(&name)?;
        let partitions = validate_partitions(partitions)?;
        Ok(Self { name, partitions })
    }
}

impl FromStr for TopicSpec {
    type Err = TopicSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, parts) = s
            .rsplit_once(':')
            .ok_or_else(|| TopicSpecError::BadSyntax(s.to_owned()))?;
        let parts: i64 = parts
            .trim()
            .parse()
            .map_err(|_| TopicSpecError::BadSyntax(s.to_owned()))?;
        Self::new(name.trim(), parts)
    }
}

impl fmt::Display for TopicSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.partitions)
    }
}

/// The project's default topics, with `partitions` for the main ones.
pub fn default_topics(partitions: i32) -> Vec<TopicSpec> {
    vec![
        TopicSpec {
            name: FRAMES.into(),
            partitions,
        },
        TopicSpec {
            name: DETECTIONS.into(),
            partitions,
        },
        TopicSpec {
            name: DETECTIONS_SHADOW.into(),
            partitions,
        },
        TopicSpec {
            name: FRAMES_DLQ.into(),
            partitions: FRAMES_DLQ_PARTITIONS,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let t: TopicSpec = "a.b-c_d:7".parse().unwrap();
        assert_eq!(
            t,
            TopicSpec {
                name: "a.b-c_d".into(),
                partitions: 7
            }
        );
        assert!("nocolon".parse::<TopicSpec>().is_err());
        assert!("x:0".parse::<TopicSpec>().is_err());
        assert!("x:1025".parse::<TopicSpec>().is_err());
        assert!("x:-1".parse::<TopicSpec>().is_err());
        assert!("bad name:3".parse::<TopicSpec>().is_err());
        assert!(":3".parse::<TopicSpec>().is_err());
        assert!("..:3".parse::<TopicSpec>().is_err());
        assert!("x:1024".parse::<TopicSpec>().is_ok());
    }

    #[test]
    fn names() {
        assert!(validate_name(&"a".repeat(249)).is_ok());
        assert!(validate_name(&"a".repeat(250)).is_err());
        assert!(validate_name("é").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
