//! Named crash points for the kill -9 tests.
//!
//! Compiled to nothing unless the crate feature `failpoints` is on. With it, the
//! environment variable `WEIR_FAILPOINT=name:probability[,name:probability...]`
//! (`*` matches every name) makes the process kill itself with `SIGKILL` when it
//! passes a named point, with that probability. Names: `after_poll`,
//! `after_sink_write`, `during_dlq_write`, `after_offset_update`,
//! `after_commit_sent` (the kill races the `COMMIT` on the wire), `after_commit`,
//! `between_claim_and_assign`.

/// Every failpoint name.
pub const NAMES: &[&str] = &[
    "after_poll",
    "after_sink_write",
    "during_dlq_write",
    "after_offset_update",
    "after_commit_sent",
    "after_commit",
    "between_claim_and_assign",
];

#[cfg(feature = "failpoints")]
mod imp {
    use std::sync::OnceLock;

    fn config() -> &'static Vec<(String, f64)> {
        static CONFIG: OnceLock<Vec<(String, f64)>> = OnceLock::new();
        CONFIG.get_or_init(|| {
            std::env::var("WEIR_FAILPOINT")
                .unwrap_or_default()
                .split(',')
                .filter_map(|item| {
                    let (name, p) = item.trim().split_once(':')?;
                    Some((name.to_owned(), p.parse().ok()?))
                })
                .collect()
        })
    }

    fn probability(name: &str) -> f64 {
        config()
            .iter()
            .filter(|(n, _)| n == name || n == "*")
            .map(|(_, p)| *p)
            .fold(0.0, f64::max)
    }

    fn die(name: &str) -> ! {
        eprintln!("weir failpoint {name}: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort()
    }

    pub fn hit(name: &str) {
        let p = probability(name);
        if p > 0.0 && rand::random::<f64>() < p {
            die(name);
        }
    }

    pub fn hit_soon(name: &str) {
        let p = probability(name);
        if p > 0.0 && rand::random::<f64>() < p {
            let name = name.to_owned();
            let delay = std::time::Duration::from_micros(rand::random_range(0..3000));
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                die(&name);
            });
        }
    }
}

/// Pass the failpoint `name`: with `failpoints` on and armed, the process dies here.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    imp::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Like [`hit`], but the kill comes from another thread within 3 ms, racing
/// whatever this thread does next (a `COMMIT` in flight).
#[inline]
pub fn hit_soon(name: &str) {
    #[cfg(feature = "failpoints")]
    imp::hit_soon(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
