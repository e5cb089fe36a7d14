//! Test helper for weir-log's crash-consistency and lock tests (not a user tool).
fn main() {}
