//! A development schema registry: the subset of Confluent Schema Registry's REST API
//! that weir's client ([`weir_formats::registry::SchemaRegistry`]) and the examples
//! use, in memory, over hand-written HTTP/1.1.
//!
//! **A development stand-in, not for production.** There is no Java on the machines
//! weir is developed on, so `scripts/provision` runs this (the `weir-registry`
//! binary) on 127.0.0.1:8081 for the examples. It keeps everything in memory (a
//! restart forgets every schema, as the tansu broker forgets every topic), checks no
//! compatibility (every level is `NONE`), has no authentication, no TLS, no
//! clustering, no `_schemas` topic. Use Confluent's or another real registry for
//! anything else.
//!
//! | request | answer |
//! |---|---|
//! | `POST /subjects/{subject}/versions` | `{"id": N}`: registers the schema (the same schema again: the same id, no new version; the same schema under another subject: the same id, as Confluent does) |
//! | `POST /subjects/{subject}` | the version of `subject` holding this schema, or 40403 |
//! | `GET /schemas/ids/{id}` | `{"schema": …, "schemaType"?, "references"?}` or 40403 |
//! | `GET /schemas/ids/{id}/versions` | `[{"subject", "version"}]` |
//! | `GET /schemas/types` | `["AVRO", "JSON", "PROTOBUF"]` |
//! | `GET /subjects` | the subjects |
//! | `GET /subjects/{subject}/versions` | `[1, 2, …]` or 40401 |
//! | `GET /subjects/{subject}/versions/{n or latest}` | `{"subject", "version", "id", "schema", …}` or 40401 / 40402 |
//! | `GET /subjects/{subject}/versions/{n or latest}/schema` | the schema text itself |
//! | `DELETE /subjects/{subject}` | the deleted versions (the ids stay readable) |
//! | `GET /config`, `GET /config/{subject}` | `{"compatibilityLevel": "NONE"}` |
//!
//! Errors are Confluent's: `{"error_code": 40401, "message": …}` (subject not found),
//! 40402 (version), 40403 (schema), 42201 (invalid schema: an Avro schema is parsed
//! with apache-avro), 404 for an unknown endpoint.
//!
//! ```
//! use weir_testkit::registry::Registry;
//! let registry = Registry::new();
//! let body = br#"{"schema": "\"string\""}"#;
//! let (status, answer) = registry.handle("POST", "/subjects/names-value/versions", body);
//! assert_eq!((status, answer["id"].as_u64()), (200, Some(1)));
//! let (status, answer) = registry.handle("GET", "/schemas/ids/1", b"");
//! assert_eq!((status, answer["schema"].as_str()), (200, Some("\"string\"")));
//! ```

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_formats::registry::{Schema, SchemaType};

/// Where `scripts/provision` runs the registry and where the examples look for it.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8081";

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 << 10;
/// Largest request body.
const MAX_BODY: usize = 16 << 20;
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    /// Schema `id` is at index `id - 1`.
    schemas: Vec<Schema>,
    /// Each subject's versions: version `v` is at index `v - 1`, holding a schema id.
    subjects: BTreeMap<String, Vec<u32>>,
}

/// The registry's state and its request handler (cheap to share: an `Arc` inside).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    state: Arc<Mutex<State>>,
}

type Answer = (u16, Value);

fn error(status: u16, code: u32, message: impl Into<String>) -> Answer {
    (
        status,
        json!({"error_code": code, "message": message.into()}),
    )
}

fn subject_not_found(subject: &str) -> Answer {
    error(404, 40401, format!("Subject '{subject}' not found."))
}

fn version_not_found(version: &str) -> Answer {
    error(404, 40402, format!("Version {version} not found."))
}

fn schema_not_found() -> Answer {
    error(404, 40403, "Schema not found")
}

