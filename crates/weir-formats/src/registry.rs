//! A client for the Confluent schema-registry REST API (the subset deserializers and
//! serializers need), with a cache, timeouts, retries and redacted credentials.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::framing::SchemaRef;
use crate::{Context, DeserializeError, Error, ErrorKind, Result};

/// Credentials for the registry. `Debug` never prints the secret.
///
/// ```
/// use weir_formats::registry::Auth;
/// let a = Auth::basic("svc", "canary-password");
/// assert!(!format!("{a:?}").contains("canary-password"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum Auth {
    /// HTTP basic authentication (Confluent's `basic.auth.user.info`).
    Basic {
        /// The user name.
        user: String,
        /// The password (never printed).
        password: String,
    },
    /// A bearer token (never printed).
    Bearer(String),
}

impl Auth {
    /// Basic authentication.
    pub fn basic(user: impl Into<String>, password: impl Into<String>) -> Self {
        Auth::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    /// A bearer token.
    pub fn bearer(token: impl Into<String>) -> Self {
        Auth::Bearer(token.into())
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic { user, .. } => {
                write!(f, "Basic {{ user: {user:?}, password: \"<redacted>\" }}")
            }
            Auth::Bearer(_) => f.write_str("Bearer(\"<redacted>\")"),
        }
    }
}

/// Where the registry is and how to talk to it.
///
/// ```
/// use std::time::{Duration, Instant};
/// use weir_formats::registry::{Auth, RegistryConfig};
/// let c = RegistryConfig::new("http://user:canary@127.0.0.1:8081/")
///     .unwrap()
///     .with_request_timeout(Duration::from_secs(2))
///     .with_max_retries(5);
/// assert_eq!(c.url(), "http://127.0.0.1:8081");
/// assert!(!format!("{c:?}").contains("canary"));
/// ```
#[derive(Clone)]
pub struct RegistryConfig {
    url: String,
    auth: Option<Auth>,
    request_timeout: Duration,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

impl RegistryConfig {
    /// A registry at `url` (`http://host:port`, optionally with a path prefix).
    /// Credentials written as `user:password@` are moved into [`Auth::Basic`].
    /// Defaults: 10 s per request, 3 retries, backoff 100 ms doubling up to 5 s.
    ///
    /// weir is built without TLS: an `https://` URL is a configuration error here
    /// (naming the scheme), not a transient failure at the first request.
    ///
    /// ```
    /// use weir_formats::registry::RegistryConfig;
    /// let err = RegistryConfig::new("https://registry.example:8081").unwrap_err();
    /// assert!(err.to_string().contains("`https`"), "{err}");
    /// assert!(RegistryConfig::new("ftp://h").is_err());
    /// ```
    pub fn new(url: impl AsRef<str>) -> Result<Self> {
        let raw = url.as_ref().trim().trim_end_matches('/');
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(Error::Config {
                key: "schema.registry.url".into(),
                reason: "expected http://host:port".into(),
            });
        };
        if scheme == "https" {
            // reqwest is built without a TLS backend (see the workspace Cargo.toml):
            // an https URL would fail at every connection, looking like a registry
            // outage (transient). Say so once, here.
            return Err(Error::Config {
                key: "schema.registry.url".into(),
                reason: "scheme `https` is not supported: this build has no TLS; use \
                         http:// (e.g. through a TLS-terminating proxy on loopback)"
                    .into(),
            });
        }
        if scheme != "http" {
            return Err(Error::Config {
                key: "schema.registry.url".into(),
                reason: format!("unsupported scheme `{scheme}` (expected http)"),
            });
        }
        let (auth, host) = match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some(Auth::basic(user, password)), host)
            }
            _ => (None, rest),
        };
        if host.is_empty() {
            return Err(Error::Config {
                key: "schema.registry.url".into(),
                reason: "no host".into(),
            });
        }
        Ok(Self {
            url: format!("{scheme}://{host}"),
            auth,
            request_timeout: Duration::from_secs(10),
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        })
    }

    /// The base URL, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Authenticate with these credentials.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Give up on one HTTP request after this long (then retry).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Retry a failed request (connection error, timeout, 5xx, 429) this many times.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// First backoff between retries (doubling each time) and its ceiling.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }
}

/// The kind of a registered schema.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    /// Apache Avro (the registry's default when `schemaType` is absent).
    #[default]
    Avro,
    /// Protocol Buffers (`.proto` source).
    Protobuf,
    /// JSON Schema.
    Json,
}

