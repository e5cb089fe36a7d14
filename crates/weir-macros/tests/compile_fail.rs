//! `#[derive(Row)]` refuses what it cannot map, with an error at the offending item.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
