//! `TCP_NODELAY` on the database connections sqlx 0.9 opens.
//!
//! sqlx-core 0.9.0 no longer disables Nagle's algorithm on its TCP sockets (0.8 did;
//! the fix, transact-rs/sqlx#4336, is merged but not released). A transaction is a
//! short exchange of small writes, and with Nagle on, a write that follows one not yet
//! acknowledged waits for the server's delayed ACK: about 40 ms on Linux. Measured on
//! this project's benchmark, a 5,000-row `COPY` had a p90 of 42 ms against 5-8 ms
//! with the option set, and the whole job ran at about half its speed.
//!
//! sqlx offers no access to its sockets, so weir finds them: [`set_tcp_nodelay`]
//! looks through this process's open descriptors for TCP sockets connected to the
//! database's address and sets the option on each one that lacks it. Only sockets whose
//! peer is the database are touched (never librdkafka's, which has its own
//! `socket.nagle.disable`). It is idempotent and cheap (one pass over `/proc/self/fd`),
//! so it runs after every new connection: [`after_connect`] is the hook for a pool,
//! and the pools weir opens from a URL install it. On systems other than Linux it
//! does nothing.
//!
//! Remove this module once sqlx releases the fix.

use std::io;
use std::net::SocketAddr;

/// Set `TCP_NODELAY` on every TCP socket of this process whose peer is one of
/// `peers`; how many sockets were changed (0 where all had it already, and always 0
/// off Linux).
///
/// ```
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let addr = listener.local_addr()?;
/// let client = std::net::TcpStream::connect(addr)?;
/// client.set_nodelay(false)?;
/// let changed = weir_sql::nodelay::set_tcp_nodelay(&[addr])?;
/// if cfg!(target_os = "linux") {
///     assert_eq!(changed, 1);
///     assert!(client.nodelay()?);
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_tcp_nodelay(peers: &[SocketAddr]) -> io::Result<usize> {
    let mut changed = 0;
    imp::each_tcp_socket_to(peers, |fd, on| {
        if !on && imp::set_nodelay(fd) {
            changed += 1;
        }
    })?;
    Ok(changed)
}

/// Whether each TCP socket of this process connected to one of `peers` has
/// `TCP_NODELAY` set (empty off Linux): to check a pool's connections.
///
/// ```
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let client = std::net::TcpStream::connect(listener.local_addr()?)?;
/// client.set_nodelay(true)?;
/// let status = weir_sql::nodelay::tcp_nodelay_status(&[listener.local_addr()?])?;
/// assert!(status.iter().all(|on| *on));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn tcp_nodelay_status(peers: &[SocketAddr]) -> io::Result<Vec<bool>> {
    let mut out = Vec::new();
    imp::each_tcp_socket_to(peers, |_, on| out.push(on))?;
    Ok(out)
}

/// Resolve `host:port` and [`set_tcp_nodelay`] on the sockets connected there. A host
/// that does not resolve changes nothing (the connection that just succeeded used an
/// address, so this only happens if DNS changed in between).
///
/// ```
/// # async fn f() -> std::io::Result<()> {
/// weir_sql::nodelay::set_tcp_nodelay_to("127.0.0.1", 5432).await?;
/// # Ok(()) }
/// ```
pub async fn set_tcp_nodelay_to(host: &str, port: u16) -> io::Result<usize> {
    let host = host.trim_matches(['[', ']']);
    let peers: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => return Ok(0),
    };
    set_tcp_nodelay(&peers)
}

