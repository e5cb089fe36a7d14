//! The schema-registry framing parser: prefix, Protobuf message indexes, header ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_core::Header;
use weir_formats::framing::{locate, parse_message_indexes, parse_prefix};
use weir_formats::{Context, Part};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, rest)) = parse_prefix(data) {
        let _ = parse_message_indexes(rest);
    }
    let topic = "fuzz".into();
    // The first byte chooses whether the frame is also sent as a header.
    let (use_header, data) = match data.split_first() {
        Some((b, rest)) => (b & 1 == 1, rest),
        None => (false, data),
    };
    let headers = if use_header {
        let cut = data.len() / 2;
        vec![Header::new("__value_schema_id", data[..cut].to_vec())]
    } else {
        Vec::new()
    };
    let ctx = Context::new(&topic, 0, 0, Part::Value).with_headers(&headers);
    if let Ok(located) = locate(data, &ctx) {
        let _ = located.payload(data);
        let _ = located.protobuf(data, &ctx);
    }
});
