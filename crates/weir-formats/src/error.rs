//! Errors: [`DeserializeError`] for one record's key or value, [`Error`] for everything
//! else (schemas, the registry client, serializers).

use std::fmt;

use weir_core::Coordinates;

/// A boxed error cause.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which part of a record an error is about.
///
/// ```
/// assert_eq!(weir_formats::Part::Key.to_string(), "key");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Part {
    /// The record's key.
    Key,
    /// The record's value.
    Value,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Key => "key",
            Part::Value => "value",
        })
    }
}

/// What the caller does with a failed record.
///
/// ```
/// use weir_formats::Permanence;
/// assert_ne!(Permanence::Permanent, Permanence::Transient);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Permanence {
    /// The bytes themselves are bad ("poison"): retrying gives the same result. Route the
    /// record to the dead letters and go on.
    Permanent,
    /// Something outside the record failed (the schema registry is unreachable or slow):
    /// the same bytes may decode later. Pause the partition and retry; never dead-letter.
    Transient,
}

/// Why a key or value could not be decoded.
///
/// ```
/// use weir_formats::{ErrorKind, Permanence};
/// assert_eq!(ErrorKind::RegistryUnavailable.permanence(), Permanence::Transient);
/// assert_eq!(ErrorKind::Malformed.permanence(), Permanence::Permanent);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key or value is Kafka's null but the deserializer does not accept null (wrap it
    /// in [`Nullable`](crate::Nullable)).
    Null,
    /// Bytes that are not what the format says: truncated, bad varint, bad length, bad
    /// union index, bad wire type, trailing bytes, syntax errors.
    Malformed,
    /// Text that is not valid UTF-8.
    InvalidUtf8,
    /// Well-formed data of the wrong shape: a JSON string where a number is expected, a
    /// Protobuf field of the wrong type for the descriptor.
    WrongType,
    /// Nested deeper than the configured limit.
    TooDeep,
    /// Larger than the configured maximum size (or than the Avro allocation limit).
    TooLarge,
    /// The schema-registry framing is wrong: too short, unknown magic byte, bad message
    /// index array.
    Framing,
    /// The schema id (or GUID) in the framing is not known to the registry.
    UnknownSchema,
    /// The writer's schema cannot be read with the reader's schema, or a Protobuf message
    /// index points to no message.
    SchemaMismatch,
    /// The schema registry could not be reached, timed out or answered with a server
    /// error. The only transient kind.
    RegistryUnavailable,
}

impl ErrorKind {
    /// Whether errors of this kind are poison (permanent) or worth retrying (transient).
    pub fn permanence(self) -> Permanence {
        match self {
            ErrorKind::RegistryUnavailable => Permanence::Transient,
            _ => Permanence::Permanent,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Null => "null",
            ErrorKind::Malformed => "malformed",
            ErrorKind::InvalidUtf8 => "invalid UTF-8",
            ErrorKind::WrongType => "wrong type",
            ErrorKind::TooDeep => "nested too deep",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Framing => "bad schema-registry framing",
            ErrorKind::UnknownSchema => "unknown schema",
            ErrorKind::SchemaMismatch => "schema mismatch",
            ErrorKind::RegistryUnavailable => "schema registry unavailable",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record's key or value could not be decoded.
///
/// Carries the record's coordinates, which part failed, a [`ErrorKind`] and whether the
/// failure is [permanent](Self::is_permanent) (route the record to the dead letters) or
/// transient (retry later, never dead-letter).
///
/// ```
/// use weir_formats::{Context, ErrorKind, Part, SyncDeserializer, I32};
/// let topic = "orders".into();
/// let ctx = Context::new(&topic, 2, 41, Part::Value);
/// let err = I32.decode(Some(&b"abc"[..]), &ctx).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Malformed);
/// assert!(!err.is_retriable());
/// assert_eq!(err.coordinates().to_string(), "orders/2@41");
/// assert!(err.to_string().starts_with("value of orders/2@41"));
/// ```
#[derive(Debug)]
pub struct DeserializeError(Box<Inner>);

impl fmt::Display for DeserializeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DeserializeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// Boxed so that `Result<T, DeserializeError>` stays small on the hot path.
#[derive(Debug, thiserror::Error)]
#[error("{part} of {at}: {kind}: {detail}")]
struct Inner {
    at: Coordinates,
    part: Part,
    kind: ErrorKind,
    detail: String,
    #[source]
    source: Option<BoxError>,
}

impl DeserializeError {
    /// An error about `part` of the record at `at`.
    pub fn new(at: Coordinates, part: Part, kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            at,
            part,
            kind,
            detail: detail.into(),
            source: None,
        }))
    }

