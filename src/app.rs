//! Wiring: build every component from the config, run the HTTP server and
//! the bot side by side, and stop both cleanly on SIGINT or SIGTERM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::config::{Delivery, StoreConfig};
use crate::gateway::Gateway;
use crate::http::{self, HttpState};
use crate::secret::Secret;
use crate::store::postgres::{self, Database};
use crate::store::{StoreError, Stores};
use crate::telegram::{self, Telegram, TelegramError, Webhook};
use crate::vault::{KeySource, Namespace, Vault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Named by host and database, never by URL (it may hold a password).
    #[error("cannot use the PostgreSQL store, {location}")]
    Database {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot listen on {addr} (is another mcpgram running? change http.listen)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Telegram(#[from] TelegramError),
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
}

/// Where the authorization server sends the browser back to.
///
/// With `http.public_url` that is the public address; otherwise the
/// loopback address actually bound (so `listen = "127.0.0.1:0"` works),
/// written as an IP literal as RFC 8252 §7.3 asks of native clients.
pub fn redirect_uri(config: &Config, bound: SocketAddr) -> String {
    if let Some(public) = &config.http.public_url {
        return format!("{}/oauth/callback", public.as_str().trim_end_matches('/'));
    }
    let ip = match bound.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/oauth/callback",
        SocketAddr::new(ip, bound.port())
    )
}

/// `<public_url>/telegram/webhook`.
fn webhook_url(public: &url::Url) -> url::Url {
    let base = public.as_str().trim_end_matches('/');
    url::Url::parse(&format!("{base}{}", telegram::WEBHOOK_PATH)).unwrap_or_else(|_| public.clone())
}

/// Opens the vault and proves the key fits. A replaced or wrong key shows
/// up now, at start, rather than as failures in users' chats later: the
/// system namespace always exists and must decrypt.
pub async fn open_vault(config: &Config) -> Result<Arc<Vault>, VaultError> {
    let key = KeySource::from_env_or_file(config.vault.key_file.clone());
    let vault = Arc::new(Vault::open(&config.vault.dir, &key)?);
    if vault.keys(Namespace::System).await?.is_empty() {
        vault
            .put(Namespace::System, "vault.format", Secret::new("1"))
            .await?;
    }
    Ok(vault)
}

/// The stores the config asks for, and the database behind them if any.
/// With PostgreSQL: connect, bring the schema up to date, and say where
/// (host and database only: the URL may hold a password).
pub async fn open_stores(
    config: &Config,
    vault: Arc<Vault>,
) -> Result<(Stores, Option<Database>), AppError> {
    match &config.store {
        StoreConfig::Files => Ok((Stores::embedded(vault).await?, None)),
        StoreConfig::Postgres { url, lease } => {
            let location = postgres::describe(url);
            let failed = |source| AppError::Database {
                location: location.clone(),
                source,
            };
            let database = Database::connect(url)
                .await
                .map_err(failed)?
                .with_lease(*lease);
            database.migrate().await.map_err(failed)?;
            tracing::info!(store = %location, "keeping state in PostgreSQL");
            Ok((Stores::postgres(database.clone(), vault), Some(database)))
        }
    }
}

/// The stores of a terminal command: where the config keeps state, so
/// the terminal's own sign-in and calls work with several replicas too;
/// its pending flows stay in its memory (its own callback completes them,
/// and a running bot must neither see nor sweep them).
pub async fn open_terminal_stores(config: &Config, vault: Arc<Vault>) -> Result<Stores, AppError> {
    match &config.store {
        StoreConfig::Files => Ok(Stores::with_flows_in_memory(vault)),
        StoreConfig::Postgres { .. } => {
            let (stores, _) = open_stores(config, vault).await?;
            Ok(Stores {
                flows: Arc::new(crate::store::flows::FlowTable::in_memory()),
                ..stores
            })
        }
    }
}

/// Runs the bot until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), AppError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new updates; commands under way may finish");
        let _ = stop_tx.send(true);
        // A second signal does not wait.
        shutdown_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    run_until(config, stop_rx).await
}