/// A schema as `GET /schemas/ids/{id}` shows it (Confluent leaves out `schemaType`
/// for Avro and empty `references`).
fn schema_body(schema: &Schema) -> Value {
    let mut v = json!({ "schema": schema.schema });
    if schema.schema_type != SchemaType::Avro {
        v["schemaType"] = json!(schema.schema_type);
    }
    if !schema.references.is_empty() {
        v["references"] = json!(schema.references);
    }
    v
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer one request: HTTP status and JSON body. `path` may carry a query
    /// string (ignored) and percent-encoded segments.
    pub fn handle(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let path = path.split('?').next().unwrap_or_default();
        let segs: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let mut state = self.state.lock();
        match (method, segs.as_slice()) {
            ("GET", []) => (200, json!({})),
            ("GET", ["schemas", "types"]) => (200, json!(["AVRO", "JSON", "PROTOBUF"])),
            ("GET", ["schemas", "ids", id]) => match state.schema(id) {
                Some(s) => (200, schema_body(s)),
                None => schema_not_found(),
            },
            ("GET", ["schemas", "ids", id, "versions"]) => {
                let Some(id) = id
                    .parse::<u32>()
                    .ok()
                    .filter(|_| state.schema(id).is_some())
                else {
                    return schema_not_found();
                };
                let uses: Vec<Value> = state
                    .subjects
                    .iter()
                    .flat_map(|(subject, ids)| {
                        ids.iter()
                            .enumerate()
                            .filter(move |(_, i)| **i == id)
                            .map(move |(v, _)| json!({"subject": subject, "version": v + 1}))
                    })
                    .collect();
                (200, json!(uses))
            }
            ("GET", ["subjects"]) => (200, json!(state.subjects.keys().collect::<Vec<_>>())),
            ("GET", ["subjects", subject, "versions"]) => match state.subjects.get(*subject) {
                Some(ids) => (200, json!((1..=ids.len()).collect::<Vec<_>>())),
                None => subject_not_found(subject),
            },
            ("GET", ["subjects", subject, "versions", version]) => state
                .version(subject, version)
                .map_or_else(|e| e, |v| (200, v)),
            ("GET", ["subjects", subject, "versions", version, "schema"]) => state
                .version(subject, version)
                .map_or_else(|e| e, |v| (200, v["schema"].clone())),
            ("POST", ["subjects", subject, "versions"]) => match parse_schema(body) {
                Ok(schema) => state.register(subject, schema),
                Err(e) => e,
            },
            ("POST", ["subjects", subject]) => match parse_schema(body) {
                Ok(schema) => state.lookup(subject, &schema),
                Err(e) => e,
            },
            ("DELETE", ["subjects", subject]) => match state.subjects.remove(*subject) {
                Some(ids) => (200, json!((1..=ids.len()).collect::<Vec<_>>())),
                None => subject_not_found(subject),
            },
            ("GET", ["config"]) | ("GET", ["config", _]) => {
                (200, json!({"compatibilityLevel": "NONE"}))
            }
            _ => error(404, 404, format!("no such endpoint: {method} {path}")),
        }
    }
}

impl State {
    fn schema(&self, id: &str) -> Option<&Schema> {
        let index = id.parse::<usize>().ok()?.checked_sub(1)?;
        self.schemas.get(index)
    }

    fn version(&self, subject: &str, version: &str) -> Result<Value, Answer> {
        let ids = self
            .subjects
            .get(subject)
            .ok_or_else(|| subject_not_found(subject))?;
        let index = if version == "latest" {
            ids.len().checked_sub(1)
        } else {
            version.parse::<usize>().ok().and_then(|v| v.checked_sub(1))
        };
        let (index, id) = index
            .and_then(|i| ids.get(i).map(|id| (i, *id)))
            .ok_or_else(|| version_not_found(version))?;
        let schema = self.schema(&id.to_string()).ok_or_else(schema_not_found)?;
        let mut v = schema_body(schema);
        v["subject"] = json!(subject);
        v["version"] = json!(index + 1);
        v["id"] = json!(id);
        Ok(v)
    }

    fn id_of(&self, schema: &Schema) -> Option<u32> {
        let index = self.schemas.iter().position(|s| s == schema)?;
        u32::try_from(index + 1).ok()
    }

