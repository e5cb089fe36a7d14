//! The scenarios, one `async fn(&dyn Backend) -> anyhow::Result<()>` each.
//!
//! Every scenario creates its own topics and groups (names from
//! [`Backend::unique`](crate::Backend::unique)), waits on conditions with deadlines
//! ([`Backend::patience`](crate::Backend::patience)), reads the timeouts it measures
//! from [`Backend::config`](crate::Backend::config), and fails with a message saying
//! what it expected and what it saw. The [`conformance_suite!`](crate::conformance_suite)
//! macro turns each into a test; [`SCENARIOS`](crate::SCENARIOS) lists their names.
//!
//! ```no_run
//! # async fn example(backend: &dyn weir_testkit::Backend) -> anyhow::Result<()> {
//! // One scenario, e.g. while working on a backend's pause/resume:
//! weir_testkit::conformance::pause_and_resume(backend).await?;
//! # Ok(()) }
//! ```

mod commits;
mod common;
mod config;
mod control;
mod cooperative;
mod delivery;
mod exactly_once;
mod groups;
mod listener;
mod liveness;
mod pattern;
mod positions;
mod reset;
mod standalone;

pub use commits::{
    auto_commit_reprocesses_at_most_an_interval_after_a_crash,
    commit_async_reports_to_its_callback, commit_sync_commits_what_was_consumed,
    explicit_offset_commits_are_where_the_next_member_starts,
};
pub use config::{
    bad_config_values_are_rejected_naming_the_key, unknown_config_keys_follow_the_backend,
};
pub use control::{
    closed_consumer_returns_closed, pause_and_resume,
    wakeup_from_another_thread_interrupts_a_blocked_poll,
};
pub use cooperative::cooperative_rebalance_keeps_unmoved_partitions_flowing;
pub use delivery::{
    max_poll_records_is_respected, records_of_a_partition_arrive_in_order_and_intact,
};
pub use exactly_once::{
    stored_offsets_sought_on_assignment_give_exactly_once_through_cooperative_rebalances,
    stored_offsets_sought_on_assignment_give_exactly_once_through_rebalances,
};
pub use groups::{
    added_partitions_are_assigned_to_subscribers, group_of_five_leaves_one_idle,
    group_of_four_reads_one_partition_each, group_of_one_reads_all_four_partitions,
    group_of_two_reads_two_partitions_each, two_groups_each_receive_every_record,
};
pub use listener::{
    revoked_runs_before_assigned_and_its_commit_is_where_the_next_owner_starts,
    seek_in_a_slow_assigned_handler_decides_the_first_record,
    seek_in_assigned_decides_the_first_record,
};
pub use liveness::{
    close_rebalances_before_the_session_timeout, commit_by_a_removed_member_is_rejected,
    member_that_stops_polling_is_removed_and_told,
    unsubscribe_leaves_the_group_and_resubscribe_rejoins,
    vanished_member_is_replaced_after_the_session_timeout,
};
pub use pattern::pattern_subscription_picks_up_a_new_matching_topic;
pub use positions::{
    committed_and_watermarks, seek_moves_the_position_and_the_next_record,
    seek_to_beginning_and_end,
};
pub use reset::{auto_offset_reset_earliest, auto_offset_reset_latest, auto_offset_reset_none};
pub use standalone::{partitions_for_sees_added_partitions, standalone_assign_without_a_group};

/// Grows `topic` to `total` partitions. `Ok(false)` when the backend declared (through
/// [`Backend::cannot_add_partitions`]) that its broker cannot, and the broker indeed
/// refused: the calling scenario then has nothing more it can check on this broker.
pub(crate) async fn grow_topic(
    backend: &dyn crate::Backend,
    topic: &str,
    total: i32,
) -> anyhow::Result<bool> {
    match (
        backend.add_partitions(topic, total).await,
        backend.cannot_add_partitions(),
    ) {
        (Ok(()), None) => Ok(true),
        (Ok(()), Some(reason)) => anyhow::bail!(
            "{}: declared unable to add partitions ({reason}), yet growing {topic} to {total} \
             succeeded: drop Backend::cannot_add_partitions so the scenario runs",
            backend.name()
        ),
        (Err(e), Some(reason)) => {
            println!(
                "{}: known broker fault, scenario cannot run here: {reason} (broker said: {e})",
                backend.name()
            );
            Ok(false)
        }
        (Err(e), None) => Err(anyhow::Error::new(e).context(format!(
            "{}: growing {topic} to {total} partitions",
            backend.name()
        ))),
    }
}
