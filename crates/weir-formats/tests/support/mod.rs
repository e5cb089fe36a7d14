//! A schema-registry stub for tests: the Confluent REST subset weir uses, hand-written
//! HTTP/1.1 over a tokio listener on 127.0.0.1, with fault switches (500s, hangs, down)
//! and request counting.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};

#[derive(Default)]
struct State {
    by_id: Mutex<HashMap<u32, Schema>>,
    by_guid: Mutex<HashMap<String, u32>>,
    subjects: Mutex<HashMap<String, Vec<u32>>>,
    requests: Mutex<Vec<String>>,
    authorization: Mutex<Vec<String>>,
    fail_next: AtomicU32,
    hang: AtomicBool,
    next_id: AtomicU32,
}

/// The stub. Dropping it (or [`Stub::down`]) stops the listener: connections are then
/// refused.
pub struct Stub {
    pub url: String,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Stub {
    pub async fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            next_id: AtomicU32::new(100),
            ..State::default()
        });
        let s = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        Stub {
            url: format!("http://{addr}"),
            state,
            accept,
        }
    }

    /// A client with short timeouts and backoff, for tests.
    pub fn client(&self) -> Arc<SchemaRegistry> {
        self.client_with(|c| c)
    }

    pub fn client_with(
        &self,
        f: impl FnOnce(RegistryConfig) -> RegistryConfig,
    ) -> Arc<SchemaRegistry> {
        let config = RegistryConfig::new(&self.url)
            .unwrap()
            .with_request_timeout(std::time::Duration::from_millis(500))
            .with_max_retries(2)
            .with_backoff(
                std::time::Duration::from_millis(10),
                std::time::Duration::from_millis(40),
            );
        Arc::new(SchemaRegistry::new(f(config)).unwrap())
    }

    /// Store `schema` under `id` (and under `subject`, as its next version).
    pub fn add(&self, id: u32, subject: &str, schema: Schema) {
        self.state.by_id.lock().insert(id, schema);
        self.state
            .subjects
            .lock()
            .entry(subject.to_string())
            .or_default()
            .push(id);
    }

    pub fn add_guid(&self, guid: uuid::Uuid, id: u32) {
        self.state
            .by_guid
            .lock()
            .insert(guid.hyphenated().to_string(), id);
    }

    /// Requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.state
            .requests
            .lock()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    pub fn authorization_headers(&self) -> Vec<String> {
        self.state.authorization.lock().clone()
    }

    /// Answer the next `n` requests with HTTP 500.
    pub fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Read requests but never answer them.
    pub fn set_hang(&self, hang: bool) {
        self.state.hang.store(hang, Ordering::SeqCst);
    }

    /// Stop listening (connections refused from now on).
    pub fn down(self) {
        drop(self);
    }
}

async fn serve(mut conn: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut content_length = 0usize;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("authorization") {
                state.authorization.lock().push(v.trim().to_string());
            }
        }
    }
    while buf.len() < head_end + content_length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + content_length].to_vec();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    state.requests.lock().push(format!("{method} {path}"));

    if state.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let (status, answer) = if state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        (500, json!({"error_code": 50001, "message": "stub failure"}))
    } else {
        route(&state, &method, &path, &body)
    };
    let text = answer.to_string();
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

fn schema_json(s: &Schema) -> serde_json::Value {
    serde_json::to_value(s).unwrap()
}

fn not_found(code: u32, what: &str) -> (u16, serde_json::Value) {
    (
        404,
        json!({"error_code": code, "message": format!("{what} not found")}),
    )
}

fn route(state: &State, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["schemas", "ids", id]) => {
            let Ok(id) = id.parse::<u32>() else {
                return not_found(40403, "schema");
            };
            match state.by_id.lock().get(&id) {
                Some(s) => (200, schema_json(s)),
                None => not_found(40403, "schema"),
            }
        }
        ("GET", ["schemas", "guids", guid]) => {
            let id = state.by_guid.lock().get(*guid).copied();
            match id.and_then(|id| state.by_id.lock().get(&id).cloned()) {
                Some(s) => (200, schema_json(&s)),
                None => not_found(40403, "schema"),
            }
        }
        ("GET", ["subjects", subject, "versions", version]) => {
            let subject = percent_decode(subject);
            let subjects = state.subjects.lock();
            let Some(ids) = subjects.get(&subject) else {
                return not_found(40401, "subject");
            };
            let index = if *version == "latest" {
                ids.len().checked_sub(1)
            } else {
                version.parse::<usize>().ok().and_then(|v| v.checked_sub(1))
            };
            match index.and_then(|i| ids.get(i).map(|id| (i, *id))) {
                Some((i, id)) => {
                    let s = state.by_id.lock().get(&id).cloned().unwrap();
                    let mut v = schema_json(&s);
                    v["subject"] = json!(subject);
                    v["version"] = json!(i + 1);
                    v["id"] = json!(id);
                    (200, v)
                }
                None => not_found(40402, "version"),
            }
        }
        ("POST", ["subjects", subject, "versions"]) => {
            let subject = percent_decode(subject);
            let Ok(schema) = serde_json::from_slice::<Schema>(body) else {
                return (
                    422,
                    json!({"error_code": 42201, "message": "invalid schema"}),
                );
            };
            let existing = state
                .by_id
                .lock()
                .iter()
                .find(|(_, s)| **s == schema)
                .map(|(id, _)| *id);
            let id = existing.unwrap_or_else(|| state.next_id.fetch_add(1, Ordering::SeqCst));
            state.by_id.lock().insert(id, schema);
            let mut subjects = state.subjects.lock();
            let versions = subjects.entry(subject).or_default();
            if !versions.contains(&id) {
                versions.push(id);
            }
            (200, json!({"id": id}))
        }
        _ => (
            404,
            json!({"error_code": 404, "message": "no such endpoint"}),
        ),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}
