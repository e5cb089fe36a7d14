//! Registry-framed Avro: framing (id, GUID, unknown ids) then Avro with resolution.
//! Ids 1 and 2 and GUID ..01 are preloaded; any other reference goes to a registry that
//! is down (127.0.0.1:1, no retries), which must be a transient error, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use weir_formats::avro::{parse_schema, RegistryAvroGeneric, Value};
use weir_formats::framing::SchemaRef;
use weir_formats::registry::{RegistryConfig, Schema, SchemaRegistry};
use weir_formats::{Context, Deserializer, Part};

include!("common.rs");

struct State {
    rt: tokio::runtime::Runtime,
    plain: RegistryAvroGeneric,
    resolving: RegistryAvroGeneric,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = RegistryConfig::new("http://127.0.0.1:1")
            .unwrap()
            .with_max_retries(0)
            .with_request_timeout(std::time::Duration::from_millis(50));
        let registry = Arc::new(SchemaRegistry::new(config).unwrap());
        registry.preload(SchemaRef::Id(1), Schema::avro(WRITER));
        registry.preload(
            SchemaRef::Id(2),
            Schema::avro(r#"{"type":"array","items":["null","long"]}"#),
        );
        registry.preload(
            SchemaRef::Guid(uuid::Uuid::from_u128(1)),
            Schema::avro(r#""string""#),
        );
        let reader = parse_schema(READER).unwrap();
        State {
            plain: RegistryAvroGeneric::new(registry.clone()),
            resolving: RegistryAvroGeneric::new(registry)
                .with_reader_schema(&reader)
                .unwrap(),
            rt,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = state();
    let topic = "fuzz".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    s.rt.block_on(async {
        let a: Result<Value, _> = s.plain.deserialize(Some(data), &ctx).await;
        if let Err(e) = &a {
            // Only an unknown id may be transient (the registry is down).
            if e.is_retriable() {
                assert!(!matches!(
                    weir_formats::framing::parse_prefix(data),
                    Ok((SchemaRef::Id(1 | 2), _))
                ));
            }
        }
        let _: Result<Value, _> = s.resolving.deserialize(Some(data), &ctx).await;
    });
});
