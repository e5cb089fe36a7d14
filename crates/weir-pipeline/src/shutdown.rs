//! Shutdown on SIGINT / SIGTERM.

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM: hand it to
/// [`Ready::run_until`](crate::Ready::run_until).
///
/// On a signal the job stops fetching, commits what is in flight, closes the consumer
/// (leaving the group, so the others rebalance at once) and returns, within the
/// shutdown deadline. A second signal during that drain aborts at once, which is safe:
/// a transaction is committed whole or not at all, and what was not committed is
/// re-read on restart.
///
/// If the signal handlers cannot be installed, this logs the error and never resolves
/// (the job runs on rather than stopping at once).
///
/// ```no_run
/// # async fn f() {
/// weir_pipeline::shutdown_signal().await;
/// println!("stopping");
/// # }
/// ```
pub async fn shutdown_signal() {
    signal().await;
}

/// The signal count, once the handlers are installed (`None`: they could not be).
#[cfg(unix)]
static COUNT: std::sync::OnceLock<Option<tokio::sync::watch::Sender<u64>>> =
    std::sync::OnceLock::new();

/// SIGINT and SIGTERM counted from the first call on, by a thread of its own with its
/// own runtime: the count does not depend on any job's runtime being free to poll
/// (a busy or blocked worker once made a second SIGTERM, sent while the first
/// listener was being replaced, go unseen), and it outlives every runtime.
/// `None` if the handlers cannot be installed (logged). Installing them takes over
/// SIGINT's default (ending the process), so it happens only when something waits
/// for a signal: [`shutdown_signal`], or a job's drain.
#[cfg(unix)]
pub(crate) fn signals() -> Option<tokio::sync::watch::Receiver<u64>> {
    COUNT
        .get_or_init(|| {
            let (tx, _) = tokio::sync::watch::channel(0_u64);
            let counter = tx.clone();
            let (installed_tx, installed) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("weir-signals".into())
                .spawn(move || {
                    use tokio::signal::unix::{signal, SignalKind};
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = installed_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    rt.block_on(async move {
                        let (mut int, mut term) = match (
                            signal(SignalKind::interrupt()),
                            signal(SignalKind::terminate()),
                        ) {
                            (Ok(i), Ok(t)) => (i, t),
                            (Err(e), _) | (_, Err(e)) => {
                                let _ = installed_tx.send(Err(e.to_string()));
                                return;
                            }
                        };
                        let _ = installed_tx.send(Ok(()));
                        loop {
                            let name = tokio::select! {
                                _ = int.recv() => "SIGINT",
                                _ = term.recv() => "SIGTERM",
                            };
                            tracing::info!("{name} received");
                            counter.send_modify(|n| *n += 1);
                        }
                    });
                });
            let answer = match spawned {
                Ok(_) => installed.recv().unwrap_or_else(|_| Err("the signal thread ended".into())),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(()) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGINT/SIGTERM handlers; the job will not stop on a signal");
                    None
                }
            }
        })
        .as_ref()
        .map(tokio::sync::watch::Sender::subscribe)
}

/// Resolves once the signal count (of [`signals`]) reaches `at_least`; never without
/// the handlers.
pub(crate) async fn count_reaches(at_least: u64) {
    #[cfg(unix)]
    if let Some(mut rx) = signals() {
        let _ = rx.wait_for(|n| *n >= at_least).await;
        return;
    }
    #[cfg(not(unix))]
    if at_least > 0 {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot install the Ctrl-C handler; the job will not stop on a signal");
        } else {
            return;
        }
    }
    std::future::pending::<()>().await;
}

/// The number of signals counted so far, without installing the handlers (0 before
/// they are installed, and without them).
pub(crate) fn peek_count() -> u64 {
    #[cfg(unix)]
    if let Some(Some(tx)) = COUNT.get() {
        return *tx.borrow();
    }
    0
}

/// The number of signals counted so far (0 without the handlers); installs them.
pub(crate) fn count() -> u64 {
    #[cfg(unix)]
    if let Some(rx) = signals() {
        return *rx.borrow();
    }
    0
}

pub(crate) async fn signal() {
    count_reaches(count() + 1).await;
}
