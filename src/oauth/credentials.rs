//! rmcp's view of one (user, server) slot's tokens.
//!
//! rmcp's [`CredentialStore`] is implemented per slot over the
//! [`crate::store::CredentialStore`] port, so one `AuthorizationManager` can
//! only ever read and write its own user's tokens, and refreshes take the
//! slot's lock from the [`RefreshLocks`] port: a rotating refresh token is
//! never spent twice, whichever session or task refreshes.
//!
//! rmcp reloads the tokens under the lock but refreshes regardless, so a
//! session that waited while another (on another replica) refreshed would
//! spend the new refresh token too: two refreshes for one expiry. So
//! [`SlotCredentials::load`] looks twice: tokens found expired are read
//! again under the lock; if someone renewed them meanwhile, those are
//! used and rmcp sees nothing to refresh; if not, the lock is kept and
//! handed to the refresh rmcp starts next, so nobody can renew in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use oauth2::TokenResponse;
use rmcp::transport::auth::{
    AuthError, CredentialRefreshGuard, CredentialStore, StoredCredentials,
};

use crate::logging::chain;
use crate::metrics::Metrics;
use crate::store::{self, RefreshGuard, RefreshLocks, StoreError};

/// rmcp's own margin: a token with less than this left (or less than half
/// its lifetime, for short-lived ones) is renewed before use.
const REFRESH_BUFFER_SECS: u64 = 30;

#[derive(Clone)]
pub struct SlotCredentials {
    store: Arc<dyn store::CredentialStore>,
    locks: Arc<dyn RefreshLocks>,
    metrics: Arc<Metrics>,
    user_id: u64,
    server_id: String,
    refresh: Arc<Refresh>,
}

/// The lock between a load that found the tokens expired and the refresh
/// rmcp starts next; and whether a refresh holds the lock now (its own
/// load must not wait for the lock it holds).
#[derive(Default)]
struct Refresh {
    held: std::sync::Mutex<Option<RefreshGuard>>,
    running: Arc<AtomicBool>,
}

/// The slot's lock as rmcp holds it during a refresh.
struct Running {
    _guard: RefreshGuard,
    running: Arc<AtomicBool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
    }
}

/// Whether rmcp would renew these tokens before using them.
fn needs_refresh(credentials: &StoredCredentials, now_secs: u64) -> bool {
    let (Some(tokens), Some(received_at)) = (
        credentials.token_response.as_ref(),
        credentials.token_received_at,
    ) else {
        return false;
    };
    let Some(lifetime) = tokens.expires_in() else {
        return false;
    };
    let remaining = lifetime
        .as_secs()
        .saturating_sub(now_secs.saturating_sub(received_at));
    let buffer = REFRESH_BUFFER_SECS.min(lifetime.as_secs() / 2);
    remaining < buffer.max(1)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SlotCredentials {
    pub fn new(
        store: Arc<dyn store::CredentialStore>,
        locks: Arc<dyn RefreshLocks>,
        metrics: Arc<Metrics>,
        user_id: u64,
        server_id: &str,
    ) -> Self {
        Self {
            store,
            locks,
            metrics,
            user_id,
            server_id: server_id.to_owned(),
            refresh: Arc::default(),
        }
    }

    async fn load_once(&self) -> Result<Option<StoredCredentials>, AuthError> {
        match self.store.load(self.user_id, &self.server_id).await {
            Ok(connection) => Ok(connection.map(|c| c.credentials)),
            Err(error) => Err(self.failed("loading credentials", error)),
        }
    }

    async fn lock(&self) -> Result<RefreshGuard, AuthError> {
        self.locks
            .acquire(self.user_id, &self.server_id)
            .await
            .map_err(|error| self.failed("taking the refresh lock", error))
    }

    /// rmcp's error type holds a string only, so the whole chain is logged
    /// here, where it is still typed.
    fn failed(&self, what: &str, error: StoreError) -> AuthError {
        tracing::error!(user = self.user_id, server = %self.server_id, error = %chain(&error), "{what} failed");
        AuthError::CredentialStoreError(format!("{what} failed"))
    }
}

#[async_trait::async_trait]
impl CredentialStore for SlotCredentials {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let loaded = self.load_once().await?;
        if self.refresh.running.load(Ordering::SeqCst) {
            // rmcp's refresh, under the lock: the tokens as they are.
            return Ok(loaded);
        }
        // A lock left from a load whose refresh never came goes now.
        drop(
            self.refresh
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        match &loaded {
            Some(credentials) if needs_refresh(credentials, now_secs()) => {}
            _ => return Ok(loaded),
        }
        let guard = self.lock().await?;
        let again = self.load_once().await?;
        if again
            .as_ref()
            .is_some_and(|credentials| needs_refresh(credentials, now_secs()))
        {
            // rmcp refreshes next, under this same lock.
            *self.refresh.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
        }
        Ok(again)
    }

    /// rmcp saves here after a refresh (a new connection is saved whole,
    /// through the store port).
    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        self.metrics.refresh("renewed");
        self.store
            .save_tokens(self.user_id, &self.server_id, &credentials)
            .await
            .map_err(|error| self.failed("saving credentials", error))
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.store
            .clear_tokens(self.user_id, &self.server_id)
            .await
            .map_err(|error| self.failed("clearing credentials", error))
    }

    /// The provider said the refresh token is dead: drop the tokens so the
    /// next command offers a fresh connect link instead of failing again.
    async fn on_refresh_token_rejected(
        &self,
        _credentials: &StoredCredentials,
    ) -> Result<(), AuthError> {
        self.metrics.refresh("rejected");
        self.clear().await
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let held = self
            .refresh
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let guard = match held {
            Some(guard) => guard,
            None => self.lock().await?,
        };
        self.refresh.running.store(true, Ordering::SeqCst);
        Ok(Some(CredentialRefreshGuard::new(Running {
            _guard: guard,
            running: self.refresh.running.clone(),
        })))
    }
}