/// A reference from a schema to another registered schema (Protobuf imports, Avro
/// named types).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct SchemaReference {
    /// The name the schema uses (the import path for Protobuf).
    pub name: String,
    /// The subject it is registered under.
    pub subject: String,
    /// The version.
    pub version: i32,
}

/// A schema as the registry stores it.
///
/// ```
/// use weir_formats::registry::{Schema, SchemaType};
/// let s = Schema::avro(r#""string""#);
/// assert_eq!(s.schema_type, SchemaType::Avro);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Schema {
    /// Its type.
    #[serde(rename = "schemaType", default)]
    pub schema_type: SchemaType,
    /// The schema text (Avro JSON, `.proto` source or JSON Schema).
    pub schema: String,
    /// References to other schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
}

impl Schema {
    /// An Avro schema (JSON text).
    pub fn avro(text: impl Into<String>) -> Self {
        Self::new(SchemaType::Avro, text)
    }

    /// A Protobuf schema (`.proto` source).
    pub fn protobuf(text: impl Into<String>) -> Self {
        Self::new(SchemaType::Protobuf, text)
    }

    /// A JSON Schema.
    pub fn json(text: impl Into<String>) -> Self {
        Self::new(SchemaType::Json, text)
    }

    fn new(schema_type: SchemaType, text: impl Into<String>) -> Self {
        Self {
            schema_type,
            schema: text.into(),
            references: Vec::new(),
        }
    }
}

/// A version of a subject.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version number.
    pub version: i32,
    /// The schema id.
    pub id: u32,
    /// The schema.
    #[serde(flatten)]
    pub schema: Schema,
}

#[derive(Deserialize)]
struct RegisterResponse {
    id: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

type Slot = Arc<OnceCell<Arc<Schema>>>;

/// A remembered "not found": when, HTTP status, Confluent error code, message.
type Miss = (Instant, u16, Option<i64>, String);

/// A schema-registry client.
///
/// Schemas are cached by id (and GUID) for the life of the client: however many records
/// carry an id, it is fetched once, and concurrent first requests for the same id share
/// one fetch. Failed fetches are not cached, except that "schema not found" is
/// remembered for a minute (so that poison records with random ids do not each send a
/// request). Requests time out, and connection errors,
/// timeouts, 429 and 5xx answers are retried with exponential backoff; after the last
/// retry the error is [transient](Error::is_transient). A 404 for an id is permanent.
///
/// ```
/// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
/// let registry = SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081").unwrap()).unwrap();
/// assert_eq!(registry.http_requests(), 0);
/// ```
pub struct SchemaRegistry {
    config: RegistryConfig,
    http: reqwest::Client,
    by_ref: Mutex<crate::framing::SchemaMap<Slot>>,
    misses: Mutex<HashMap<SchemaRef, Miss>>,
    by_version: Mutex<HashMap<(String, i32), Slot>>,
    registered: Mutex<HashMap<(String, Schema), u32>>,
    requests: AtomicU64,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("config", &self.config)
            .field("cached", &self.by_ref.lock().len())
            .finish()
    }
}

