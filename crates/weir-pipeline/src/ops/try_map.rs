//! `try_map`: a fallible map whose error follows the stage's policy.

use std::sync::Arc;

use futures::future::BoxFuture;
use weir_core::Record;

use super::{run_sync, Elem, Failure, Flow, Out};
use crate::{OnError, OpError};

pub(crate) struct TryMap<I, F> {
    pub inner: Box<dyn Flow<I>>,
    pub f: F,
    pub name: Arc<str>,
    pub policy: OnError,
}

impl<I, O, E, F> Flow<O> for TryMap<I, F>
where
    I: Send,
    O: Send,
    E: Into<OpError>,
    F: FnMut(I) -> Result<O, E> + Send,
{
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<O>) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        let (name, policy) = (&self.name, self.policy);
        Box::pin(run_sync(
            &mut self.inner,
            records,
            out,
            move |e, _, out| match f(e.value) {
                Ok(value) => out.elems.push(Elem { src: e.src, value }),
                Err(err) => {
                    let err: OpError = err.into();
                    out.failures.push(Failure {
                        src: e.src,
                        stage: name.clone(),
                        retriable: err.is_retriable(),
                        message: err.to_string(),
                        policy,
                    });
                }
            },
        ))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.policy = policy;
    }
}
