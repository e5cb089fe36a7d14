//! `Job::serve_http`: `/metrics` (Prometheus text format), `/health/live` and
//! `/health/ready` (feature `prometheus`).
//!
//! A deliberately small HTTP/1.1 server on tokio (GET only, one request per
//! connection, requests bounded in size and time): three read-only endpoints do not
//! justify a web framework in every job's dependency tree. `/metrics` renders
//! metrics-exporter-prometheus's recorder, installed once per process as the global
//! `metrics` recorder.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::runtime::Health;
use crate::{Error, Result};

/// Longest request head read (the request line and headers).
const MAX_REQUEST: usize = 8 * 1024;
/// A client that sends no complete request head within this is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole exchange (read, render, write) is cut off after this.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections answered at once; more are closed at once (a scraper and two probes
/// need three; the rest would only take file descriptors the job needs).
const MAX_CONNECTIONS: usize = 16;
/// Histogram buckets of the `_seconds` metrics (commit and end-to-end latency).
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of `weir_batch_records`.
const RECORDS: &[f64] = &[
    1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0, 100000.0,
];

/// Buckets of `weir_batch_bytes`.
const BYTES: &[f64] = &[
    1024.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// The process's Prometheus recorder, installed by the first job that serves HTTP.
fn handle() -> std::result::Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("weir_batch_records".to_owned()),
                        RECORDS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("weir_batch_bytes".to_owned()), BYTES)
                })
                .and_then(|b| b.install_recorder())
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// The server's task; aborted when dropped (the job stopped).
pub(crate) struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Listen on `addr` and answer until the returned guard is dropped.
pub(crate) async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    live_within: Duration,
    job: &str,
) -> Result<Server> {
    let fail = |reason: String| Error::Build {
        job: job.to_owned(),
        stage: "serve_http".to_owned(),
        reason,
    };
    let prometheus = handle().map_err(|e| {
        fail(format!(
            "cannot install the Prometheus recorder for /metrics ({e}): another `metrics` recorder is installed in this process; serve it yourself instead of serve_http"
        ))
    })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| fail(format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, "serving /metrics, /health/live and /health/ready");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            tracing::debug!(%peer, "too many http connections; closing this one");
                            drop(stream);
                            continue;
                        };
                        let (p, h) = (prometheus.clone(), Arc::clone(&health));
                        tokio::spawn(async move {
                            let exchange = answer(stream, &p, &h, live_within);
                            match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => tracing::debug!(error = %e, "http request failed"),
                                Err(_) => tracing::debug!(%peer, "http exchange timed out"),
                            }
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: the job goes on.
                        tracing::warn!(error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Histograms keep samples until drained: bound them between scrapes.
                _ = upkeep.tick() => prometheus.run_upkeep(),
            }
        }
    });
    Ok(Server(task))
}

/// The method and path (without its query) of a request head.
fn request_line(head: &str) -> (&str, &str) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    (method, path.split('?').next().unwrap_or_default())
}

/// The response to a request head: status line, content type, body.
pub(crate) fn route(
    head: &str,
    metrics: impl FnOnce() -> String,
    health: &Health,
    live_within: Duration,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (method, path) = request_line(head);
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".to_owned());
    }
    let probe = |ok: bool, what: &str| {
        if ok {
            ("200 OK", TEXT, format!("{what}\n"))
        } else {
            ("503 Service Unavailable", TEXT, format!("not {what}\n"))
        }
    };
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        "/health/live" => probe(health.live(live_within), "live"),
        "/health/ready" => probe(health.ready(live_within), "ready"),
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /health/live or /health/ready\n".to_owned(),
        ),
    }
}

async fn answer(
    mut stream: TcpStream,
    prometheus: &PrometheusHandle,
    health: &Health,
    live_within: Duration,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0_u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    match read {
        Ok(r) => r?,
        Err(_) => return Ok(()), // too slow: drop the connection
    }
    // Routed only when the whole head arrived within the limit.
    let complete = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_some_and(|end| end + 4 <= MAX_REQUEST);
    let head = String::from_utf8_lossy(&buf);
    let (status, content_type, body) = if complete {
        // Rendering walks every metric: done on a blocking thread, so a scrape of a
        // large registry never holds up a worker the job's tasks run on.
        let rendered = if request_line(&head).1 == "/metrics" {
            let handle = prometheus.clone();
            tokio::task::spawn_blocking(move || handle.render())
                .await
                .unwrap_or_default()
        } else {
            String::new()
        };
        route(&head, || rendered, health, live_within)
    } else if buf.len() >= MAX_REQUEST {
        (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            format!("request head over {MAX_REQUEST} bytes\n"),
        )
    } else {
        (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "incomplete request\n".to_owned(),
        )
    };
    let len = body.len();
    let body = if head.starts_with("HEAD ") {
        String::new()
    } else {
        body
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n{body}"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
