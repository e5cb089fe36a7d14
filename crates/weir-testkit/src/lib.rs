//! # weir-testkit
//!
//! The conformance suite every weir backend must pass: one set of test bodies, run
//! against the embedded log (`weir-log`) and against Kafka (`weir-kafka`), in the way
//! object_store runs one shared integration suite against every store.
//!
//! A backend implements [`Backend`] (create topics, produce records, build consumers,
//! make a consumer vanish, and say how long to wait). [`conformance_suite!`] then
//! expands to one `#[test]` per scenario, each named for its scenario and running it
//! on a multi-threaded tokio runtime with 4 workers. Each scenario builds its own
//! topics and groups, waits on conditions with deadlines (never fixed sleeps), and
//! fails with a message saying what it expected and what it saw.
//!
//! The scenarios (see [`conformance`] and [`SCENARIOS`]) cover consumer groups sharing
//! partitions (1 / 2 / 4 / 5 members on 4 partitions), independent groups, `close()`
//! against crashes against stalled polls (session timeout, `max.poll.interval.ms`),
//! auto / sync / async / explicit commits and where the next member starts, the
//! rebalance listener's timing contract (revoke before assign, commit in revoke, seek
//! in assign), seeks and positions, wakeup from another thread, pause and resume,
//! standalone `assign` and `partitions_for`, `auto.offset.reset`, cooperative
//! rebalancing, pattern subscriptions, bad configuration, closed consumers,
//! `max.poll.records` and per-partition order.
//!
//! ## Instantiating the suite for a backend
//!
//! Put the backend in an integration test of the backend's crate (the embedded log's
//! is `crates/weir-log/tests/conformance.rs`) and invoke the macro once with an
//! expression that makes a fresh backend; it is evaluated inside each test's async
//! body, so it may `.await` and use `?` (errors become `anyhow::Error`). Run one
//! scenario with
//! `cargo test -p <crate> --test conformance <scenario>`.
//!
//! ```
//! use std::time::Duration;
//! use weir_core::{async_trait, Consumer, ConsumerConfig, Error, Result};
//! use weir_testkit::Backend;
//!
//! /// A backend for a store reached at `addr` (here: one that cannot do anything).
//! struct MyBackend {
//!     addr: String,
//! }
//!
//! impl MyBackend {
//!     async fn start() -> Self {
//!         MyBackend { addr: "127.0.0.1:9092".into() }
//!     }
//! }
//!
//! #[async_trait]
//! impl Backend for MyBackend {
//!     fn name(&self) -> &'static str {
//!         "mine"
//!     }
//!     async fn create_topic(&self, topic: &str, _partitions: i32) -> Result<()> {
//!         Err(Error::UnknownTopic { topic: topic.into() })
//!     }
//!     async fn add_partitions(&self, topic: &str, _total: i32) -> Result<()> {
//!         Err(Error::UnknownTopic { topic: topic.into() })
//!     }
//!     async fn produce(&self, topic: &str, _p: i32, _k: Option<&[u8]>, _v: &[u8]) -> Result<i64> {
//!         Err(Error::UnknownTopic { topic: topic.into() })
//!     }
//!     fn config(&self, group: Option<&str>) -> ConsumerConfig {
//!         let config = ConsumerConfig::new()
//!             .with_bootstrap_servers(self.addr.clone())
//!             .with_session_timeout(Duration::from_millis(6000))
//!             .with_heartbeat_interval(Duration::from_millis(1000))
//!             .with_auto_commit_interval(Duration::from_millis(1000));
//!         match group {
//!             Some(g) => config.with_group_id(g),
//!             None => config,
//!         }
//!     }
//!     async fn consumer(&self, config: ConsumerConfig) -> Result<Box<dyn Consumer>> {
//!         config.validate()?;
//!         Err(Error::IllegalState("this example has no consumer".into()))
//!     }
//!     fn patience(&self) -> Duration {
//!         Duration::from_secs(60)
//!     }
//! }
//!
//! // One #[test] per scenario, each with a fresh MyBackend.
//! weir_testkit::conformance_suite!(MyBackend::start().await);
//! # fn main() {}
//! ```
//!
//! A scenario can also be called directly, e.g. from a test with its own setup:
//! `weir_testkit::conformance::pause_and_resume(&backend).await`.
//!
//! ## Does the suite catch bugs?
//!
//! [`suite_self_test!`] (same factory expression) runs the scenarios against
//! deliberately broken consumers ([`faults::Fault`]: listener seeks ignored, revoke
//! commits dropped, revoked records redelivered, `max.poll.records` ignored, batches
//! reordered, pause ignored, close without leaving, silent async commits, wakeup
//! ignored) and fails if a scenario passes against one of them.
//!
//! ## Building blocks
//!
//! [`Member`] wraps a consumer with a [`Recorder`] (a [`weir_core::RebalanceListener`]
//! that stamps every callback on a shared [`Timeline`]) and keeps every record it was
//! given; [`poll_members_until`] and [`wait_for_assignment`] poll several members
//! concurrently (so they keep heartbeating) until a condition holds or a deadline
//! passes; [`poll_until`] does the same for one bare consumer.
#![warn(missing_docs)]

mod backend;
pub mod checker;
pub mod conformance;
pub mod crash;
pub mod faults;
mod harness;
pub mod registry;
pub mod tansu;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;

