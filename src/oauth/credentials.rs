//! rmcp's view of one (user, server) slot's tokens.
//!
//! rmcp's [`CredentialStore`] is implemented per slot over the
//! [`crate::store::CredentialStore`] port, so one `AuthorizationManager` can
//! only ever read and write its own user's tokens, and refreshes take the
//! slot's lock from the [`RefreshLocks`] port: a rotating refresh token is
//! never spent twice, whichever session or task refreshes.

use std::sync::Arc;

use rmcp::transport::auth::{
    AuthError, CredentialRefreshGuard, CredentialStore, StoredCredentials,
};

use crate::logging::chain;
use crate::metrics::Metrics;
use crate::store::{self, RefreshLocks, StoreError};

#[derive(Clone)]
pub struct SlotCredentials {
    store: Arc<dyn store::CredentialStore>,
    locks: Arc<dyn RefreshLocks>,
    metrics: Arc<Metrics>,
    user_id: u64,
    server_id: String,
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
        }
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
        match self.store.load(self.user_id, &self.server_id).await {
            Ok(connection) => Ok(connection.map(|c| c.credentials)),
            Err(error) => Err(self.failed("loading credentials", error)),
        }
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
        let guard = self
            .locks
            .acquire(self.user_id, &self.server_id)
            .await
            .map_err(|error| self.failed("taking the refresh lock", error))?;
        Ok(Some(CredentialRefreshGuard::new(guard)))
    }
}
