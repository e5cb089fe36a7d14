//! `weir-registry`: a development schema registry (the Confluent REST subset weir
//! uses, in memory) for the examples; see [`weir_testkit::registry`].
//!
//! **A development stand-in, not for production**: no persistence, no compatibility
//! checks, no authentication. `scripts/provision` builds it and runs it in the
//! background on 127.0.0.1:8081 (pidfile and log under `.cache/weir-registry/`).
//!
//! ```text
//! weir-registry [--listen 127.0.0.1:8081] [--quiet]
//! ```

use anyhow::{bail, Context, Result};
use weir_testkit::registry::{serve, Registry, DEFAULT_ADDR};

fn main() -> Result<()> {
    let mut listen = DEFAULT_ADDR.to_owned();
    let mut quiet = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().context("--listen HOST:PORT")?,
            "--quiet" => quiet = true,
            "-h" | "--help" => {
                println!("usage: weir-registry [--listen HOST:PORT] [--quiet]");
                println!("a development schema registry (in memory; not for production)");
                return Ok(());
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        eprintln!(
            "weir-registry: listening on http://{} (development stand-in: in memory, not for production)",
            listener.local_addr()?
        );
        serve(listener, Registry::new(), quiet).await?;
        Ok(())
    })
}
