//! The operators of a pipeline, one per file, and the [`Flow`] they compose into.
//!
//! A pipeline is a chain of stages compiled into one [`Flow`]: each stage takes the
//! previous stage's output for a whole poll batch and produces its own, so a sync
//! stage costs one loop over the batch and an async stage one `buffered` stream. Every
//! element remembers the index of the record it came from (`src`), which is how the
//! runtime finds a record's coordinates, keeps per-partition order and routes a
//! failure to the dead letters of the right record.

use std::sync::Arc;

use futures::future::BoxFuture;
use weir_core::Record;

use crate::OnError;

mod filter;
mod filter_map;
mod flat_map;
mod inspect;
mod key_by;
mod map;
mod map_async;
mod try_map;

pub use key_by::Keyed;
pub(crate) use {
    filter::Filter, filter_map::FilterMap, flat_map::FlatMap, inspect::Inspect, key_by::KeyBy,
    map::Map, map::MapWith, map_async::MapAsync, try_map::TryMap,
};

/// One value in flight through the operators, tied to the record it came from.
#[derive(Debug)]
pub(crate) struct Elem<T> {
    /// Index of the source record in the batch given to [`Flow::run`].
    pub src: u32,
    pub value: T,
}

/// A stage could not process a record.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub src: u32,
    /// The stage's name: `decode`, `try_map`, `map_async`, ….
    pub stage: Arc<str>,
    pub message: String,
    /// Transient (a service was down): the partition waits and retries the record.
    pub retriable: bool,
    /// What a permanent failure does.
    pub policy: OnError,
}

/// What a flow produced for one batch: values in source order, and failures.
#[derive(Debug)]
pub(crate) struct Out<T> {
    pub elems: Vec<Elem<T>>,
    pub failures: Vec<Failure>,
}

impl<T> Default for Out<T> {
    fn default() -> Self {
        Self {
            elems: Vec::new(),
            failures: Vec::new(),
        }
    }
}

/// A chain of stages from records to values of type `T`.
pub(crate) trait Flow<T>: Send {
    /// Run the chain over `records`, appending to `out`. Values keep the order of
    /// their source records.
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<T>) -> BoxFuture<'a, ()>;

    /// Set the error policy of the last stage (see [`crate::Pipeline::on_error`]).
    fn set_policy(&mut self, policy: OnError);
}

/// Boxed flows are flows (so that stages can wrap `Box<dyn Flow<T>>`).
impl<T> Flow<T> for Box<dyn Flow<T>> {
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<T>) -> BoxFuture<'a, ()> {
        (**self).run(records, out)
    }
    fn set_policy(&mut self, policy: OnError) {
        (**self).set_policy(policy);
    }
}

/// Runs `inner` into a fresh buffer and hands its values to `each`, keeping the
/// inner failures. The shared body of the sync operators.
pub(crate) async fn run_sync<I, O>(
    inner: &mut Box<dyn Flow<I>>,
    records: &[Record],
    out: &mut Out<O>,
    mut each: impl FnMut(Elem<I>, &Record, &mut Out<O>),
) {
    let mut mid = Out::default();
    inner.run(records, &mut mid).await;
    out.failures.append(&mut mid.failures);
    out.elems.reserve(mid.elems.len());
    for e in mid.elems {
        // `src` indexes `records` by construction; a flow never invents indexes.
        if let Some(r) = records.get(e.src as usize) {
            each(e, r, out);
        }
    }
}
