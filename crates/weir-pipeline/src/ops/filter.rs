//! `filter`: keep the values a predicate holds for.

use futures::future::BoxFuture;
use weir_core::Record;

use super::{run_sync, Flow, Out};
use crate::OnError;

/// `.filter(p)`: values for which `p` is false are consumed (their offsets advance)
/// and produce no row.
pub(crate) struct Filter<T, F> {
    pub inner: Box<dyn Flow<T>>,
    pub f: F,
}

impl<T: Send, F: FnMut(&T) -> bool + Send> Flow<T> for Filter<T, F> {
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<T>) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        Box::pin(run_sync(&mut self.inner, records, out, move |e, _, out| {
            if f(&e.value) {
                out.elems.push(e);
            }
        }))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.inner.set_policy(policy);
    }
}
