//! Taking messages out of librdkafka: one call drains many messages, and their payloads
//! are copied into shared chunks (one allocation per chunk, not two per record).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use weir_core::{Header, Record};

use crate::context::{Shared, WeirContext};

/// Size of one payload chunk. A record keeps its chunk alive while it lives; 64 KiB
/// bounds what one long-lived record can pin.
const CHUNK: usize = 64 * 1024;

/// What one fetch brought back.
pub(crate) struct Fetched {
    pub(crate) records: Vec<Record>,
    pub(crate) error: Option<KafkaError>,
    pub(crate) topics: Vec<Arc<str>>,
}

/// Where a payload landed: chunk, start, length.
type Span = (usize, usize, usize);

struct Pending {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Span>,
    value: Option<Span>,
    headers: Vec<Header>,
}

#[derive(Default)]
struct Arena {
    full: Vec<BytesMut>,
    cur: BytesMut,
}

impl Arena {
    fn put(&mut self, data: &[u8]) -> Span {
        if self.cur.capacity() - self.cur.len() < data.len() {
            let next = BytesMut::with_capacity(CHUNK.max(data.len()));
            self.full.push(std::mem::replace(&mut self.cur, next));
        }
        let start = self.cur.len();
        self.cur.extend_from_slice(data);
        (self.full.len(), start, data.len())
    }

    fn finish(mut self) -> Vec<Bytes> {
        self.full.push(self.cur);
        self.full.into_iter().map(BytesMut::freeze).collect()
    }
}

fn topic_arc(name: &str, topics: &mut Vec<Arc<str>>) -> Arc<str> {
    match topics.iter().find(|t| &***t == name) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = Arc::from(name);
            topics.push(t.clone());
            t
        }
    }
}

fn pending(m: &BorrowedMessage<'_>, arena: &mut Arena, topics: &mut Vec<Arc<str>>) -> Pending {
    let headers = match m.headers() {
        Some(hs) => hs
            .iter()
            .map(|h| Header {
                key: h.key.to_owned(),
                value: h.value.map(Bytes::copy_from_slice),
            })
            .collect(),
        None => Vec::new(),
    };
    Pending {
        topic: topic_arc(m.topic(), topics),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key().map(|k| arena.put(k)),
        value: m.payload().map(|v| arena.put(v)),
        headers,
    }
}

/// Take messages: wait up to `wait` for the first one, then whatever else is queued,
/// up to `want`; stop early when a rebalance was captured (the consumer's task must
/// handle it before anything else is delivered). With `wait` zero this never blocks.
pub(crate) fn fetch(
    rd: &BaseConsumer<WeirContext>,
    shared: &Shared,
    wait: Duration,
    want: usize,
    mut topics: Vec<Arc<str>>,
) -> Fetched {
    let deadline = Instant::now() + wait;
    let mut arena = Arena::default();
    let mut got: Vec<Pending> = Vec::with_capacity(want.min(4096));
    let mut error = None;
    while !shared.has_rebalance() {
        let wait = if got.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        match rd.poll(wait) {
            Some(Ok(m)) => {
                got.push(pending(&m, &mut arena, &mut topics));
                if got.len() >= want {
                    break;
                }
            }
            Some(Err(e)) => {
                error = Some(e);
                break;
            }
            None => {
                if !got.is_empty() || Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    let chunks = arena.finish();
    let slice = |s: Span| chunks[s.0].slice(s.1..s.1 + s.2);
    let records = got
        .into_iter()
        .map(|p| Record {
            topic: p.topic,
            partition: p.partition,
            offset: p.offset,
            timestamp: p.timestamp,
            key: p.key.map(slice),
            value: p.value.map(slice),
            headers: p.headers,
        })
        .collect();
    Fetched {
        records,
        error,
        topics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_spans_survive_chunk_changes() {
        let mut a = Arena::default();
        let big = vec![7u8; CHUNK + 10];
        let s1 = a.put(b"hello");
        let s2 = a.put(&big);
        let s3 = a.put(b"world");
        let chunks = a.finish();
        let get = |s: Span| chunks[s.0].slice(s.1..s.1 + s.2);
        assert_eq!(&get(s1)[..], b"hello");
        assert_eq!(get(s2).len(), CHUNK + 10);
        assert_eq!(&get(s3)[..], b"world");
    }
}
