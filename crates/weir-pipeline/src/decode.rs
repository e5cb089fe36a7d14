//! The first stage: records to typed values with any weir-formats deserializer.
//!
//! [`Deserializer`] is async (a registry deserializer fetches schemas); every sync
//! deserializer implements it with a ready future, so one stage serves both without
//! any bridging by the user. A transient error (the registry is unreachable) pauses
//! the record's partition and retries it; a permanent one (poison) follows the
//! stage's [`OnError`] policy, a dead letter by default.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use weir_core::Record;
use weir_formats::{DeserializeError, Deserializer};

use crate::ops::{Elem, Failure, Flow, Out};
use crate::OnError;

fn failure(src: u32, stage: &Arc<str>, policy: OnError, e: &DeserializeError) -> Failure {
    Failure {
        src,
        stage: stage.clone(),
        retriable: e.is_retriable(),
        message: e.to_string(),
        policy,
    }
}

/// The partitions of one poll whose decoding failed transiently: the fetch side
/// retries from the first such record, so the later records of that partition are not
/// decoded at all (against a registry that is down, every call would wait for its
/// timeout and keep the poll loop from turning).
#[derive(Default)]
struct Stalled(Vec<(Arc<str>, i32)>);

impl Stalled {
    fn has(&self, r: &Record) -> bool {
        self.0
            .iter()
            .any(|(t, p)| *p == r.partition && **t == *r.topic)
    }
    fn note(&mut self, r: &Record, e: &DeserializeError) {
        if e.is_retriable() && !self.has(r) {
            self.0.push((r.topic.clone(), r.partition));
        }
    }
    fn failure(src: u32, stage: &Arc<str>, policy: OnError) -> Failure {
        Failure {
            src,
            stage: stage.clone(),
            retriable: true,
            message: "not decoded: an earlier record of this partition is waiting for a retry"
                .to_owned(),
            policy,
        }
    }
}

/// Decodes record values with `D`.
pub(crate) struct DecodeValue<D, T> {
    pub deser: D,
    pub policy: OnError,
    pub name: Arc<str>,
    pub _t: PhantomData<fn() -> T>,
}

impl<D, T> Flow<T> for DecodeValue<D, T>
where
    D: Deserializer<T>,
    T: Send,
{
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<T>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            out.elems.reserve(records.len());
            let mut stalled = Stalled::default();
            for (i, r) in records.iter().enumerate() {
                let src = u32::try_from(i).unwrap_or(u32::MAX);
                if stalled.has(r) {
                    out.failures
                        .push(Stalled::failure(src, &self.name, self.policy));
                    continue;
                }
                match self.deser.value(r).await {
                    Ok(value) => out.elems.push(Elem { src, value }),
                    Err(e) => {
                        stalled.note(r, &e);
                        out.failures.push(failure(src, &self.name, self.policy, &e));
                    }
                }
            }
        })
    }
    fn set_policy(&mut self, policy: OnError) {
        self.policy = policy;
    }
}

/// Decodes record keys with `K` and values with `V`.
pub(crate) struct DecodeKeyValue<KD, VD, K, V> {
    pub key: KD,
    pub value: VD,
    pub policy: OnError,
    pub name: Arc<str>,
    pub _t: PhantomData<fn() -> (K, V)>,
}

impl<KD, VD, K, V> Flow<(K, V)> for DecodeKeyValue<KD, VD, K, V>
where
    KD: Deserializer<K>,
    VD: Deserializer<V>,
    K: Send,
    V: Send,
{
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<(K, V)>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            out.elems.reserve(records.len());
            let mut stalled = Stalled::default();
            for (i, r) in records.iter().enumerate() {
                let src = u32::try_from(i).unwrap_or(u32::MAX);
                if stalled.has(r) {
                    out.failures
                        .push(Stalled::failure(src, &self.name, self.policy));
                    continue;
                }
                let k = match self.key.key(r).await {
                    Ok(k) => k,
                    Err(e) => {
                        stalled.note(r, &e);
                        out.failures.push(failure(src, &self.name, self.policy, &e));
                        continue;
                    }
                };
                match self.value.value(r).await {
                    Ok(v) => out.elems.push(Elem { src, value: (k, v) }),
                    Err(e) => {
                        stalled.note(r, &e);
                        out.failures.push(failure(src, &self.name, self.policy, &e));
                    }
                }
            }
        })
    }
    fn set_policy(&mut self, policy: OnError) {
        self.policy = policy;
    }
}

/// Passes the records themselves on (`Job::records()`): no decoding.
pub(crate) struct Raw;

impl Flow<Record> for Raw {
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<Record>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            out.elems
                .extend(records.iter().enumerate().map(|(i, r)| Elem {
                    src: u32::try_from(i).unwrap_or(u32::MAX),
                    value: r.clone(),
                }));
        })
    }
    fn set_policy(&mut self, _policy: OnError) {}
}
