//! `map` and `map_with`: one value in, one value out.

use futures::future::BoxFuture;
use weir_core::Record;

use super::{run_sync, Elem, Flow, Out};
use crate::OnError;

/// `.map(f)`: every value through `f`.
///
/// ```
/// # use weir_pipeline::Job;
/// # #[derive(serde::Deserialize)] struct Order { id: i64, amount: f64 }
/// let p = Job::new("doubled")
///     .source("log:///tmp/weir-doc-map", ["orders"])
///     .value::<Order, _>(weir_formats::Json::new())
///     .map(|o| (o.id, o.amount * 2.0));
/// # drop(p);
/// ```
pub(crate) struct Map<I, F> {
    pub inner: Box<dyn Flow<I>>,
    pub f: F,
}

impl<I: Send, O: Send, F: FnMut(I) -> O + Send> Flow<O> for Map<I, F> {
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<O>) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        Box::pin(run_sync(&mut self.inner, records, out, move |e, _, out| {
            out.elems.push(Elem {
                src: e.src,
                value: f(e.value),
            });
        }))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.inner.set_policy(policy);
    }
}

/// `.map_with(f)`: like `map`, and `f` sees the record (coordinates, timestamp, key,
/// headers).
pub(crate) struct MapWith<I, F> {
    pub inner: Box<dyn Flow<I>>,
    pub f: F,
}

impl<I: Send, O: Send, F: FnMut(I, &Record) -> O + Send> Flow<O> for MapWith<I, F> {
    fn run<'a>(&'a mut self, records: &'a [Record], out: &'a mut Out<O>) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        Box::pin(run_sync(&mut self.inner, records, out, move |e, r, out| {
            out.elems.push(Elem {
                src: e.src,
                value: f(e.value, r),
            });
        }))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.inner.set_policy(policy);
    }
}
