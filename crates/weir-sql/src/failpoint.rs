//! Named fault points for the crash and fault tests.
//!
//! Compiled to nothing unless the crate feature `failpoints` is on. With it, the
//! environment variable `WEIR_FAILPOINT=name:probability[:action][,...]` (`*` matches
//! every kill/stop point in [`NAMES`], not `commit_outcome`), or `configure` from a
//! test, arms points. An item that does not parse, or names an unknown point or
//! action, is reported on stderr and ignored. When the process passes an
//! armed point, with that probability, the action happens:
//!
//! - `kill` (the default): the process kills itself with `SIGKILL`.
//! - `stop`: the process stops itself with `SIGSTOP` (once per process; a test sends
//!   `SIGCONT`). Used for the paused zombie: a member frozen with its transaction open.
//! - `lose_reply` (at `commit_outcome` only): the `COMMIT` is sent and succeeds, then
//!   the runner is told the connection dropped, as when the reply is lost on the wire.
//! - `lose_commit` (at `commit_outcome` only): the transaction is rolled back and the
//!   runner is told the connection dropped, as when the `COMMIT` never arrived.
//!
//! Kill and stop points: `after_poll`, `after_sink_write`, `during_dlq_write`,
//! `after_offset_update`, `after_commit_sent` (kill only: the kill races the `COMMIT`
//! on the wire), `after_commit`, `between_claim_and_assign`, `during_dlq_write` (after
//! the dead letters' statements, before the `COMMIT`). Outcome point: `commit_outcome`.
//!
//! ```
//! // Every name a kill or stop can be armed at.
//! assert!(weir_sql::failpoint::NAMES.contains(&"after_sink_write"));
//! ```

/// Every point a `kill` or `stop` can be armed at.
pub const NAMES: &[&str] = &[
    "after_poll",
    "after_sink_write",
    "during_dlq_write",
    "after_offset_update",
    "after_commit_sent",
    "after_commit",
    "between_claim_and_assign",
];

/// How a commit's outcome is falsified at the `commit_outcome` point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The `COMMIT` succeeded; its reply is lost.
    Reply,
    /// The transaction was rolled back; the `COMMIT` never arrived.
    Commit,
}

#[cfg(feature = "failpoints")]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{OnceLock, RwLock};

    #[derive(Clone, Debug)]
    struct Arm {
        name: String,
        probability: f64,
        action: String,
    }

    fn table() -> &'static RwLock<Vec<Arm>> {
        static TABLE: OnceLock<RwLock<Vec<Arm>>> = OnceLock::new();
        TABLE.get_or_init(|| {
            RwLock::new(parse(&std::env::var("WEIR_FAILPOINT").unwrap_or_default()))
        })
    }

    fn parse(spec: &str) -> Vec<Arm> {
        spec.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .filter_map(|item| {
                let arm = parse_one(item);
                if arm.is_none() {
                    eprintln!("weir failpoint: ignoring `{item}` (want name:probability[:kill|stop|lose_reply|lose_commit])");
                }
                arm
            })
            .collect()
    }

    fn parse_one(item: &str) -> Option<Arm> {
        let mut parts = item.splitn(3, ':');
        let name = parts.next()?.to_owned();
        let probability: f64 = parts.next()?.parse().ok()?;
        let action = parts.next().unwrap_or("kill").to_owned();
        let known_name =
            name == "*" || name == "commit_outcome" || super::NAMES.contains(&name.as_str());
        let known_action = matches!(
            action.as_str(),
            "kill" | "stop" | "lose_reply" | "lose_commit"
        );
        (known_name && known_action && (0.0..=1.0).contains(&probability)).then_some(Arm {
            name,
            probability,
            action,
        })
    }

    pub fn configure(spec: &str) {
        let arms = parse(spec);
        match table().write() {
            Ok(mut t) => *t = arms,
            Err(poisoned) => *poisoned.into_inner() = arms,
        }
    }

    /// The action drawn at `name`, if any fires this time.
    fn draw(name: &str) -> Option<String> {
        let arms: Vec<Arm> = match table().read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        arms.into_iter()
            .filter(|a| a.name == name || (a.name == "*" && super::NAMES.contains(&name)))
            .find(|a| a.probability > 0.0 && rand::random::<f64>() < a.probability)
            .map(|a| a.action)
    }

    fn die(name: &str) -> ! {
        eprintln!("weir failpoint {name}: SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort()
    }

    fn stop(name: &str) {
        static STOPPED: AtomicBool = AtomicBool::new(false);
        if STOPPED.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("weir failpoint {name}: SIGSTOP");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        eprintln!("weir failpoint {name}: continued");
    }

    pub fn hit(name: &str) {
        match draw(name).as_deref() {
            Some("stop") => stop(name),
            Some("kill") => die(name),
            _ => {}
        }
    }

    pub fn hit_soon(name: &str) {
        if draw(name).as_deref() == Some("kill") {
            let name = name.to_owned();
            let delay = std::time::Duration::from_micros(rand::random_range(0..3000));
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                die(&name);
            });
        }
    }

    pub fn lost(name: &str) -> Option<super::Lost> {
        let lost = match draw(name).as_deref() {
            Some("lose_reply") => super::Lost::Reply,
            Some("lose_commit") => super::Lost::Commit,
            _ => return None,
        };
        eprintln!("weir failpoint {name}: {lost:?} lost");
        Some(lost)
    }
}

/// Arm points from a test, replacing `WEIR_FAILPOINT` (same syntax; `""` disarms).
/// Only with the `failpoints` feature.
///
/// ```
/// # #[cfg(feature = "failpoints")]
/// weir_sql::failpoint::configure("commit_outcome:0.5:lose_reply");
/// # #[cfg(feature = "failpoints")]
/// weir_sql::failpoint::configure("");
/// ```
#[cfg(feature = "failpoints")]
pub fn configure(spec: &str) {
    imp::configure(spec);
}

/// Pass the point `name`: with `failpoints` on and armed, the process dies (or stops)
/// here.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    imp::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Like [`hit`] for `kill` only, but the kill comes from another thread within 3 ms,
/// racing whatever this thread does next (a `COMMIT` in flight).
#[inline]
pub fn hit_soon(name: &str) {
    #[cfg(feature = "failpoints")]
    imp::hit_soon(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Whether the commit at point `name` is to be falsified, and how. Always `None`
/// without the `failpoints` feature.
#[inline]
pub fn lost(name: &str) -> Option<Lost> {
    #[cfg(feature = "failpoints")]
    return imp::lost(name);
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}
