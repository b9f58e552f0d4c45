//! pg-personalize-worker: delivers pg_personalize's outbox (email, push, SMS, WhatsApp,
//! webhooks). See the README's "Delivery" section and `packaging/worker.example.toml`.
//!
//!   pg-personalize-worker --config FILE [--drain] [--check]
//!
//! `--drain` delivers what is due now and exits; `--check` checks the configuration and the
//! database, then exits. Logs go to stderr (JSON unless stderr is a terminal; filter with
//! `PERSONALIZE_WORKER_LOG=debug`). SIGTERM or SIGINT stops claiming, lets the sends in flight
//! finish within `worker.shutdown_grace_seconds`, and hands back what is left.

mod channels;
mod config;
mod db;
mod http;
mod message;
mod metrics;
mod render;
mod run;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use tracing::{error, info};

struct Args {
    config: PathBuf,
    drain: bool,
    check: bool,
}

fn args() -> Result<Args> {
    let mut config = None;
    let (mut drain, mut check) = (false, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(it.next().context("--config needs a file")?)),
            "--drain" => drain = true,
            "--check" => check = true,
            "--version" => {
                println!("pg-personalize-worker {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--help" | "-h" => {
                println!("usage: pg-personalize-worker --config FILE [--drain] [--check]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (usage: pg-personalize-worker --config FILE [--drain] [--check])"),
        }
    }
    Ok(Args {
        config: config.context("--config FILE is required")?,
        drain,
        check,
    })
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PERSONALIZE_WORKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(start()) {
        error!(error = %format!("{e:#}"), "stopped");
        eprintln!("pg-personalize-worker: {e:#}");
        std::process::exit(1);
    }
}

async fn start() -> Result<()> {
    let args = args()?;
    let config = Arc::new(config::Config::load(&args.config)?);
    let renderer = Arc::new(render::Renderer::new(config.templates.as_deref())?);
    let channels = Arc::new(run::channel_runtimes(&config, renderer)?);
    let shared = Arc::new(run::Shared {
        metrics: metrics::Metrics::new(),
        client: RwLock::new(None),
        connected: AtomicBool::new(false),
        last_claim_ms: AtomicU64::new(0),
        poll: Duration::from_secs_f64(config.worker.poll_seconds),
    });
    if args.check {
        let (client, connection) =
            tokio_postgres::connect(&config.database_url()?, db::tls(&config)?)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect: {}", db::db_error(&e)))?;
        tokio::spawn(connection);
        let names: Vec<&str> = channels.iter().map(|c| c.name).collect();
        db::check(&client, &names, config.http.unsubscribe_url.is_some()).await?;
        println!("configuration and database OK: {}", names.join(", "));
        return Ok(());
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        info!("stopping: no new claims; finishing what is in flight");
        let _ = stop_tx.send(true);
    });

    if let Some(listen) = &config.http.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("http.listen {listen}"))?;
        info!(listen = %listen, "serving /metrics, /healthz and /unsubscribe");
        let app = http::router(shared.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = server.await {
                error!(error = %e, "http server failed");
            }
        });
    }
    run::run(config, channels, shared, stop_rx, args.drain).await
}
