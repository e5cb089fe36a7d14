//! Runs the examples that need no server (embedded log + SQLite) end to end, in a
//! temporary directory, and asserts the examples' own checks.
//!
//! ```text
//! cargo test --test examples_embedded
//! ```

#[path = "../examples/windowed_revenue.rs"]
#[allow(dead_code)]
mod windowed_revenue;

/// Orders out of order within the allowed lateness, one in 1000 later than it, a
/// restart half-way: every window equals the recomputation, every late order is a
/// dead letter (the example fails otherwise).
#[test]
fn windowed_revenue_is_exact_across_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("windowed");
    windowed_revenue::run(["--orders", "6000", "--dir", &path.to_string_lossy()].map(String::from))
}