    fn register(&mut self, subject: &str, schema: Schema) -> Answer {
        let id = match self.id_of(&schema) {
            Some(id) => id,
            None => {
                let Ok(id) = u32::try_from(self.schemas.len() + 1) else {
                    return error(500, 50001, "too many schemas");
                };
                self.schemas.push(schema);
                id
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        (200, json!({ "id": id }))
    }

    fn lookup(&self, subject: &str, schema: &Schema) -> Answer {
        let Some(ids) = self.subjects.get(subject) else {
            return subject_not_found(subject);
        };
        let found = self
            .id_of(schema)
            .and_then(|id| ids.iter().position(|i| *i == id));
        match found {
            Some(index) => match self.version(subject, &(index + 1).to_string()) {
                Ok(v) => (200, v),
                Err(e) => e,
            },
            None => schema_not_found(),
        }
    }
}

/// The body of a register or lookup request, validated (Avro schemas are parsed).
fn parse_schema(body: &[u8]) -> Result<Schema, Answer> {
    let schema: Schema = serde_json::from_slice(body)
        .map_err(|e| error(422, 42201, format!("Invalid schema request: {e}")))?;
    if schema.schema_type == SchemaType::Avro {
        weir_formats::avro::parse_schema(&schema.schema)
            .map_err(|e| error(422, 42201, format!("Invalid schema: {e}")))?;
    }
    Ok(schema)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serve `registry` on `listener` until the task is dropped: one task per
/// connection, one request per connection (`Connection: close`). Each request is
/// logged to stderr unless `quiet`.
pub async fn serve(listener: TcpListener, registry: Registry, quiet: bool) -> io::Result<()> {
    loop {
        let (conn, peer) = listener.accept().await?;
        let registry = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(conn, peer, &registry, quiet).await {
                if !quiet {
                    eprintln!("weir-registry: {peer}: {e}");
                }
            }
        });
    }
}

async fn read_some(conn: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout(IDLE, conn.read(&mut chunk))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle connection"))??;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn answer(
    mut conn: TcpStream,
    peer: SocketAddr,
    registry: &Registry,
    quiet: bool,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return respond(
                &mut conn,
                431,
                &json!({"error_code": 431, "message": "request head too large"}),
            )
            .await;
        }
        if read_some(&mut conn, &mut buf).await? == 0 {
            return Ok(()); // closed before a whole request
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut content_length = 0usize;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(usize::MAX);
            }
        }
    }
    if content_length > MAX_BODY {
        return respond(
            &mut conn,
            413,
            &json!({"error_code": 413, "message": "request body too large"}),
        )
        .await;
    }
    while buf.len() < head_end + content_length {
        if read_some(&mut conn, &mut buf).await? == 0 {
            return Ok(());
        }
    }
    let body = &buf[head_end..head_end + content_length];
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let (status, answer) = registry.handle(method, path, body);
    if !quiet {
        eprintln!("weir-registry: {peer} {method} {path} -> {status}");
    }
    respond(&mut conn, status, &answer).await
}

