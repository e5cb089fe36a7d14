//! Commits: synchronous, asynchronous (through an ordered commit thread) and Kafka's
//! auto-commit, done inside `poll`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_core::{CommitCallback, Error, Result, TopicPartition};

use super::offsets::tpl_of;
use super::{backend, detached, KafkaConsumer};
use crate::error::{code_is_retriable, from_code, from_kafka};

impl KafkaConsumer {
    /// Deliver the outcomes of asynchronous commits to their callbacks.
    pub(super) fn run_commit_callbacks(&mut self) {
        for (id, outcome) in self.shared.take_commits() {
            let entry = {
                let mut pending = self.async_commits.lock();
                pending
                    .iter()
                    .position(|(i, _, _)| *i == id)
                    .and_then(|i| pending.remove(i))
            };
            let Some((_, map, cb)) = entry else {
                continue;
            };
            let result = match outcome {
                Ok(()) => Ok(map),
                Err((code, text)) => {
                    // Not committed after all: the next auto-commit sends it again.
                    for (tp, off) in &map {
                        if self.auto_committed.get(tp) == Some(off) {
                            self.auto_committed.remove(tp);
                        }
                    }
                    Err(self.commit_error(code, &text))
                }
            };
            if let Some(cb) = cb {
                cb(result);
            }
        }
    }

    pub(super) fn commit_error(&self, code: Option<RDKafkaErrorCode>, text: &str) -> Error {
        match code {
            Some(
                RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::StaleMemberEpoch
                | RDKafkaErrorCode::FencedInstanceId,
            ) => Error::CommitFailed {
                group: self.group(),
                reason: text.to_owned(),
            },
            Some(c) => from_code("committing offsets", c),
            None => backend(format!("committing offsets: {text}")),
        }
    }

    /// Queue an asynchronous commit. librdkafka reports the outcome of an async
    /// `rd_kafka_commit` only to a global callback, so weir makes its async commits
    /// synchronously on a commit thread of its own, one after the other (a later
    /// commit never overtakes an earlier one), and hands each outcome to its callback
    /// during a later poll. Never retried.
    pub(super) fn start_async_commit(
        &mut self,
        map: BTreeMap<TopicPartition, i64>,
        cb: Option<CommitCallback>,
    ) {
        let checked = self.rd().and_then(|rd| {
            self.need_group("commit_async")?;
            Ok(rd)
        });
        let rd = match checked {
            Ok(rd) => rd,
            Err(e) => {
                if let Some(cb) = cb {
                    cb(Err(e));
                }
                return;
            }
        };
        if map.is_empty() {
            if let Some(cb) = cb {
                cb(Ok(map));
            }
            return;
        }
        if self.committer.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<(u64, BTreeMap<TopicPartition, i64>)>();
            let shared = self.shared.clone();
            let redactor = self.redactor.clone();
            let spawned = std::thread::Builder::new()
                .name("weir-kafka-commit".into())
                .spawn(move || {
                    while let Ok((id, map)) = rx.recv() {
                        let outcome = match tpl_of(&map) {
                            Ok(tpl) => match rd.commit(&tpl, CommitMode::Sync) {
                                Ok(())
                                | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                                    Ok(())
                                }
                                Err(e) => Err(match e.rdkafka_error_code() {
                                    Some(c) => (Some(c), c.to_string()),
                                    None => (None, redactor.clean(&e.to_string())),
                                }),
                            },
                            Err(e) => Err((None, e.to_string())),
                        };
                        shared.push_commit((id, outcome));
                    }
                });
            match spawned {
                Ok(_) => self.committer = Some(tx),
                Err(e) => {
                    if let Some(cb) = cb {
                        cb(Err(backend(format!("cannot start the commit thread: {e}"))));
                    }
                    return;
                }
            }
        }
        let id = self.next_commit_id;
        self.next_commit_id += 1;
        let sent = self
            .committer
            .as_ref()
            .map(|tx| tx.send((id, map.clone())).is_ok())
            .unwrap_or(false);
        if sent {
            self.async_commits.lock().push_back((id, map, cb));
        } else if let Some(cb) = cb {
            cb(Err(backend("the commit thread is gone")));
        }
    }

    /// Kafka's auto-commit, done in `poll`: the positions of what earlier polls returned.
    pub(super) fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit()
            || self.standalone
            || self.last_auto_commit.elapsed() < self.config.auto_commit_interval()
        {
            return;
        }
        self.last_auto_commit = Instant::now();
        let map: BTreeMap<TopicPartition, i64> = self
            .positions()
            .into_iter()
            .filter(|(tp, p)| self.auto_committed.get(tp) != Some(p))
            .collect();
        if map.is_empty() {
            return;
        }
        self.auto_committed.extend(map.clone());
        self.start_async_commit(map, None);
    }

    /// Commit synchronously, retrying retriable failures until `deadline`.
    pub(super) async fn commit_map_sync(
        &mut self,
        map: BTreeMap<TopicPartition, i64>,
        deadline: Instant,
    ) -> Result<()> {
        if map.is_empty() {
            return Ok(());
        }
        // Earlier async commits first: a sync commit must not be overtaken by them.
        self.finish_async_commits(deadline).await;
        let rd = self.rd()?;
        let tpl = tpl_of(&map)?;
        let outcome = detached("commit", move || loop {
            match rd.commit(&tpl, CommitMode::Sync) {
                Ok(()) => return Ok(()),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return Ok(()),
                Err(e) => {
                    let retriable = e.rdkafka_error_code().is_some_and(code_is_retriable);
                    if !retriable || Instant::now() >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .await?;
        self.run_commit_callbacks();
        match outcome {
            Ok(()) => {
                self.auto_committed.extend(map);
                Ok(())
            }
            Err(e) => Err(match e.rdkafka_error_code() {
                Some(c) => self.commit_error(Some(c), &c.to_string()),
                None => from_kafka("committing offsets", &e, &self.redactor),
            }),
        }
    }

    /// Wait (until `deadline`) for the async commits queued so far.
    pub(super) async fn finish_async_commits(&mut self, deadline: Instant) {
        loop {
            self.run_commit_callbacks();
            if self.async_commits.lock().is_empty() {
                return;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return;
            }
            let shared = self.shared.clone();
            let notified = shared.commit_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.run_commit_callbacks();
            if self.async_commits.lock().is_empty() {
                return;
            }
            let _ = tokio::time::timeout(remaining.min(Duration::from_millis(200)), notified).await;
        }
    }
}