/// Runs the bot until `stop` turns true.
pub async fn run_until(config: Config, stop: watch::Receiver<bool>) -> Result<(), AppError> {
    let config = Arc::new(config);
    let vault = open_vault(&config).await?;
    let (stores, database) = open_stores(&config, vault.clone()).await?;

    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| AppError::Listen {
            addr: config.http.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(AppError::Http)?;
    let redirect = redirect_uri(&config, bound);

    let telegram = Telegram::connect(&config.telegram).await?;
    // Servers' questions (elicitation) are put to the user in the chat.
    let gateway = Arc::new(
        Gateway::new(
            config.clone(),
            stores,
            redirect.clone(),
            telegram.notifier(),
        )
        .with_elicitation(crate::mcp::client::Elicitation::Ask),
    );

    // A Cancel that reaches another replica than the one running the call.
    let cancels = database.clone().map(|database| {
        let running = telegram.running();
        tokio::spawn(crate::store::postgres::commands::listen_for_cancels(
            database,
            move |user_id, call| {
                running.cancel(user_id, call);
            },
        ))
    });

    let webhook = match (&config.telegram.delivery, &config.http.public_url) {
        (Delivery::Webhook { secret }, Some(public)) => Some(Webhook {
            url: webhook_url(public),
            secret: secret.clone(),
            slot: Arc::default(),
        }),
        _ => None,
    };
    let state = HttpState {
        gateway: gateway.clone(),
        webhook: webhook
            .as_ref()
            .map(|webhook| (telegram::WEBHOOK_PATH, webhook.slot.clone())),
        dependencies: {
            let mut dependencies: Vec<Arc<dyn crate::gateway::ready::Dependency>> = vec![
                telegram.probe(),
                Arc::new(crate::gateway::ready::VaultReadable(vault)),
            ];
            if let Some(database) = &database {
                dependencies.push(Arc::new(crate::gateway::ready::DatabaseReachable(
                    database.clone(),
                )));
            }
            dependencies
        },
    };
    // /metrics on its own address when one is set, off the public one.
    let metrics_server = match config.http.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Listen { addr, source })?;
            tracing::info!(%addr, "serving /metrics");
            let router = http::metrics_router(state.clone());
            let metrics_stop = stopped(stop.clone());
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(metrics_stop)
                    .await
            }))
        }
        None => None,
    };
    let http_stop = stopped(stop.clone());
    let public_metrics = config.http.metrics_listen.is_none();
    let server = tokio::spawn(async move {
        axum::serve(listener, http::router(state, public_metrics))
            .with_graceful_shutdown(http_stop)
            .await
    });
    tracing::info!(%bound, redirect_uri = %redirect, "listening for OAuth callbacks");

    let sweeper = tokio::spawn(sweep_expired_flows(gateway.clone(), stop.clone()));
    let closer = tokio::spawn(close_idle_sessions(gateway.clone(), stop.clone()));

    let grace = config.mcp.shutdown_grace;
    let polled = telegram
        .run(gateway.clone(), stopped(stop), webhook, grace)
        .await;
    sweeper.abort();
    closer.abort();
    if let Some(cancels) = cancels {
        cancels.abort();
        let _ = cancels.await;
    }
    gateway.shutdown().await;
    if let Some(database) = database {
        database.close().await;
    }
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    let served = match server.await {
        Ok(result) => result.map_err(AppError::Http),
        Err(join) => Err(AppError::Http(std::io::Error::other(join))),
    };
    polled?;
    served
}

/// Tells owners of links that ran out: every quarter of a link's lifetime,
/// between once a second and twice a minute.
async fn sweep_expired_flows(gateway: Arc<Gateway>, stop: watch::Receiver<bool>) {
    let period = (gateway.config().oauth.flow_ttl / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(30),
    );
    let mut every = tokio::time::interval(period);
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => gateway.sweep_expired().await,
            () = &mut stop => return,
        }
    }
}

/// Closes MCP sessions left idle: every quarter of the idle time, between
/// once a second and once a minute.
async fn close_idle_sessions(gateway: Arc<Gateway>, stop: watch::Receiver<bool>) {
    let period = (gateway.config().mcp.session_idle / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    let mut every = tokio::time::interval(period);
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let closed = gateway.close_idle_sessions(std::time::Instant::now());
                if closed > 0 {
                    tracing::debug!(closed, open = gateway.warm_sessions(), "closed idle MCP sessions");
                }
            }
            () = &mut stop => return,
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
