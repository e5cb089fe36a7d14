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

pub(crate) async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot install the SIGINT/SIGTERM handlers; the job will not stop on a signal");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot install the Ctrl-C handler; the job will not stop on a signal");
            std::future::pending::<()>().await;
        }
    }
}
