//! The pools a job opens from a URL have `TCP_NODELAY` on every connection (sqlx 0.9
//! leaves Nagle's algorithm on, which made commits wait for delayed ACKs; see
//! `weir_sql::nodelay`). A control shows a plain sqlx pool without it, so the check
//! can fail. One test per binary: the check looks at every socket of the process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use anyhow::{Context, Result};
use weir_pipeline::Database;
use weir_sql::nodelay::tcp_nodelay_status;

async fn sockets_after<DB: Database>(pool: &sqlx::Pool<DB>, peer: SocketAddr) -> Result<Vec<bool>> {
    // two connections open at once, so that the pool has more than one socket
    let a = pool.acquire().await?;
    let b = pool.acquire().await?;
    let status = tcp_nodelay_status(&[peer])?;
    drop((a, b));
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_pools_set_tcp_nodelay_on_every_connection() -> Result<()> {
    let pg: SocketAddr = "127.0.0.1:5432".parse()?;
    let control = sqlx::PgPool::connect(common::PG_URL)
        .await
        .context("PostgreSQL at 127.0.0.1:5432; run scripts/provision")?;
    let plain = sockets_after(&control, pg).await?;
    control.close().await;
    println!("plain sqlx pool, TCP_NODELAY per socket: {plain:?}");
    assert!(
        plain.contains(&false),
        "sqlx left Nagle on (0.9.0 does): {plain:?}; if sqlx now sets TCP_NODELAY, weir_sql::nodelay can go"
    );

    let pool = <sqlx::Postgres as Database>::open(common::PG_URL, 2).await?;
    let status = sockets_after(&pool, pg).await?;
    println!("job pool (PostgreSQL), TCP_NODELAY per socket: {status:?}");
    assert_eq!(status, [true, true], "every connection has TCP_NODELAY");
    pool.close().await;

    let my: SocketAddr = "127.0.0.1:3306".parse()?;
    let url = common::mariadb_url().await?;
    let pool = <sqlx::MySql as Database>::open(&url, 2).await?;
    let status = sockets_after(&pool, my).await?;
    println!("job pool (MariaDB), TCP_NODELAY per socket: {status:?}");
    assert!(
        status.len() >= 2 && status.iter().all(|on| *on),
        "every connection has TCP_NODELAY: {status:?}"
    );
    Ok(())
}
