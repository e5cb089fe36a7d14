//! # weir-formats
//!
//! Typed deserializers (and serializers) for the keys and values of records: what a
//! weir pipeline plugs onto a [`Record`](weir_core::Record) between the consumer and the
//! operators. Standard formats only, decoded by their standard libraries:
//!
//! | format | deserializers | library |
//! |---|---|---|
//! | Kafka primitives | [`Utf8`], [`ByteArray`], [`I32`], [`I64`], [`F32`], [`F64`], [`UuidFormat`], [`Nullable`] | — |
//! | JSON | [`Json`] (any `T: DeserializeOwned`, `serde_json::Value`), [`json::RegistryJson`] | serde_json |
//! | Avro | [`avro::Avro`], [`avro::AvroGeneric`], [`avro::RegistryAvro`], [`avro::RegistryAvroGeneric`] | apache-avro |
//! | Protobuf | [`protobuf::Protobuf`], [`protobuf::ProtobufDynamic`], [`protobuf::RegistryProtobuf`], [`protobuf::RegistryProtobufTyped`] | prost, prost-reflect, protox |
//!
//! Schema-registry wire formats (`0x00` + id, `0x01` + GUID, Protobuf message indexes,
//! ids in headers) are in [`framing`]; the registry client (cache, timeouts, retries,
//! redacted credentials) in [`registry`].
//!
//! ## Errors: permanent or transient
//! Every failure is a [`DeserializeError`] naming the record (topic, partition, offset),
//! the part (key or value) and an [`ErrorKind`]. [`DeserializeError::is_permanent`] says
//! the bytes are poison (dead-letter the record); a transient error (the registry is
//! unreachable) means pause and retry, never dead-letter. Bad input never panics and
//! never allocates more than the configured limits: sizes ([`DEFAULT_MAX_BYTES`] and
//! `with_max_bytes`), nesting (JSON 128, Protobuf 100 or lower), Avro's allocation limit
//! ([`avro::max_allocation_bytes`]).
//!
//! ```
//! use weir_core::{Bytes, Record};
//! use weir_formats::{Json, Nullable, SyncDeserializer, Utf8};
//!
//! #[derive(Debug, serde::Deserialize)]
//! struct Order { id: u64 }
//!
//! let good = Record::new("orders", 0, 1, None, Some(Bytes::from_static(br#"{"id":7}"#)));
//! let order: Order = Json::new().decode_value(&good).unwrap();
//! assert_eq!(order.id, 7);
//! assert_eq!(Nullable(Utf8).decode_key(&good).unwrap(), None);
//!
//! let poison = Record::new("orders", 0, 2, None, Some(Bytes::from_static(b"{\"id\":")));
//! let err = SyncDeserializer::<Order>::decode_value(&Json::new(), &poison).unwrap_err();
//! assert!(!err.is_retriable()); // poison: a dead letter
//! assert_eq!(err.coordinates().to_string(), "orders/0@2");
//! ```
//!
//! [`Deserializer`] is the async trait a pipeline uses (registry-backed deserializers
//! fetch a schema on first sight of its id; afterwards the future is ready at once).
//! Everything that needs no I/O also implements [`SyncDeserializer`], usable without a
//! runtime. [`Nullable`] wraps either kind to make Kafka's null an explicit `None`.
//!
//! ## Performance
//! Schemas are parsed and resolved once (per fixed schema, per registry id), never per
//! record; decoding borrows the record's bytes. `benches/decode.rs` decodes the same
//! ~100-byte records through weir and through serde_json, apache-avro (cached reader)
//! and prost directly, and prints the throughput ratios:
//!
//! ```text
//! cargo bench -p weir-formats --bench decode -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! ## Fuzzing
//! `crates/weir-formats/fuzz` holds cargo-fuzz targets (`framing`, `json`, `avro`,
//! `protobuf_dynamic`, `registry_avro`) and their corpora (`fuzz/corpus/<target>`); the
//! fuzz crate is outside the workspace and not part of `cargo test`. Run one for five
//! minutes with (cargo-fuzz needs nightly features; `RUSTC_BOOTSTRAP=1` enables them on
//! a stable compiler; `-s none` skips AddressSanitizer, which safe Rust does not need,
//! for more executions):
//!
//! ```text
//! cargo install cargo-fuzz
//! cd crates/weir-formats
//! RUSTC_BOOTSTRAP=1 cargo fuzz run -s none avro -- -max_total_time=300 -rss_limit_mb=2048
//! RUSTC_BOOTSTRAP=1 cargo fuzz cmin -s none avro   # keep the committed corpus small
//! ```
#![warn(missing_docs)]

pub mod avro;
mod context;
mod error;
pub mod framing;
pub mod json;
mod primitives;
pub mod protobuf;
pub mod registry;
mod traits;

pub use context::Context;
pub use error::{DeserializeError, Error, ErrorKind, Part, Permanence, Result};
pub use json::Json;
pub use primitives::{ByteArray, Nullable, Utf8, UuidFormat, F32, F64, I32, I64};
pub use traits::{Deserializer, Serializer, SyncDeserializer, SyncSerializer, DEFAULT_MAX_BYTES};
