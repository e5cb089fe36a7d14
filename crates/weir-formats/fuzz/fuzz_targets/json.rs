//! JSON into `serde_json::Value` and into a typed struct, default and low depth limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_formats::{Context, Json, Part, SyncDeserializer};

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Order {
    id: u64,
    item: String,
    tags: Vec<String>,
    nested: Option<Box<Order>>,
}

fuzz_target!(|data: &[u8]| {
    let topic = "fuzz".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    let _ = SyncDeserializer::<serde_json::Value>::decode(&Json::new(), Some(data), &ctx);
    let _ = SyncDeserializer::<Order>::decode(&Json::new(), Some(data), &ctx);
    let _ = SyncDeserializer::<serde_json::Value>::decode(
        &Json::new().with_max_depth(8),
        Some(data),
        &ctx,
    );
});
