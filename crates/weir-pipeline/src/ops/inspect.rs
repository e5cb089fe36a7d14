//! `inspect`: look at each value and its record, change nothing.

use futures::future::BoxFuture;
use weir_core::Record;

use super::{run_sync, Flow, Out};
use crate::OnError;

/// `.inspect(f)`: `f(&value, &record)` for each value, e.g. to log or count.
pub(crate) struct Inspect<T, F> {
    pub inner: Box<dyn Flow<T>>,
    pub f: F,
}

impl<T: Send, F: FnMut(&T, &Record) + Send> Flow<T> for Inspect<T, F> {
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<T>) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        Box::pin(run_sync(&mut self.inner, records, out, move |e, r, out| {
            f(&e.value, r);
            out.elems.push(e);
        }))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.inner.set_policy(policy);
    }
}
