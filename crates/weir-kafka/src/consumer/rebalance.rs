//! Rebalances, seeks and pattern subscriptions: where the listener runs and start
//! offsets are applied.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::Consumer as _;
use rdkafka::topic_partition_list::{Offset as RdOffset, TopicPartitionList};
use weir_core::{
    Error, NoopListener, Offset, RebalanceContext, Result, Subscription, TopicPartition,
};

use super::offsets::{clone_error, resolve, tpl_of, tpl_plain};
use super::{
    backend, detached, is_cooperative, KafkaConsumer, Mode, PartState, COMMIT_TIMEOUT,
    PATTERN_REFRESH, REQUEST_TIMEOUT, RETRY_BACKOFF,
};
use crate::context::RebalanceEvent;
use crate::error::from_kafka;

impl KafkaConsumer {
    /// Apply an assignment: run the listener, resolve starts, assign with offsets.
    pub(super) async fn on_assign(
        &mut self,
        tps: Vec<TopicPartition>,
        cooperative_hint: bool,
    ) -> Result<()> {
        let rd = self.rd()?;
        let listener = match &self.mode {
            Mode::Subscribed { listener, .. } => listener.clone(),
            _ => Arc::new(NoopListener),
        };
        let mut ctx = RebalanceContext::new(BTreeMap::new());
        let listener_result = listener.on_partitions_assigned(&tps, &mut ctx).await;
        let (seeks, commits) = ctx.into_parts();
        if !commits.is_empty() {
            if let Err(e) = self
                .commit_map_sync(commits, Instant::now() + COMMIT_TIMEOUT)
                .await
            {
                tracing::warn!(target: "weir_kafka", error = %e, "commit requested in on_partitions_assigned failed");
            }
        }
        let targets: BTreeMap<TopicPartition, Offset> = tps
            .iter()
            .map(|tp| (tp.clone(), seeks.get(tp).copied().unwrap_or(Offset::Stored)))
            .collect();
        let use_committed = !self.standalone;
        let reset = self.config.auto_offset_reset();
        let redactor = self.redactor.clone();
        let rd2 = rd.clone();
        let t2 = targets.clone();
        let (starts, failed) = detached("resolve", move || {
            resolve(&rd2, &t2, use_committed, reset, &redactor)
        })
        .await?;
        let mut tpl = TopicPartitionList::with_capacity(tps.len());
        for tp in &tps {
            let off = match starts.get(tp) {
                Some(s) => RdOffset::Offset(*s),
                // Unresolved: assigned paused at the beginning; a seek restarts it.
                None => RdOffset::Beginning,
            };
            tpl.add_partition_offset(tp.topic(), tp.partition(), off)
                .map_err(|e| backend(format!("building the assignment for {tp}: {e}")))?;
        }
        let incremental = cooperative_hint;
        let failed_list: Vec<TopicPartition> = failed.keys().cloned().collect();
        let assign_result = detached("assign", move || {
            let r = if incremental {
                rd.incremental_assign(&tpl)
            } else {
                rd.assign(&tpl)
            };
            if r.is_ok() && !failed_list.is_empty() {
                let _ = rd.pause(&tpl_plain(&failed_list));
            }
            r
        })
        .await?;
        if !incremental {
            self.parts.clear();
            self.paused.clear();
            self.unresolved.clear();
            self.retry.clear();
        }
        for tp in &tps {
            let start = starts.get(tp).copied();
            self.parts.insert(
                tp.clone(),
                PartState {
                    buf: VecDeque::new(),
                    position: start,
                    floor: start,
                },
            );
            self.pending_seeks.remove(tp);
            self.retry.remove(tp);
        }
        for (tp, e) in failed {
            self.note_unresolved(tp, e, &targets);
        }
        assign_result.map_err(|e| from_kafka("assigning partitions", &e, &self.redactor))?;
        listener_result.map_err(|e| Error::Listener(Box::new(e)))
    }

