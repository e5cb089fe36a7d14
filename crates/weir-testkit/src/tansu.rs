//! A Kafka-protocol broker for tests: the `tansu` binary on a free loopback port.
//!
//! `scripts/provision` installs tansu at `.cache/tansu/bin/tansu` (or point `$WEIR_TANSU`
//! at a binary). [`TansuBroker::start`] runs one with in-memory storage, waits until it
//! accepts connections and kills it on drop; [`TansuBroker::shared`] gives every test
//! of a test binary the same broker (each test still uses its own topics and groups).
//! The broker process also dies when the test process does (its stdin is a pipe from
//! the test; when that closes, a tiny shell wrapper kills it).
//!
//! [`TansuBroker::start_proxied`] puts a small TCP proxy in front of the broker (the
//! broker advertises the proxy's port, so every connection of every client passes
//! through it). The proxy reads the `client.id` of each request and can cut one client
//! off for good ([`TansuBroker::cut_client`]): the client stops reaching the broker as
//! a crashed process would, without leaving its group.
//!
//! ```no_run
//! let broker = weir_testkit::tansu::TansuBroker::shared()?;
//! broker.create_topic("orders", 4)?;
//! println!("bootstrap.servers = {}", broker.bootstrap());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// What a test prints when the broker binary is missing.
pub const NOT_FOUND: &str = "tansu broker not found: run scripts/provision";

