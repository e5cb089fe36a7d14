//! `flat_map`: one value in, any number out.

use futures::future::BoxFuture;
use weir_core::Record;

use super::{run_sync, Elem, Flow, Out};
use crate::OnError;

/// `.flat_map(f)`: each output becomes its own row; rows of one record carry
/// ordinals 0, 1, … (the sink's `Item::ordinal`).
pub(crate) struct FlatMap<I, F> {
    pub inner: Box<dyn Flow<I>>,
    pub f: F,
}

impl<I, O, It, F> Flow<O> for FlatMap<I, F>
where
    I: Send,
    O: Send,
    It: IntoIterator<Item = O>,
    F: FnMut(I) -> It + Send,
{
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<O>) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        Box::pin(run_sync(&mut self.inner, records, out, move |e, _, out| {
            let src = e.src;
            out.elems
                .extend(f(e.value).into_iter().map(|value| Elem { src, value }));
        }))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.inner.set_policy(policy);
    }
}