pub use backend::{unique_name, Backend};
pub use harness::{
    create_topic, deadline, describe, list, partitions_of, poll_members_until, poll_round,
    poll_until, produce_n, runs, summarize, value_for, wait_for_assignment, Event, Member,
    Recorder, Stamped, Timeline,
};

#[doc(hidden)]
pub use anyhow;

/// Run one scenario on a fresh multi-threaded tokio runtime with 4 worker threads.
/// Used by [`conformance_suite!`]; the error names the scenario.
///
/// ```
/// let outcome = weir_testkit::run_scenario("trivial", async { Ok(()) });
/// assert!(outcome.is_ok());
/// ```
pub fn run_scenario<F>(name: &str, scenario: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .with_context(|| format!("building the tokio runtime for scenario `{name}`"))?;
    let outcome = runtime.block_on(scenario);
    runtime.shutdown_timeout(Duration::from_secs(5));
    outcome.with_context(|| format!("conformance scenario `{name}`"))
}

/// Run `scenario` against `backend` with a hard time limit (three times the backend's
/// patience plus four session timeouts), so that a hung call fails the test with the
/// scenario's name instead of hanging the run.
///
/// ```
/// # use weir_testkit::Backend;
/// # async fn example(backend: &dyn Backend) -> anyhow::Result<()> {
/// weir_testkit::with_time_limit(backend, "pause_and_resume", weir_testkit::conformance::pause_and_resume(backend)).await
/// # }
/// ```
pub async fn with_time_limit<F>(
    backend: &dyn Backend,
    name: &str,
    scenario: F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let limit = backend.patience() * 3 + backend.config(None).session_timeout() * 4;
    match tokio::time::timeout(limit, scenario).await {
        Ok(outcome) => outcome,
        Err(_) => anyhow::bail!(
            "scenario `{name}` on the {} backend did not finish within {limit:?}: a call hung",
            backend.name()
        ),
    }
}

/// Expand to one `#[test]` per conformance scenario, each running
/// `weir_testkit::conformance::<scenario>(&backend)` on a fresh backend made by the
/// given expression (evaluated inside the test's async body, so it may `.await`; it
/// must yield a value whose type implements [`Backend`]).
///
/// See the [crate guide](crate) for a complete example.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr $(,)?) => {
        $crate::__with_scenarios!(__conformance_tests! { $factory });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr ; $($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() -> ::core::result::Result<(), $crate::anyhow::Error> {
                $crate::run_scenario(::core::stringify!($scenario), async {
                    let backend = $factory;
                    $crate::with_time_limit(
                        &backend,
                        ::core::stringify!($scenario),
                        $crate::conformance::$scenario(&backend),
                    )
                    .await
                })
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __scenario_names {
    (; $($scenario:ident),* $(,)?) => {
        &[$(::core::stringify!($scenario)),*]
    };
}

/// The one list of scenarios, handed to `$mac` after its own tokens.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_scenarios {
    ($mac:ident ! { $($pre:tt)* }) => {
        $crate::$mac! { $($pre)* ;
            group_of_one_reads_all_four_partitions,
            group_of_two_reads_two_partitions_each,
            group_of_four_reads_one_partition_each,
            group_of_five_leaves_one_idle,
            two_groups_each_receive_every_record,
            added_partitions_are_assigned_to_subscribers,
            close_rebalances_before_the_session_timeout,
            vanished_member_is_replaced_after_the_session_timeout,
            member_that_stops_polling_is_removed_and_told,
            commit_by_a_removed_member_is_rejected,
            unsubscribe_leaves_the_group_and_resubscribe_rejoins,
            commit_sync_commits_what_was_consumed,
            commit_async_reports_to_its_callback,
            explicit_offset_commits_are_where_the_next_member_starts,
            auto_commit_reprocesses_at_most_an_interval_after_a_crash,
            revoked_runs_before_assigned_and_its_commit_is_where_the_next_owner_starts,
            seek_in_assigned_decides_the_first_record,
            seek_in_a_slow_assigned_handler_decides_the_first_record,
            stored_offsets_sought_on_assignment_give_exactly_once_through_rebalances,
            stored_offsets_sought_on_assignment_give_exactly_once_through_cooperative_rebalances,
            seek_moves_the_position_and_the_next_record,
            seek_to_beginning_and_end,
            committed_and_watermarks,
            wakeup_from_another_thread_interrupts_a_blocked_poll,
            pause_and_resume,
            closed_consumer_returns_closed,
            standalone_assign_without_a_group,
            partitions_for_sees_added_partitions,
            auto_offset_reset_earliest,
            auto_offset_reset_latest,
            auto_offset_reset_none,
            cooperative_rebalance_keeps_unmoved_partitions_flowing,
            pattern_subscription_picks_up_a_new_matching_topic,
            bad_config_values_are_rejected_naming_the_key,
            unknown_config_keys_follow_the_backend,
            max_poll_records_is_respected,
            records_of_a_partition_arrive_in_order_and_intact,
        }
    };
}

/// The names of every scenario [`conformance_suite!`] runs, in order (each is a
/// function in [`conformance`] and a test of the same name).
///
/// ```
/// assert!(weir_testkit::SCENARIOS.contains(&"pause_and_resume"));
/// ```
pub const SCENARIOS: &[&str] = __with_scenarios!(__scenario_names! {});
