//! Every store port in PostgreSQL, so several replicas of the bot share
//! one state: a flow started on one replica completes on another, a
//! refresh on one is seen by all, and a refresh lock holds across them.
//!
//! Secrets are sealed with the vault's age key inside the bot before they
//! are sent ([`sealing`]): the database, its backups and its
//! administrators never see a token, a client secret or a PKCE verifier.
//! Every replica must therefore be given the same vault key.
//!
//! - [`credentials`]: tokens and their client per (user, server).
//! - [`registrations`]: dynamically registered clients.
//! - [`flows`]: pending flows; a callback's take is one `DELETE …
//!   RETURNING`, so two replicas never complete the same flow.
//! - [`locks`]: refresh locks as PostgreSQL advisory locks.
//! - [`users`]: consents, personal tokens, and forgetting a user.
//! - [`commands`]: one command at a time per user, cluster-wide.
//! - [`handoffs`]: replies that reach another replica than the one
//!   holding the user's dialogue.
//! - [`journal`]: the updates each replica acknowledged and is handling,
//!   so those of a replica that died are answered by another.
//!
//! The schema lives in `migrations/` and is applied at start
//! ([`Database::migrate`]).

pub mod commands;
pub mod credentials;
pub mod flows;
pub mod handoffs;
pub mod journal;
pub mod locks;
mod notices;
pub mod registrations;
mod sealing;
#[cfg(test)]
mod testing;
pub mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreError;
use crate::secret::Secret;

/// Connections for the store's queries, per replica. Each query holds one
/// for its own duration only.
const POOL_SIZE: u32 = 10;

/// Connections for refresh locks, apart from the queries' pool: a lock is
/// held on a connection of its own while the holder refreshes, and the
/// holder then needs a second connection to save the new tokens. Were
/// both drawn from one pool, a crowd of waiters for one lock could take
/// every connection and leave the holder unable to save.
const LOCK_POOL_SIZE: u32 = 16;

/// How long a query waits for a free connection before it fails (the
/// database is down or overwhelmed): the user hears of it instead of
/// waiting forever.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a replica's hold on a user's command or on an update lasts
/// unless renewed, by default: a replica that dies frees them within it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// One PostgreSQL database, as the stores of one replica use it.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    locks: PgPool,
    /// This process among the replicas: what it holds (command leases,
    /// updates it is handling) is marked with it, so whoever outlives it
    /// knows what it left behind.
    replica: Arc<str>,
    /// How long what it holds lasts unless renewed.
    lease: Duration,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

impl Database {
    /// Connects to the database at `url` (`postgres://…`; it may hold a
    /// password, so it travels as a [`Secret`] and is never logged). One
    /// connection is opened at once, so a wrong URL or a database that is
    /// down fails the start, not the first user's command.
    pub async fn connect(url: &Secret) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(StoreError::Database)?
            .application_name("mcpgram");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Database)?;
        let locks = PgPoolOptions::new()
            .max_connections(LOCK_POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            locks,
            replica: hex::encode(rand::random::<[u8; 8]>()).into(),
            lease: DEFAULT_LEASE,
        })
    }

    /// The same database with leases of `lease` (`store.lease`): shorter
    /// frees a dead replica's users sooner and costs more renewals.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// This replica's id, random per process.
    pub(super) fn replica(&self) -> &str {
        &self.replica
    }

    pub(super) fn lease(&self) -> Duration {
        self.lease
    }

    /// Brings the schema up to date with `migrations/` (embedded in the
    /// binary). sqlx holds an advisory lock while it migrates, so replicas
    /// starting together apply each migration once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    /// One round trip, for readiness checks.
    pub async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::Database)
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
        self.locks.close().await;
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Runs `write` until it succeeds, pausing `pauses_ms` in turn after
/// each failure; answers whether it did. For writes that must not be lost
/// to a passing failure: under a burst the pool may have no connection
/// free for a while, or the database may be restarting.
pub(crate) async fn write_patiently<T, F, Fut>(what: &str, pauses_ms: &[u64], mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    for pause in pauses_ms {
        match write().await {
            Ok(_) => return true,
            Err(error) => {
                tracing::warn!(%error, "could not {what} yet");
                tokio::time::sleep(Duration::from_millis(*pause)).await;
            }
        }
    }
    false
}

/// Where `url` points, for the log: host and database, never the user or
/// password.
pub fn describe(url: &Secret) -> String {
    match PgConnectOptions::from_str(url.expose()) {
        Ok(options) => {
            let database = options.get_database().unwrap_or("(default)");
            match options.get_socket() {
                Some(socket) => format!("database {database} via {}", socket.display()),
                None => format!(
                    "database {database} on {}:{}",
                    options.get_host(),
                    options.get_port()
                ),
            }
        }
        Err(_) => "a database URL that does not parse".to_owned(),
    }
}

/// Telegram user ids are positive and below 2^52, so they fit a BIGINT;
/// the cast keeps every bit, so even a larger one would round-trip.
fn user_key(user_id: u64) -> i64 {
    user_id as i64
}

/// The user id [`user_key`] kept.
fn user_of(key: i64) -> u64 {
    key as u64
}

fn failed(error: sqlx::Error) -> StoreError {
    StoreError::Database(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures are tried again after each pause, until one try succeeds
    /// or the pauses run out.
    #[tokio::test]
    async fn a_patient_write_is_tried_until_it_succeeds() {
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let flaky = || {
            let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(sqlx::Error::PoolTimedOut)
                } else {
                    Ok(())
                }
            }
        };
        assert!(write_patiently("write", &[1, 1, 1, 1], flaky).await);
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
        let never = || async { Err::<(), _>(sqlx::Error::PoolTimedOut) };
        assert!(!write_patiently("write", &[1, 1], never).await);
    }

    #[test]
    fn the_description_names_no_password() {
        let url = Secret::new("postgres://bot:hunter2@db.internal:6543/mcpgram?sslmode=require");
        let shown = describe(&url);
        assert_eq!(shown, "database mcpgram on db.internal:6543");
        assert!(!shown.contains("hunter2"));
    }

    #[tokio::test]
    async fn migrations_run_twice_at_once_without_error() {
        let db = testing::empty().await;
        let other = db.replica().await;
        let (a, b) = tokio::join!(db.database.migrate(), other.migrate());
        a.unwrap();
        b.unwrap();
        db.database.migrate().await.unwrap();
    }

    #[tokio::test]
    async fn an_unreachable_database_is_an_error_not_a_panic() {
        let url = Secret::new("postgres://nobody@localhost/none?host=/nonexistent-socket-dir");
        let error = Database::connect(&url).await.unwrap_err();
        assert!(matches!(error, StoreError::Database(_)), "{error}");
        assert_eq!(error.to_string(), "the database failed");
    }
}