/// How long a "schema not found" answer is remembered.
const MISS_TTL: Duration = Duration::from_secs(60);
/// At most this many remembered misses (the set is cleared when full).
const MAX_REMEMBERED_MISSES: usize = 10_000;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Percent-encode a path segment (subjects may contain `/`, spaces, ...).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl SchemaRegistry {
    /// A shared client for the registry at `url` with the default settings (the
    /// deserializers' `from_url` use it).
    ///
    /// ```
    /// let registry = weir_formats::registry::SchemaRegistry::from_url("http://127.0.0.1:8081")?;
    /// assert!(weir_formats::registry::SchemaRegistry::from_url("registry:8081").is_err());
    /// # drop(registry);
    /// # Ok::<(), weir_formats::Error>(())
    /// ```
    pub fn from_url(url: impl AsRef<str>) -> Result<Arc<Self>> {
        Ok(Arc::new(Self::new(RegistryConfig::new(url)?)?))
    }

    /// A client for the registry described by `config`.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .build()
            .map_err(|e| Error::Config {
                key: "schema.registry.url".into(),
                reason: e.without_url().to_string(),
            })?;
        Ok(Self {
            config,
            http,
            by_ref: Mutex::new(crate::framing::SchemaMap::default()),
            misses: Mutex::new(HashMap::new()),
            by_version: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// How many HTTP requests this client has sent (including retries): proves caching.
    pub fn http_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Put a schema in the cache as if it had been fetched: for tests, fuzzing and
    /// offline use (a schema shipped with the job). An id already cached is kept.
    ///
    /// ```
    /// use weir_formats::framing::SchemaRef;
    /// use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
    /// let registry = SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:1").unwrap()).unwrap();
    /// registry.preload(SchemaRef::Id(1), Schema::avro(r#""long""#));
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// assert_eq!(registry.schema(SchemaRef::Id(1)).await.unwrap().schema, r#""long""#);
    /// assert_eq!(registry.http_requests(), 0);
    /// # });
    /// ```
    pub fn preload(&self, schema: SchemaRef, value: Schema) {
        let slot = self.by_ref.lock().entry(schema).or_default().clone();
        let _already = slot.set(Arc::new(value));
    }

    /// The schema with this id or GUID (`GET /schemas/ids/{id}`,
    /// `GET /schemas/guids/{guid}`), cached.
    ///
    /// ```no_run
    /// use weir_formats::framing::SchemaRef;
    /// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
    /// # async fn f() -> weir_formats::Result<()> {
    /// let registry = SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?;
    /// let schema = registry.schema(SchemaRef::Id(1)).await?; // one request
    /// let again = registry.schema(SchemaRef::Id(1)).await?; // from the cache
    /// assert_eq!(schema, again);
    /// # Ok(()) }
    /// ```
    pub async fn schema(&self, schema: SchemaRef) -> Result<Arc<Schema>> {
        if let Some(e) = self.known_miss(schema) {
            return Err(e);
        }
        let slot = self.by_ref.lock().entry(schema).or_default().clone();
        let got = slot
            .get_or_try_init(|| async {
                let path = match schema {
                    SchemaRef::Id(id) => format!("/schemas/ids/{id}"),
                    SchemaRef::Guid(g) => format!("/schemas/guids/{}", g.hyphenated()),
                };
                let body = self.request(reqwest::Method::GET, &path, None).await?;
                let s: Schema = serde_json::from_slice(&body).map_err(|e| Error::Registry {
                    status: 200,
                    error_code: None,
                    reason: format!("unreadable answer for {schema}: {e}"),
                })?;
                Ok::<_, Error>(Arc::new(s))
            })
            .await;
        match got {
            Ok(s) => Ok(s.clone()),
            Err(e) => {
                self.forget(schema, &slot, &e);
                Err(e)
            }
        }
    }

    /// After a failed fetch: drop the empty slot (so that ids seen only in poison
    /// records do not accumulate), and remember "not found" for a while so that a
    /// stream of records with unknown ids does not become a stream of requests.
    fn forget(&self, schema: SchemaRef, slot: &Slot, e: &Error) {
        if slot.get().is_none() {
            let mut map = self.by_ref.lock();
            if map.get(&schema).is_some_and(|s| s.get().is_none()) {
                map.remove(&schema);
            }
        }
        if let Error::Registry {
            status: 404,
            error_code: code @ Some(40401..=40403),
            reason,
        } = e
        {
            let mut misses = self.misses.lock();
            if misses.len() >= MAX_REMEMBERED_MISSES {
                misses.clear();
            }
            misses.insert(schema, (Instant::now(), 404, *code, reason.clone()));
        }
    }

    fn known_miss(&self, schema: SchemaRef) -> Option<Error> {
        let mut misses = self.misses.lock();
        let (at, status, error_code, reason) = misses.get(&schema)?;
        if at.elapsed() > MISS_TTL {
            misses.remove(&schema);
            return None;
        }
        Some(Error::Registry {
            status: *status,
            error_code: *error_code,
            reason: format!("{reason} (remembered)"),
        })
    }

    /// A version of a subject (`GET /subjects/{subject}/versions/{version}`); `None`
    /// asks for the latest. Not cached: every call sends a request (only the schemas
    /// that other schemas reference are cached, by subject and version, internally).
    ///
    /// ```no_run
    /// use weir_formats::registry::{RegistryConfig, SchemaRegistry};
    /// # async fn f() -> weir_formats::Result<()> {
    /// let registry = SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?;
    /// let latest = registry.subject_version("orders-value", None).await?;
    /// let v1 = registry.subject_version("orders-value", Some(1)).await?;
    /// assert!(latest.version >= v1.version);
    /// # Ok(()) }
    /// ```
    pub async fn subject_version(
        &self,
        subject: &str,
        version: Option<i32>,
    ) -> Result<SubjectVersion> {
        let v = version.map_or_else(|| "latest".to_string(), |v| v.to_string());
        let path = format!("/subjects/{}/versions/{v}", encode_segment(subject));
        let body = self.request(reqwest::Method::GET, &path, None).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Registry {
            status: 200,
            error_code: None,
            reason: format!("unreadable answer for subject `{subject}` version {v}: {e}"),
        })
    }

    /// The schema of a subject version, cached by (subject, version).
    pub(crate) async fn referenced(&self, subject: &str, version: i32) -> Result<Arc<Schema>> {
        let slot = self
            .by_version
            .lock()
            .entry((subject.to_string(), version))
            .or_default()
            .clone();
        let got = slot
            .get_or_try_init(|| async {
                let v = self.subject_version(subject, Some(version)).await?;
                Ok::<_, Error>(Arc::new(v.schema))
            })
            .await?;
        Ok(got.clone())
    }

    /// Register `schema` under `subject` (`POST /subjects/{subject}/versions`) and return
    /// its id; cached, so registering the same schema again sends nothing.
    ///
    /// ```no_run
    /// use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
    /// # async fn f() -> weir_formats::Result<()> {
    /// let registry = SchemaRegistry::new(RegistryConfig::new("http://127.0.0.1:8081")?)?;
    /// let id = registry.register("orders-value", &Schema::avro(r#""string""#)).await?;
    /// assert_eq!(registry.register("orders-value", &Schema::avro(r#""string""#)).await?, id);
    /// # Ok(()) }
    /// ```
    pub async fn register(&self, subject: &str, schema: &Schema) -> Result<u32> {
        let key = (subject.to_string(), schema.clone());
        if let Some(id) = self.registered.lock().get(&key) {
            return Ok(*id);
        }
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        let body = serde_json::to_vec(schema).map_err(Error::serialize)?;
        let answer = self
            .request(reqwest::Method::POST, &path, Some(body))
            .await?;
        let r: RegisterResponse = serde_json::from_slice(&answer).map_err(|e| Error::Registry {
            status: 200,
            error_code: None,
            reason: format!("unreadable answer registering under `{subject}`: {e}"),
        })?;
        self.registered.lock().insert(key, r.id);
        Ok(r.id)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.config.url);
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 0u32;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("Accept", CONTENT_TYPE);
            if let Some(b) = &body {
                req = req.header("Content-Type", CONTENT_TYPE).body(b.clone());
            }
            req = match &self.config.auth {
                Some(Auth::Basic { user, password }) => req.basic_auth(user, Some(password)),
                Some(Auth::Bearer(token)) => req.bearer_auth(token),
                None => req,
            };
            let outcome: std::result::Result<(), String> = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Ok(bytes) if status.is_success() => return Ok(bytes.to_vec()),
                        Ok(_) if status.is_server_error() || status.as_u16() == 429 => {
                            Err(format!("{method} {path}: HTTP {}", status.as_u16()))
                        }
                        Ok(bytes) => {
                            let parsed: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
                            let (error_code, message) = parsed
                                .map(|b| (b.error_code, b.message))
                                .unwrap_or((None, None));
                            return Err(Error::Registry {
                                status: status.as_u16(),
                                error_code,
                                reason: format!(
                                    "{method} {path}: {}",
                                    message.unwrap_or_else(|| "no message".into())
                                ),
                            });
                        }
                        Err(e) => Err(format!(
                            "{method} {path}: reading the answer: {}",
                            e.without_url()
                        )),
                    }
                }
                Err(e) => Err(format!("{method} {path}: {}", e.without_url())),
            };
            if let Err(reason) = outcome {
                if attempt >= self.config.max_retries {
                    return Err(Error::RegistryUnavailable {
                        reason: format!("{reason} (after {} attempts)", attempt + 1),
                    });
                }
                tracing::debug!(attempt, %reason, "schema registry request failed, retrying");
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
    }
}