    /// Give partitions up: stop delivering them, run the listener, commit, unassign.
    pub(super) async fn on_revoke(
        &mut self,
        tps: Vec<TopicPartition>,
        lost: bool,
        unassign: bool,
    ) -> Result<()> {
        let rd = self.rd()?;
        let listener = match &self.mode {
            Mode::Subscribed { listener, .. } => listener.clone(),
            _ => Arc::new(NoopListener),
        };
        // Only what weir still holds goes through the listener (unsubscribe/close
        // revoke before librdkafka asks).
        let mine: Vec<TopicPartition> = tps
            .iter()
            .filter(|tp| self.parts.contains_key(*tp))
            .cloned()
            .collect();
        let mut positions = BTreeMap::new();
        for tp in &mine {
            if let Some(st) = self.parts.get_mut(tp) {
                st.buf.clear();
                if let Some(p) = st.position {
                    positions.insert(tp.clone(), p);
                }
            }
        }
        let mut result = Ok(());
        if !mine.is_empty() {
            if lost {
                result = listener
                    .on_partitions_lost(&mine)
                    .await
                    .map_err(|e| Error::Listener(Box::new(e)));
            } else {
                let mut ctx = RebalanceContext::new(positions.clone());
                let r = listener.on_partitions_revoked(&mine, &mut ctx).await;
                let (_, commits) = ctx.into_parts();
                let mut to_commit = BTreeMap::new();
                if self.config.enable_auto_commit() && !self.standalone {
                    // Every position, even one an auto-commit already sent: that async
                    // commit may have failed (a rebalance in progress is the usual
                    // reason), and its outcome is not known yet here.
                    to_commit.extend(positions);
                }
                to_commit.extend(commits);
                if !to_commit.is_empty() && !self.standalone {
                    if let Err(e) = self
                        .commit_map_sync(to_commit, Instant::now() + COMMIT_TIMEOUT)
                        .await
                    {
                        tracing::warn!(target: "weir_kafka", error = %e, "commit before giving partitions up failed");
                    }
                }
                result = r.map_err(|e| Error::Listener(Box::new(e)));
            }
        }
        for tp in &tps {
            self.parts.remove(tp);
            self.paused.remove(tp);
            self.unresolved.remove(tp);
            self.retry.remove(tp);
            self.pending_seeks.remove(tp);
            self.auto_committed.remove(tp);
        }
        if unassign {
            let list = tps.clone();
            let r = detached("unassign", move || {
                if is_cooperative(&rd) {
                    rd.incremental_unassign(&tpl_plain(&list))
                } else {
                    rd.unassign()
                }
            })
            .await?;
            r.map_err(|e| from_kafka("unassigning partitions", &e, &self.redactor))?;
        }
        result
    }

    pub(super) async fn handle_rebalance(&mut self, ev: RebalanceEvent) -> Result<()> {
        let rd = self.rd()?;
        match ev {
            RebalanceEvent::Assign(tps) => {
                let cooperative = is_cooperative(&rd);
                self.on_assign(tps, cooperative).await
            }
            RebalanceEvent::Revoke { partitions, lost } => {
                self.on_revoke(partitions, lost, true).await
            }
        }
    }

    /// Remember a partition whose start could not be resolved. An error that may pass
    /// (broker unreachable, coordinator loading) is tried again by `poll` after
    /// [`RETRY_BACKOFF`] with the same target; any other (`NoOffset` with
    /// `auto.offset.reset=none`) waits for a seek.
    fn note_unresolved(
        &mut self,
        tp: TopicPartition,
        e: Error,
        targets: &BTreeMap<TopicPartition, Offset>,
    ) {
        match targets.get(&tp) {
            Some(target) if e.is_retriable() => {
                self.retry.insert(tp.clone(), *target);
                self.retry_at = Instant::now() + RETRY_BACKOFF;
            }
            _ => {
                self.retry.remove(&tp);
            }
        }
        self.unresolved.insert(tp, e);
    }

    /// Queue the due retries as seeks (a seek the user asked for meanwhile wins).
    pub(super) fn schedule_retries(&mut self) {
        if self.retry.is_empty() || Instant::now() < self.retry_at {
            return;
        }
        for (tp, target) in std::mem::take(&mut self.retry) {
            self.pending_seeks.entry(tp).or_insert(target);
        }
    }

