//! Configuration shortcuts shared by the scenarios.

use weir_core::{AutoOffsetReset, ConsumerConfig, Subscription, TopicPartition};

use crate::Backend;

/// A group member's configuration: the backend's, reading from the earliest offset,
/// committing only when the scenario says so.
pub(crate) fn group_config(backend: &dyn Backend, group: &str) -> ConsumerConfig {
    backend
        .config(Some(group))
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false)
}

/// A standalone consumer's configuration (no `group.id`), reading from the earliest
/// offset.
pub(crate) fn standalone_config(backend: &dyn Backend) -> ConsumerConfig {
    backend
        .config(None)
        .with_auto_offset_reset(AutoOffsetReset::Earliest)
        .with_enable_auto_commit(false)
}

/// Subscribe to one topic.
pub(crate) fn topic(topic: &str) -> Subscription {
    Subscription::topics([topic])
}

/// `topic-partition`.
pub(crate) fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}
