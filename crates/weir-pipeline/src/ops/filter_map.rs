//! `filter_map`: map and drop in one step.

use futures::future::BoxFuture;
use weir_core::Record;

use super::{run_sync, Elem, Flow, Out};
use crate::OnError;

/// `.filter_map(f)`: `None` drops the value (its record is consumed).
pub(crate) struct FilterMap<I, F> {
    pub inner: Box<dyn Flow<I>>,
    pub f: F,
}

impl<I: Send, O: Send, F: FnMut(I) -> Option<O> + Send> Flow<O> for FilterMap<I, F> {
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<O>) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        Box::pin(run_sync(&mut self.inner, records, out, move |e, _, out| {
            if let Some(value) = f(e.value) {
                out.elems.push(Elem { src: e.src, value });
            }
        }))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.inner.set_policy(policy);
    }
}
