//! Tokens and client identity of one (user, server) slot, in the vault.
//!
//! rmcp's [`CredentialStore`] is implemented per slot so one
//! `AuthorizationManager` can only ever read and write its own user's
//! tokens. Refreshes of one slot are serialised with a process-wide lock so
//! a rotating refresh token is never spent twice.

use std::sync::Arc;

use dashmap::DashMap;
use rmcp::transport::auth::{
    AuthError, CredentialRefreshGuard, CredentialStore, StoredCredentials,
};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::vault::{Namespace, Vault, VaultError};

/// Vault key of the token record of `server_id`.
pub fn credentials_key(server_id: &str) -> String {
    format!("mcp.oauth.{server_id}.credentials")
}

/// Vault key of the client the tokens were issued to.
pub fn client_key(server_id: &str) -> String {
    format!("mcp.oauth.{server_id}.client")
}

/// Every key of `server_id` in a user's namespace starts with this.
pub fn server_prefix(server_id: &str) -> String {
    format!("mcp.oauth.{server_id}.")
}

/// The OAuth client a user's tokens belong to, kept beside the tokens:
/// refreshing needs the same client id (and secret) that obtained them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    #[serde(with = "crate::secret::exposed::option", default)]
    pub client_secret: Option<Secret>,
    pub redirect_uri: String,
    pub issuer: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

type SlotLock = Arc<tokio::sync::Mutex<()>>;

/// One lock per (user, server), shared by every store of that slot.
#[derive(Clone, Default)]
pub struct RefreshLocks(Arc<DashMap<(u64, String), SlotLock>>);

impl RefreshLocks {
    fn lock_for(&self, user_id: u64, server_id: &str) -> SlotLock {
        self.0
            .entry((user_id, server_id.to_owned()))
            .or_default()
            .clone()
    }
}

#[derive(Clone)]
pub struct VaultCredentialStore {
    vault: Arc<Vault>,
    user_id: u64,
    server_id: String,
    locks: RefreshLocks,
}

impl VaultCredentialStore {
    pub fn new(vault: Arc<Vault>, user_id: u64, server_id: &str, locks: RefreshLocks) -> Self {
        Self {
            vault,
            user_id,
            server_id: server_id.to_owned(),
            locks,
        }
    }

    fn namespace(&self) -> Namespace {
        Namespace::User(self.user_id)
    }

    /// The stored tokens, if this user has connected this server.
    pub async fn stored(&self) -> Result<Option<StoredCredentials>, VaultError> {
        let key = credentials_key(&self.server_id);
        self.vault.get_json(self.namespace(), &key).await
    }

    pub async fn client(&self) -> Result<Option<ClientRecord>, VaultError> {
        let key = client_key(&self.server_id);
        self.vault.get_json(self.namespace(), &key).await
    }

    pub async fn save_client(&self, record: &ClientRecord) -> Result<(), VaultError> {
        let key = client_key(&self.server_id);
        self.vault.put_json(self.namespace(), &key, record).await
    }

    /// Deletes tokens and client record of this slot.
    pub async fn forget(&self) -> Result<bool, VaultError> {
        self.vault
            .remove_prefix(self.namespace(), &server_prefix(&self.server_id))
            .await
    }
}

fn store_error(error: impl std::fmt::Display) -> AuthError {
    AuthError::CredentialStoreError(error.to_string())
}

#[async_trait::async_trait]
impl CredentialStore for VaultCredentialStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        self.stored().await.map_err(store_error)
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        let key = credentials_key(&self.server_id);
        self.vault
            .put_json(self.namespace(), &key, &credentials)
            .await
            .map_err(store_error)
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.vault
            .remove(self.namespace(), &credentials_key(&self.server_id))
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// The provider said the refresh token is dead: drop the tokens so the
    /// next command offers a fresh connect link instead of failing again.
    async fn on_refresh_token_rejected(
        &self,
        _credentials: &StoredCredentials,
    ) -> Result<(), AuthError> {
        self.clear().await
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let guard = self
            .locks
            .lock_for(self.user_id, &self.server_id)
            .lock_owned()
            .await;
        Ok(Some(CredentialRefreshGuard::new(guard)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    #[tokio::test]
    async fn each_slot_sees_only_its_own_tokens() {
        let temp = tempfile::tempdir().unwrap();
        let vault =
            Arc::new(Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap());
        let locks = RefreshLocks::default();
        let alice = VaultCredentialStore::new(vault.clone(), 1, "demo", locks.clone());
        let bob = VaultCredentialStore::new(vault.clone(), 2, "demo", locks.clone());
        let alice_other = VaultCredentialStore::new(vault, 1, "other", locks);

        let creds = StoredCredentials::new("client-1".into(), None, vec!["a".into()], Some(5));
        alice.save(creds).await.unwrap();
        assert_eq!(alice.load().await.unwrap().unwrap().client_id, "client-1");
        assert!(bob.load().await.unwrap().is_none());
        assert!(alice_other.load().await.unwrap().is_none());

        alice
            .save_client(&ClientRecord {
                client_id: "client-1".into(),
                client_secret: Some(Secret::new("s3cret")),
                redirect_uri: "http://127.0.0.1/cb".into(),
                issuer: None,
                scopes: vec![],
            })
            .await
            .unwrap();
        assert_eq!(
            alice
                .client()
                .await
                .unwrap()
                .unwrap()
                .client_secret
                .unwrap()
                .expose(),
            "s3cret"
        );
        assert!(alice.forget().await.unwrap());
        assert!(alice.load().await.unwrap().is_none());
        assert!(alice.client().await.unwrap().is_none());
    }
}