async fn respond(conn: &mut TcpStream, status: u16, body: &Value) -> io::Result<()> {
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(r: &Registry, path: &str, schema: &str) -> Answer {
        let body = json!({ "schema": schema }).to_string();
        r.handle("POST", path, body.as_bytes())
    }

    const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"note","type":"string","default":""}]}"#;

    #[test]
    fn register_is_idempotent_and_versions_count_up() {
        let r = Registry::new();
        assert_eq!(post(&r, "/subjects/orders-value/versions", V1).1["id"], 1);
        assert_eq!(post(&r, "/subjects/orders-value/versions", V1).1["id"], 1);
        assert_eq!(post(&r, "/subjects/orders-value/versions", V2).1["id"], 2);
        // the same schema under another subject keeps its id
        assert_eq!(post(&r, "/subjects/other-value/versions", V1).1["id"], 1);
        let (s, v) = r.handle("GET", "/subjects/orders-value/versions", b"");
        assert_eq!((s, v), (200, json!([1, 2])));
        let (s, v) = r.handle("GET", "/subjects/orders-value/versions/latest", b"");
        assert_eq!(s, 200);
        assert_eq!(
            (v["version"].clone(), v["id"].clone()),
            (json!(2), json!(2))
        );
        assert_eq!(v["subject"], "orders-value");
        let (s, v) = r.handle("GET", "/subjects/orders-value/versions/1/schema", b"");
        assert_eq!((s, v), (200, json!(V1)));
        let (_, v) = r.handle("GET", "/schemas/ids/1/versions", b"");
        assert_eq!(
            v,
            json!([{"subject": "orders-value", "version": 1}, {"subject": "other-value", "version": 1}])
        );
        let (s, v) = post(&r, "/subjects/orders-value", V2);
        assert_eq!((s, v["version"].clone()), (200, json!(2)));
    }

    #[test]
    fn errors_carry_confluent_codes() {
        let r = Registry::new();
        let code = |a: Answer| (a.0, a.1["error_code"].as_u64().unwrap_or(0));
        assert_eq!(code(r.handle("GET", "/schemas/ids/1", b"")), (404, 40403));
        assert_eq!(code(r.handle("GET", "/schemas/ids/x", b"")), (404, 40403));
        assert_eq!(
            code(r.handle("GET", "/subjects/a/versions/1", b"")),
            (404, 40401)
        );
        post(&r, "/subjects/a/versions", V1);
        assert_eq!(
            code(r.handle("GET", "/subjects/a/versions/2", b"")),
            (404, 40402)
        );
        assert_eq!(
            code(r.handle("GET", "/subjects/a/versions/0", b"")),
            (404, 40402)
        );
        assert_eq!(
            code(post(&r, "/subjects/a/versions", "{not avro")),
            (422, 42201)
        );
        assert_eq!(
            code(r.handle("POST", "/subjects/a/versions", b"[]")),
            (422, 42201)
        );
        assert_eq!(code(post(&r, "/subjects/a", V2)), (404, 40403));
        assert_eq!(code(r.handle("GET", "/nope", b"")), (404, 404));
    }

    #[test]
    fn subjects_are_percent_decoded_and_deletable() {
        let r = Registry::new();
        post(&r, "/subjects/a%2Fb-value/versions", V1);
        assert_eq!(r.handle("GET", "/subjects", b"").1, json!(["a/b-value"]));
        assert_eq!(
            r.handle("DELETE", "/subjects/a%2Fb-value", b"").1,
            json!([1])
        );
        assert_eq!(r.handle("GET", "/subjects", b"").1, json!([]));
        assert_eq!(r.handle("GET", "/schemas/ids/1", b"").0, 200);
    }

    #[test]
    fn non_avro_schemas_keep_their_type() {
        let r = Registry::new();
        let body = json!({"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\"; message M {}"});
        let (_, v) = r.handle("POST", "/subjects/p/versions", body.to_string().as_bytes());
        let (_, s) = r.handle("GET", &format!("/schemas/ids/{}", v["id"]), b"");
        assert_eq!(s["schemaType"], "PROTOBUF");
    }

    /// The real client against the real server.
    #[tokio::test]
    async fn weirs_client_registers_and_fetches() -> anyhow::Result<()> {
        use weir_formats::framing::SchemaRef;
        use weir_formats::registry::{RegistryConfig, SchemaRegistry};
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(serve(listener, Registry::new(), true));
        let client = SchemaRegistry::new(RegistryConfig::new(&url)?)?;
        let id = client.register("orders-value", &Schema::avro(V1)).await?;
        let fresh = SchemaRegistry::new(RegistryConfig::new(&url)?)?;
        assert_eq!(fresh.schema(SchemaRef::Id(id)).await?.schema, V1);
        let latest = fresh.subject_version("orders-value", None).await?;
        assert_eq!((latest.version, latest.id), (1, id));
        let missing = fresh.schema(SchemaRef::Id(99)).await;
        assert!(missing.is_err_and(|e| !e.is_retriable()));
        server.abort();
        Ok(())
    }
}
