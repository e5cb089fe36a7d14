//! Dynamic Protobuf messages compiled at run time, default and low depth limits.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weir_formats::protobuf::{compile, ProtobufDynamic};
use weir_formats::{Context, Part, SyncDeserializer};

const PROTO: &str = r#"
syntax = "proto3";
package fuzz;
import "google/protobuf/timestamp.proto";
enum Kind { A = 0; B = 1; }
message Node {
  Node child = 1;
  string name = 2;
  int64 n = 3;
  repeated Node children = 4;
  map<string, Node> named = 5;
  bytes raw = 6;
  Kind kind = 7;
  oneof choice { double d = 8; sint32 s = 9; fixed64 f = 10; }
  repeated int32 packed = 11;
  google.protobuf.Timestamp at = 12;
  optional bool flag = 13;
}
"#;

fn decoders() -> &'static (ProtobufDynamic, ProtobufDynamic) {
    static D: OnceLock<(ProtobufDynamic, ProtobufDynamic)> = OnceLock::new();
    D.get_or_init(|| {
        let pool = compile(&[("fuzz.proto", PROTO)]).unwrap();
        let node = pool.get_message_by_name("fuzz.Node").unwrap();
        (
            ProtobufDynamic::new(node.clone()),
            ProtobufDynamic::new(node).with_max_depth(8),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (full, shallow) = decoders();
    let topic = "fuzz".into();
    let ctx = Context::new(&topic, 0, 0, Part::Value);
    let _ = full.decode(Some(data), &ctx);
    let _ = shallow.decode(Some(data), &ctx);
});