/// A pool's `after_connect` hook that sets `TCP_NODELAY` on the new connection (and
/// any other connection to `host:port` that lacks it). Errors are logged, not
/// returned: a connection without the option is slower, not wrong.
///
/// ```no_run
/// # async fn f() -> Result<(), sqlx::Error> {
/// let pool = sqlx::postgres::PgPoolOptions::new()
///     .after_connect(weir_sql::nodelay::after_connect::<sqlx::Postgres>("db.internal", 5432))
///     .connect("postgres://app@db.internal:5432/app")
///     .await?;
/// # drop(pool); Ok(()) }
/// ```
pub fn after_connect<DB: sqlx::Database>(
    host: &str,
    port: u16,
) -> impl for<'c> Fn(
    &'c mut DB::Connection,
    sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>>
       + Send
       + Sync
       + 'static {
    let host: std::sync::Arc<str> = host.into();
    move |_conn, _meta| {
        let host = std::sync::Arc::clone(&host);
        Box::pin(async move {
            if let Err(e) = set_tcp_nodelay_to(&host, port).await {
                tracing::warn!(host = %host, port, error = %e, "cannot set TCP_NODELAY on the database connection; commits may wait for delayed ACKs (about 40 ms)");
            }
            Ok(())
        })
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod imp {
    use std::io;
    use std::mem::{size_of, MaybeUninit};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    /// `f(fd, nodelay)` for each TCP socket connected to one of `peers`.
    pub(super) fn each_tcp_socket_to(
        peers: &[SocketAddr],
        mut f: impl FnMut(i32, bool),
    ) -> io::Result<()> {
        if peers.is_empty() {
            return Ok(());
        }
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let Ok(entry) = entry else { continue };
            // only sockets: the link reads `socket:[inode]`
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"));
            let fd = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok());
            let (true, Some(fd)) = (is_socket, fd) else {
                continue;
            };
            // The descriptor is not ours: another thread may close it (or close it
            // and open another) at any time. Each call below then fails with EBADF
            // or ENOTSOCK, which is skipped; a reuse by another socket to the same
            // database only gives that socket the option too, which is harmless.
            if !is_tcp_stream(fd) || !peer(fd).is_some_and(|p| peers.contains(&p)) {
                continue;
            }
            if let Some(on) = nodelay(fd) {
                f(fd, on);
            }
        }
        Ok(())
    }

    fn int_option(fd: i32, level: i32, name: i32) -> Option<i32> {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of a c_int and a socklen_t; a
        // bad or reused descriptor makes the call fail, it cannot corrupt memory.
        let r = unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut i32).cast(), &mut len) };
        (r == 0).then_some(v)
    }

    fn is_tcp_stream(fd: i32) -> bool {
        int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
            && matches!(
                int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN),
                Some(libc::AF_INET | libc::AF_INET6)
            )
            && int_option(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL) == Some(libc::IPPROTO_TCP)
    }

    fn nodelay(fd: i32) -> Option<bool> {
        int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY).map(|v| v != 0)
    }

    pub(super) fn set_nodelay(fd: i32) -> bool {
        let one: libc::c_int = 1;
        // SAFETY: `one` is a valid c_int for the duration of the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const i32).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        r == 0
    }

    fn peer(fd: i32) -> Option<SocketAddr> {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `storage` is large enough for any socket address and `len` says so.
        let r = unsafe { libc::getpeername(fd, storage.as_mut_ptr().cast(), &mut len) };
        if r != 0 {
            return None;
        }
        // SAFETY: zero-initialised, then (partly) written by getpeername.
        let storage = unsafe { storage.assume_init() };
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let a: libc::sockaddr_in =
                    unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let a: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn each_tcp_socket_to(
        _peers: &[std::net::SocketAddr],
        _f: impl FnMut(i32, bool),
    ) -> std::io::Result<()> {
        Ok(())
    }
    pub(super) fn set_nodelay(_fd: i32) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_to_the_given_peer_change() -> io::Result<()> {
        let a = std::net::TcpListener::bind("127.0.0.1:0")?;
        let b = std::net::TcpListener::bind("127.0.0.1:0")?;
        let to_a = std::net::TcpStream::connect(a.local_addr()?)?;
        let to_b = std::net::TcpStream::connect(b.local_addr()?)?;
        to_a.set_nodelay(false)?;
        to_b.set_nodelay(false)?;
        assert_eq!(set_tcp_nodelay(&[a.local_addr()?])?, 1);
        assert!(to_a.nodelay()?);
        assert!(!to_b.nodelay()?, "a socket to another peer is left alone");
        assert_eq!(set_tcp_nodelay(&[a.local_addr()?])?, 0, "idempotent");
        Ok(())
    }
}