/// A running tansu broker (killed on drop).
#[derive(Debug)]
pub struct TansuBroker {
    bin: PathBuf,
    /// The port clients use (the proxy's when proxied).
    port: u16,
    /// tansu's own listener.
    broker_port: u16,
    pid: u32,
    wrapper: Mutex<Option<(Child, ChildStdin)>>,
    proxy: Option<Arc<ProxyState>>,
    log: PathBuf,
}

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, within: Duration) -> io::Result<()> {
    let deadline = Instant::now() + within;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(other(format!(
                "tansu did not accept connections on 127.0.0.1:{port} within {within:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl TansuBroker {
    /// The tansu binary: `$WEIR_TANSU`, else `<repo>/.cache/tansu/bin/tansu`. The error
    /// says to run `scripts/provision`.
    pub fn binary() -> io::Result<PathBuf> {
        let path = match std::env::var_os("WEIR_TANSU") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/tansu/bin/tansu"),
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{NOT_FOUND} (looked for {})", path.display()),
            ))
        }
    }

    /// Start a broker with in-memory storage on a free loopback port.
    pub fn start() -> io::Result<Self> {
        Self::launch(false)
    }

    /// Start a broker behind a proxy that can cut single clients off
    /// ([`cut_client`](Self::cut_client)).
    pub fn start_proxied() -> io::Result<Self> {
        Self::launch(true)
    }

    /// One broker (proxied) for the whole test binary, started on first use.
    pub fn shared() -> io::Result<&'static TansuBroker> {
        static SHARED: OnceLock<Result<TansuBroker, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::start_proxied().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| other(e.clone()))
    }

    fn launch(proxied: bool) -> io::Result<Self> {
        let bin = Self::binary()?;
        let broker_port = free_port()?;
        let (port, proxy) = if proxied {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            let state = Arc::new(ProxyState::default());
            start_proxy(listener, broker_port, state.clone())?;
            (port, Some(state))
        } else {
            (broker_port, None)
        };
        let log = std::env::temp_dir().join(format!(
            "weir-tansu-{}-{broker_port}.log",
            std::process::id()
        ));
        // The wrapper starts tansu in the background, prints its pid, then waits for
        // its stdin (a pipe from this process) to close and kills tansu: the broker
        // never outlives the test process, even when it is killed.
        let script = r#"log="$1"; shift; "$@" </dev/null >"$log" 2>&1 & echo $!; cat >/dev/null; kill -9 $! 2>/dev/null"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("weir-tansu")
            .arg(&log)
            .arg(&bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{broker_port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| other(format!("cannot start {}: {e}", bin.display())))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| other("no stdin pipe to the tansu wrapper"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| other("no stdout pipe from the tansu wrapper"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let pid: u32 = line.trim().parse().map_err(|_| {
            other(format!(
                "tansu wrapper printed `{}`, not a pid",
                line.trim()
            ))
        })?;
        let broker = TansuBroker {
            bin,
            port,
            broker_port,
            pid,
            wrapper: Mutex::new(Some((child, stdin))),
            proxy,
            log,
        };
        wait_for_port(broker_port, Duration::from_secs(30))
            .map_err(|e| other(format!("{e}; broker log: {}", broker.log.display())))?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kafka://127.0.0.1:PORT`, weir's URL form.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    /// The broker's log file (stdout and stderr of tansu).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Create a topic with `partitions` partitions (`tansu topic create`).
    pub fn create_topic(&self, name: &str, partitions: i32) -> io::Result<()> {
        let out = Command::new(&self.bin)
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://127.0.0.1:{}", self.broker_port))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| other(format!("cannot run tansu topic create: {e}")))?;
        if !out.status.success() {
            return Err(other(format!(
                "tansu topic create {name} --partitions {partitions} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Kill the broker at once (SIGKILL), e.g. to test behaviour with the broker gone.
    /// Idempotent.
    pub fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        if let Ok(mut w) = self.wrapper.lock() {
            if let Some((mut child, mut stdin)) = w.take() {
                let _ = stdin.flush();
                drop(stdin);
                let _ = child.wait();
            }
        }
    }

    /// Cut every connection of the client with this `client.id` and refuse its new
    /// ones, for good: the client can no longer reach the broker (it neither
    /// heartbeats nor leaves its group). Only for [`start_proxied`](Self::start_proxied)
    /// brokers.
    pub fn cut_client(&self, client_id: &str) -> io::Result<()> {
        let state = self
            .proxy
            .as_ref()
            .ok_or_else(|| other("cut_client needs a broker started with start_proxied"))?;
        let conns = {
            let mut cut = state
                .cut
                .lock()
                .map_err(|_| other("proxy state poisoned"))?;
            cut.insert(client_id.to_owned());
            let conns = state
                .conns
                .lock()
                .map_err(|_| other("proxy state poisoned"))?;
            conns
                .iter()
                .filter(|(id, _)| {
                    id.lock()
                        .map(|i| i.as_deref() == Some(client_id))
                        .unwrap_or(false)
                })
                .map(|(_, n)| n.clone())
                .collect::<Vec<_>>()
        };
        for n in conns {
            n.notify_one();
        }
        Ok(())
    }

    /// Undo [`cut_client`](Self::cut_client): the client's new connections pass again
    /// (a network partition that heals).
    ///
    /// ```no_run
    /// let broker = weir_testkit::tansu::TansuBroker::start_proxied()?;
    /// broker.cut_client("job-1")?;
    /// broker.restore_client("job-1")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn restore_client(&self, client_id: &str) -> io::Result<()> {
        let state = self
            .proxy
            .as_ref()
            .ok_or_else(|| other("restore_client needs a broker started with start_proxied"))?;
        state
            .cut
            .lock()
            .map_err(|_| other("proxy state poisoned"))?
            .remove(client_id);
        Ok(())
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

type Conn = (Arc<Mutex<Option<String>>>, Arc<Notify>);

#[derive(Debug, Default)]
struct ProxyState {
    cut: Mutex<HashSet<String>>,
    conns: Mutex<Vec<Conn>>,
}

impl ProxyState {
    fn is_cut(&self, id: &str) -> bool {
        self.cut.lock().map(|c| c.contains(id)).unwrap_or(true)
    }
}

fn start_proxy(listener: TcpListener, upstream: u16, state: Arc<ProxyState>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weir-tansu-proxy".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((client, _)) = listener.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ = relay(client, upstream, state).await;
                    });
                }
            })
        })?;
    Ok(())
}

/// The `client_id` of a Kafka request (request header v1+), if any.
fn client_id_of(frame: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes([*frame.get(8)?, *frame.get(9)?]);
    if len < 0 {
        return None;
    }
    let bytes = frame.get(10..10 + len as usize)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

async fn relay(
    client: tokio::net::TcpStream,
    upstream: u16,
    state: Arc<ProxyState>,
) -> io::Result<()> {
    let server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let id: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let kill = Arc::new(Notify::new());
    if let Ok(mut conns) = state.conns.lock() {
        conns.retain(|(_, n)| Arc::strong_count(n) > 1);
        conns.push((id.clone(), kill.clone()));
    }
    let up = {
        let state = state.clone();
        let id = id.clone();
        async move {
            let mut frame = Vec::new();
            loop {
                let mut len = [0u8; 4];
                cr.read_exact(&mut len).await?;
                let n = i32::from_be_bytes(len).max(0) as usize;
                frame.resize(n, 0);
                cr.read_exact(&mut frame).await?;
                if let Some(cid) = client_id_of(&frame) {
                    if state.is_cut(&cid) {
                        return Ok::<(), io::Error>(());
                    }
                    if let Ok(mut slot) = id.lock() {
                        if slot.is_none() {
                            *slot = Some(cid);
                        }
                    }
                }
                sw.write_all(&len).await?;
                sw.write_all(&frame).await?;
            }
        }
    };
    let down = async move { tokio::io::copy(&mut sr, &mut cw).await.map(|_| ()) };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = kill.notified() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_is_read_from_a_request_header() {
        let mut frame = vec![0, 18, 0, 3, 0, 0, 0, 1, 0, 3];
        frame.extend_from_slice(b"abc");
        assert_eq!(client_id_of(&frame).as_deref(), Some("abc"));
        let null = [0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff];
        assert_eq!(client_id_of(&null), None);
        assert_eq!(client_id_of(&[0, 1]), None);
    }

    #[test]
    fn missing_binary_names_the_provisioning_script() {
        let err = {
            let _guard = ENV_LOCK.lock();
            std::env::set_var("WEIR_TANSU", "/nonexistent/tansu");
            let r = TansuBroker::binary();
            std::env::remove_var("WEIR_TANSU");
            r
        };
        let e = err.unwrap_err().to_string();
        assert!(e.contains("scripts/provision"), "{e}");
    }

    static ENV_LOCK: Mutex<()> = Mutex::new(());

    #[test]
    fn broker_starts_creates_topics_and_dies_on_kill() {
        // Hold the lock: the test above points WEIR_TANSU at a missing binary meanwhile.
        let b = {
            let _guard = ENV_LOCK.lock();
            TansuBroker::start().unwrap()
        };
        b.create_topic("fixture-selftest", 2).unwrap();
        let port = b.port;
        b.kill();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            assert!(Instant::now() < deadline, "broker still up after kill");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