    /// Attach the underlying cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// The record's topic, partition and offset.
    pub fn coordinates(&self) -> &Coordinates {
        &self.0.at
    }

    /// Key or value.
    pub fn part(&self) -> Part {
        self.0.part
    }

    /// Why it failed.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// A human-readable description (never the payload itself).
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// Permanent or transient.
    pub fn permanence(&self) -> Permanence {
        self.0.kind.permanence()
    }

    /// `true` for poison: route the record to the dead letters.
    #[deprecated(
        since = "0.1.0",
        note = "use `!is_retriable()`: weir's one word for retryability"
    )]
    pub fn is_permanent(&self) -> bool {
        self.permanence() == Permanence::Permanent
    }

    /// `true` when retrying later may succeed (registry unavailable): pause, never
    /// dead-letter. Same as [`is_retriable`](Self::is_retriable).
    #[deprecated(
        since = "0.1.0",
        note = "use `is_retriable()`: weir's one word for retryability"
    )]
    pub fn is_transient(&self) -> bool {
        self.permanence() == Permanence::Transient
    }

    /// `true` when retrying later may succeed (registry unavailable): pause the
    /// partition and retry, never dead-letter. weir's one word for retryability
    /// (`weir_core::Error::is_retriable`, `weir_sql::Error::is_retriable`).
    ///
    /// ```
    /// use weir_formats::{Json, SyncDeserializer};
    /// let r = weir_core::Record::new("t", 0, 7, None, Some(weir_core::Bytes::from_static(b"{")));
    /// let e = SyncDeserializer::<serde_json::Value>::decode_value(&Json::new(), &r).unwrap_err();
    /// assert!(!e.is_retriable()); // poison: a dead letter
    /// ```
    pub fn is_retriable(&self) -> bool {
        self.permanence() == Permanence::Transient
    }
}

/// Errors that are not about one record: bad schemas, registry client failures outside
/// decoding, serializer failures, configuration.
///
/// ```
/// let e = weir_formats::Error::Config { key: "url".into(), reason: "empty".into() };
/// assert_eq!(e.to_string(), "invalid configuration `url`: empty");
/// assert!(!e.is_retriable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A schema (Avro JSON, `.proto` source, JSON Schema) could not be parsed or compiled.
    #[error("invalid schema: {reason}")]
    Schema {
        /// What is wrong.
        reason: String,
    },
    /// A value could not be serialized.
    #[error("cannot serialize: {reason}")]
    Serialize {
        /// What is wrong.
        reason: String,
    },
    /// The schema registry could not be reached, timed out or answered 5xx after the
    /// configured retries. Retry later.
    #[error("schema registry unavailable: {reason}")]
    RegistryUnavailable {
        /// What happened (never credentials).
        reason: String,
    },
    /// The registry answered with a client error (e.g. 404 unknown schema, 422 invalid
    /// schema).
    #[error("schema registry answered {status}: {reason}")]
    Registry {
        /// HTTP status.
        status: u16,
        /// Confluent `error_code`, when given.
        error_code: Option<i64>,
        /// The registry's message.
        reason: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Whether retrying later may succeed.
    #[deprecated(
        since = "0.1.0",
        note = "use `is_retriable()`: weir's one word for retryability"
    )]
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::RegistryUnavailable { .. })
    }

    /// Whether retrying later may succeed (weir's one word for it; same as
    /// [`is_transient`](Self::is_transient)).
    ///
    /// ```
    /// let e = weir_formats::Error::RegistryUnavailable { reason: "connection refused".into() };
    /// assert!(e.is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::RegistryUnavailable { .. })
    }

    pub(crate) fn schema(reason: impl fmt::Display) -> Self {
        Error::Schema {
            reason: reason.to_string(),
        }
    }

    pub(crate) fn serialize(reason: impl fmt::Display) -> Self {
        Error::Serialize {
            reason: reason.to_string(),
        }
    }
}

/// A specialised `Result` for this crate's non-record operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