/// Turn a registry error met while decoding into a record error. Only Confluent's
/// "not found" answers (404 with error code 40401..40403) say something about the
/// record (its id is unknown): permanent. Everything else the registry answers —
/// unreachable, authentication problems, a bare 404 or other 4xx, a 200 whose body is
/// not a schema (a wrong URL pointing at another server) — is not the record's fault:
/// transient, so that good records are never dead-lettered for a registry problem.
pub(crate) fn to_deserialize_error(
    e: Error,
    schema: SchemaRef,
    ctx: &Context<'_>,
) -> DeserializeError {
    let kind = match &e {
        // Confluent answers 404 with error code 40403 (schema), 40401 (subject) or 40402
        // (version). A bare 404 means a wrong URL, not a bad record: transient.
        Error::Registry {
            status: 404,
            error_code: Some(40401..=40403),
            ..
        } => ErrorKind::UnknownSchema,
        Error::Registry { .. } | Error::RegistryUnavailable { .. } => {
            ErrorKind::RegistryUnavailable
        }
        Error::Schema { .. } => ErrorKind::SchemaMismatch,
        _ => ErrorKind::RegistryUnavailable,
    };
    ctx.error(kind, format!("writer schema {schema}: {e}"))
        .with_source(e)
}

/// Registry subject for `topic` and `part` under Confluent's TopicNameStrategy:
/// `<topic>-key` / `<topic>-value`.
///
/// ```
/// use weir_formats::{registry::topic_subject, Part};
/// assert_eq!(topic_subject("orders", Part::Value), "orders-value");
/// ```
pub fn topic_subject(topic: &str, part: crate::Part) -> String {
    format!("{topic}-{part}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_validation_and_credentials() {
        assert!(RegistryConfig::new("localhost:8081").is_err());
        assert!(RegistryConfig::new("ftp://h").is_err());
        assert!(RegistryConfig::new("http://").is_err());
        let tls = RegistryConfig::new("https://u:secret-pw@h:1").unwrap_err();
        assert!(
            matches!(&tls, Error::Config { key, reason } if key == "schema.registry.url" && reason.contains("`https`")),
            "{tls}"
        );
        assert!(!tls.to_string().contains("secret-pw"));
        let c = RegistryConfig::new(" http://u:secret-pw@h:1/prefix/ ").unwrap();
        assert_eq!(c.url(), "http://h:1/prefix");
        assert!(
            matches!(&c.auth, Some(Auth::Basic { user, password }) if user == "u" && password == "secret-pw")
        );
        assert!(!format!("{c:?}").contains("secret-pw"));
        assert!(!format!("{:?}", Auth::bearer("tok-secret")).contains("tok-secret"));
    }

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(encode_segment("a/b c-d_e.f~"), "a%2Fb%20c-d_e.f~");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn schema_json_shape() {
        let s: Schema = serde_json::from_str(r#"{"schema":"\"long\""}"#).unwrap();
        assert_eq!(s.schema_type, SchemaType::Avro);
        let s: Schema = serde_json::from_str(
            r#"{"schemaType":"PROTOBUF","schema":"syntax","references":[{"name":"a.proto","subject":"a","version":2}]}"#,
        )
        .unwrap();
        assert_eq!(s.schema_type, SchemaType::Protobuf);
        assert_eq!(s.references[0].version, 2);
        let out = serde_json::to_string(&Schema::json("{}")).unwrap();
        assert_eq!(out, r#"{"schemaType":"JSON","schema":"{}"}"#);
    }

    #[test]
    fn registry_errors_map_to_permanence() {
        let topic: Arc<str> = "t".into();
        let ctx = Context::new(&topic, 0, 0, crate::Part::Value);
        let kind = |e: Error| to_deserialize_error(e, SchemaRef::Id(1), &ctx).kind();
        let reg = |status, code| Error::Registry {
            status,
            error_code: code,
            reason: String::new(),
        };
        assert_eq!(kind(reg(404, Some(40403))), ErrorKind::UnknownSchema);
        assert_eq!(kind(reg(404, None)), ErrorKind::RegistryUnavailable);
        assert_eq!(kind(reg(401, None)), ErrorKind::RegistryUnavailable);
        // Other client errors and unreadable 200 answers are not the record's fault.
        assert_eq!(kind(reg(400, None)), ErrorKind::RegistryUnavailable);
        assert_eq!(kind(reg(422, Some(42201))), ErrorKind::RegistryUnavailable);
        assert_eq!(kind(reg(200, None)), ErrorKind::RegistryUnavailable);
        assert_eq!(
            kind(Error::RegistryUnavailable {
                reason: String::new()
            }),
            ErrorKind::RegistryUnavailable
        );
        assert_eq!(kind(Error::schema("x")), ErrorKind::SchemaMismatch);
    }
}