    /// Apply seeks asked for since the last poll: resolve, seek librdkafka, drop buffers.
    pub(super) async fn apply_seeks(&mut self) -> Result<()> {
        if self.pending_seeks.is_empty() {
            return Ok(());
        }
        let rd = self.rd()?;
        let targets = std::mem::take(&mut self.pending_seeks);
        let use_committed = !self.standalone;
        let reset = self.config.auto_offset_reset();
        let redactor = self.redactor.clone();
        let rd2 = rd.clone();
        let t2 = targets.clone();
        let (starts, failed) = detached("resolve", move || {
            resolve(&rd2, &t2, use_committed, reset, &redactor)
        })
        .await?;
        let mut first_error = None;
        for (tp, e) in failed {
            // Unresolvable seek: the partition stops until another seek.
            if let Some(st) = self.parts.get_mut(&tp) {
                st.buf.clear();
                st.position = None;
                st.floor = None;
            }
            // A paused partition's failure is kept (its position reports it, and poll
            // does once it is resumed) but does not fail this call: the caller paused
            // it, typically to retry it later, and the others must go on.
            if first_error.is_none() && !self.paused.contains(&tp) {
                first_error = Some(clone_error(&e));
            }
            self.note_unresolved(tp, e, &targets);
        }
        if !starts.is_empty() {
            let tpl = tpl_of(&starts)?;
            let resume: Vec<TopicPartition> = starts
                .keys()
                .filter(|tp| self.unresolved.contains_key(*tp) && !self.paused.contains(*tp))
                .cloned()
                .collect();
            let r = detached("seek", move || {
                let r = rd.seek_partitions(tpl, REQUEST_TIMEOUT);
                if !resume.is_empty() {
                    let _ = rd.resume(&tpl_plain(&resume));
                }
                r
            })
            .await?;
            match r {
                Ok(tpl) => {
                    for e in tpl.elements() {
                        if let Err(err) = e.error() {
                            let tp = TopicPartition::new(e.topic(), e.partition());
                            if first_error.is_none() {
                                first_error = Some(from_kafka(
                                    &format!("seeking {tp}"),
                                    &err,
                                    &self.redactor,
                                ));
                            }
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(from_kafka("seeking", &e, &self.redactor));
                }
            }
            for (tp, s) in starts {
                self.unresolved.remove(&tp);
                self.retry.remove(&tp);
                if let Some(st) = self.parts.get_mut(&tp) {
                    st.buf.clear();
                    st.position = Some(s);
                    st.floor = Some(s);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// For pattern subscriptions: subscribe to the topics that match now.
    pub(super) async fn refresh_pattern(&mut self) -> Result<()> {
        let (re, due) = match &self.mode {
            Mode::Subscribed {
                subscription: Subscription::Pattern(re),
                matched,
                ..
            } => (
                re.clone(),
                matched
                    .as_ref()
                    .is_none_or(|(_, at)| at.elapsed() >= PATTERN_REFRESH),
            ),
            _ => return Ok(()),
        };
        if !due {
            return Ok(());
        }
        let rd = self.rd()?;
        let rd2 = rd.clone();
        let md = detached("metadata", move || {
            rd2.fetch_metadata(None, REQUEST_TIMEOUT).map(|m| {
                m.topics()
                    .iter()
                    .map(|t| t.name().to_owned())
                    .collect::<Vec<_>>()
            })
        })
        .await?;
        let names = match md {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(target: "weir_kafka", error = %from_kafka("listing topics", &e, &self.redactor), "pattern refresh failed");
                return Ok(());
            }
        };
        let now: BTreeSet<String> = names.into_iter().filter(|n| re.is_match(n)).collect();
        let changed = match &self.mode {
            Mode::Subscribed { matched, .. } => matched.as_ref().is_none_or(|(m, _)| *m != now),
            _ => false,
        };
        if changed && !now.is_empty() {
            let list: Vec<String> = now.iter().cloned().collect();
            detached("subscribe", move || {
                let names: Vec<&str> = list.iter().map(String::as_str).collect();
                rd.subscribe(&names)
            })
            .await?
            .map_err(|e| from_kafka("subscribing", &e, &self.redactor))?;
        }
        if let Mode::Subscribed { matched, .. } = &mut self.mode {
            *matched = Some((now, Instant::now()));
        }
        Ok(())
    }
}
