//! `map_async`: an async, fallible map with bounded concurrency, order kept.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use weir_core::Record;

use super::{Elem, Failure, Flow, Out};
use crate::{OnError, OpError};

pub(crate) struct MapAsync<I, F> {
    pub inner: Box<dyn Flow<I>>,
    pub f: F,
    pub concurrency: usize,
    pub name: Arc<str>,
    pub policy: OnError,
}

impl<I, O, E, Fut, F> Flow<O> for MapAsync<I, F>
where
    I: Send,
    O: Send,
    E: Into<OpError> + Send,
    Fut: Future<Output = Result<O, E>> + Send,
    F: Fn(I) -> Fut + Send + Sync,
{
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<O>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut mid = Out::default();
            self.inner.run(records, &mut mid).await;
            out.failures.append(&mut mid.failures);
            let f = &self.f;
            // `buffered` runs up to `concurrency` calls at once and yields their
            // results in input order: per-partition order is kept.
            let mut results = futures::stream::iter(mid.elems)
                .map(|e| async move { (e.src, f(e.value).await) })
                .buffered(self.concurrency.max(1));
            while let Some((src, r)) = results.next().await {
                match r {
                    Ok(value) => out.elems.push(Elem { src, value }),
                    Err(err) => {
                        let err: OpError = err.into();
                        out.failures.push(Failure {
                            src,
                            stage: self.name.clone(),
                            retriable: err.is_retriable(),
                            message: err.to_string(),
                            policy: self.policy,
                        });
                    }
                }
            }
        })
    }
    fn set_policy(&mut self, policy: OnError) {
        self.policy = policy;
    }
}
