//! Starts the front doors over one engine and shuts down gracefully.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::TcpIncoming;

use crate::config::ServeConfig;
use anyhow::Context;

use crate::auth::{Auth, AuthConfig};
use crate::engine::files::FileAccess;
use crate::engine::{Engine, EngineConfig};
use crate::flight::{AuthLayer, DuckFlightSql, FlightServiceServer, MetricsLayer, TokenLayer};
use crate::http::AppState;

/// How long in-flight calls may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn serve(mut cfg: ServeConfig) -> anyhow::Result<()> {
    // Both front doors are bound before anything is announced or opened, so
    // a port in use is one clear error naming it.
    let flight_listener = listen(cfg.flight_addr)
        .with_context(|| format!("Flight SQL: cannot listen on {}", cfg.flight_addr))?;
    let http_listener = listen(cfg.http_addr)
        .with_context(|| format!("HTTP gateway: cannot listen on {}", cfg.http_addr))?;

    // Every path absolute before the working directory becomes the first
    // files dir (`engine::files`).
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)?;
    let files = FileAccess::prepare(&cfg.files_dirs, &cfg.data_dir, &cfg.export_dir)?;
    let auth = Auth::open(&AuthConfig {
        users: cfg.users.clone(),
        token_ttl: cfg.token_ttl,
        token_secret_file: cfg.token_secret_file.clone(),
        data_dir: cfg.data_dir.clone(),
    })?;
    if let Some(a) = &auth {
        // SQL reads the files dirs: the credentials must not be there.
        for secret in a.secret_paths() {
            let secret = std::fs::canonicalize(&secret).unwrap_or(secret);
            if let Some(dir) = files.dirs().iter().find(|d| secret.starts_with(d)) {
                anyhow::bail!(
                    "{} is under the files dir {}, which SQL can read: keep it elsewhere",
                    secret.display(),
                    dir.display()
                );
            }
        }
    }
    let tls = match &cfg.tls {
        Some(t) => Some((t.tonic()?, t.rustls()?)),
        None => None,
    };
    files.enter()?;
    let engine_cfg = EngineConfig {
        files,
        max_temp_size: cfg.max_temp_size,
        data_dir: cfg.data_dir.clone(),
        memory_budget: cfg.memory_budget,
        month_idle_timeout: cfg.month_idle_timeout,
        query_timeout: cfg.query_timeout,
        threads: cfg.threads,
        timezone: cfg.timezone,
        session_timeout: cfg.session_timeout,
        replicas: cfg.replicas,
        stale_reads: cfg.stale_reads,
        replica_fsync: cfg.replica_fsync,
        apply_delay: cfg.apply_delay,
        verify_interval: cfg.verify_interval,
        max_months: cfg.max_months,
        max_sessions: Some(cfg.max_sessions),
        max_sessions_per_user: Some(cfg.max_sessions_per_user),
        max_concurrent_queries: cfg.max_concurrent_queries,
        max_queued_queries: cfg.max_queued_queries,
    };
    let engine = tokio::task::spawn_blocking(move || Engine::open(engine_cfg)).await??;
    engine.spawn_janitor();

    // TCP_NODELAY on every accepted socket: small request/response pairs
    // (point queries) must not wait for Nagle/delayed-ACK timers.
    let incoming = TcpIncoming::from(flight_listener).with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let service = FlightServiceServer::new(DuckFlightSql::new(Arc::clone(&engine))?)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    // Tests and scripts read this line to find the port.
    println!("duckflock flight sql listening on {addr}");
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), tls = tls.is_some(), auth = auth.is_some(), "serving");

    let http_addr = http_listener.local_addr()?;
    println!("duckflock http listening on {http_addr}");
    tracing::info!(%http_addr, "http gateway");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut builder = tonic::transport::Server::builder();
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let http_tls = match tls {
        Some((flight_tls, http_tls)) => {
            builder = builder.tls_config(flight_tls)?;
            Some(http_tls)
        }
        None => None,
    };
    let server = tokio::spawn(
        builder
            .layer(MetricsLayer)
            .layer(TokenLayer)
            .layer(AuthLayer::new(auth.clone()))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
    );
    let state = Arc::new(AppState::new(
        Arc::clone(&engine),
        format!("{scheme}://{addr}"),
        usize::try_from(cfg.http_result_limit).unwrap_or(usize::MAX),
        auth.clone(),
        cfg.http_allow_origin.clone(),
    ));
    let http = tokio::spawn(crate::http::serve(
        http_listener,
        state,
        http_tls,
        stopped(stop_rx),
    ));
    if let Some(a) = auth {
        tokio::spawn(reload_on_hangup(a));
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight calls");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let _ = tokio::join!(server, http);
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight calls did not finish in time; closing anyway");
    }
    engine.shutdown().await;
    tracing::info!("checkpointed; bye");
    Ok(())
}

/// A listening socket as tokio's own `bind` makes it (SO_REUSEADDR, so a
/// restart does not wait for TIME_WAIT).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Re-reads the users file on every SIGHUP (a bad file keeps the old users).
async fn reload_on_hangup(auth: Arc<Auth>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match auth.reload() {
            Ok(n) => {
                tracing::info!(users = n, file = %auth.users_file().display(), "users reloaded")
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "users file not reloaded; the old users stay")
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
