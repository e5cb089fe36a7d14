//! `key_by`: attach a key to each value (for keyed state and sinks keyed by it).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use futures::future::BoxFuture;
use weir_core::Record;

use super::{run_sync, Elem, Failure, Flow, Out};
use crate::OnError;

/// A value with the key [`Pipeline::key_by`](crate::Pipeline::key_by) gave it.
///
/// ```
/// let k = weir_pipeline::Keyed { key: "alice".to_owned(), value: 42_i64 };
/// assert_eq!((k.key.as_str(), k.value), ("alice", 42));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyed<K, T> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: T,
}

pub(crate) struct KeyBy<T, F> {
    pub inner: Box<dyn Flow<T>>,
    pub f: F,
}

impl<T: Send, K: Send, F: FnMut(&T) -> K + Send> Flow<Keyed<K, T>> for KeyBy<T, F> {
    fn run<'a>(
        &'a mut self,
        records: &'a [Record],
        out: &'a mut Out<Keyed<K, T>>,
    ) -> BoxFuture<'a, ()> {
        let f = &mut self.f;
        Box::pin(run_sync(&mut self.inner, records, out, move |e, _, out| {
            // A key function that panics on a value is bad input: that record goes
            // to the dead letters with the panic's message, the job goes on.
            match catch_unwind(AssertUnwindSafe(|| f(&e.value))) {
                Ok(key) => out.elems.push(Elem {
                    src: e.src,
                    value: Keyed {
                        key,
                        value: e.value,
                    },
                }),
                Err(p) => out.failures.push(Failure {
                    src: e.src,
                    stage: Arc::from("key_by"),
                    message: format!(
                        "key function panicked: {}",
                        p.downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".to_owned())
                    ),
                    retriable: false,
                    policy: OnError::DeadLetter,
                }),
            }
        }))
    }
    fn set_policy(&mut self, policy: OnError) {
        self.inner.set_policy(policy);
    }
}
