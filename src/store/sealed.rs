//! Credentials and client registrations in the age vault.
//!
//! A user's tokens live in that user's namespace (one encrypted file), so
//! writing them costs the same however many users there are, and deleting
//! a user is deleting a file. Registrations are shared by every user of a
//! server and live in the system namespace.

use std::sync::Arc;

use rmcp::transport::auth::StoredCredentials;

use super::{
    ClientRecord, Connection, Consents, CredentialStore, PersonalTokens, RegistrationStore,
    StoreError, UserData,
};
use crate::secret::Secret;
use crate::vault::{Change, Namespace, Vault};

/// Vault key of the token record of `server_id`.
pub fn credentials_key(server_id: &str) -> String {
    format!("mcp.oauth.{server_id}.credentials")
}

/// Vault key of the client the tokens were issued to.
pub fn client_key(server_id: &str) -> String {
    format!("mcp.oauth.{server_id}.client")
}

/// Every key of `server_id` in a user's namespace starts with this.
fn server_prefix(server_id: &str) -> String {
    format!("mcp.oauth.{server_id}.")
}

const REGISTRATION_PREFIX: &str = "oauth.registration.";

fn registration_key(server_id: &str) -> String {
    format!("{REGISTRATION_PREFIX}{server_id}")
}

/// Consents have a prefix of their own, so a disconnect (which drops
/// every `mcp.oauth.<server>.` key) leaves them.
const CONSENT_PREFIX: &str = "consent/";

/// Vault key of a user's consent to run `tool` of `server_id` unasked;
/// server ids hold no `/`, so the first one after the prefix splits.
fn consent_key(server_id: &str, tool: &str) -> String {
    format!("{CONSENT_PREFIX}{server_id}/{tool}")
}

pub struct VaultConsents {
    vault: Arc<Vault>,
}

impl VaultConsents {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

#[async_trait::async_trait]
impl Consents for VaultConsents {
    async fn allows(&self, user_id: u64, server_id: &str, tool: &str) -> Result<bool, StoreError> {
        let key = consent_key(server_id, tool);
        let value: Option<bool> = self.vault.get_json(Namespace::User(user_id), &key).await?;
        Ok(value == Some(true))
    }

    async fn allow(&self, user_id: u64, server_id: &str, tool: &str) -> Result<(), StoreError> {
        let key = consent_key(server_id, tool);
        self.vault
            .put_json(Namespace::User(user_id), &key, &true)
            .await?;
        Ok(())
    }

    async fn allowed(&self, user_id: u64) -> Result<Vec<(String, String)>, StoreError> {
        let mut allowed: Vec<(String, String)> = self
            .vault
            .keys(Namespace::User(user_id))
            .await?
            .iter()
            .filter_map(|key| key.strip_prefix(CONSENT_PREFIX)?.split_once('/'))
            .map(|(server, tool)| (server.to_owned(), tool.to_owned()))
            .collect();
        allowed.sort();
        Ok(allowed)
    }

    async fn withdraw(
        &self,
        user_id: u64,
        server_id: &str,
        tool: &str,
    ) -> Result<bool, StoreError> {
        let key = consent_key(server_id, tool);
        Ok(self.vault.remove(Namespace::User(user_id), &key).await?)
    }
}

/// Vault key of a user's personal token for `server_id`.
fn personal_token_key(server_id: &str) -> String {
    format!("mcp.token.{server_id}")
}

pub struct VaultPersonalTokens {
    vault: Arc<Vault>,
}

impl VaultPersonalTokens {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

#[async_trait::async_trait]
impl PersonalTokens for VaultPersonalTokens {
    async fn load(&self, user_id: u64, server_id: &str) -> Result<Option<Secret>, StoreError> {
        let key = personal_token_key(server_id);
        Ok(self.vault.get(Namespace::User(user_id), &key).await?)
    }

    async fn save(&self, user_id: u64, server_id: &str, token: &Secret) -> Result<(), StoreError> {
        let key = personal_token_key(server_id);
        self.vault
            .put(Namespace::User(user_id), &key, token.clone())
            .await?;
        Ok(())
    }

    async fn remove(&self, user_id: u64, server_id: &str) -> Result<bool, StoreError> {
        let key = personal_token_key(server_id);
        Ok(self.vault.remove(Namespace::User(user_id), &key).await?)
    }
}

/// A user's namespace is one file: forgetting them is deleting it.
pub struct VaultUserData {
    vault: Arc<Vault>,
}

impl VaultUserData {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

#[async_trait::async_trait]
impl UserData for VaultUserData {
    async fn forget(&self, user_id: u64) -> Result<bool, StoreError> {
        Ok(self.vault.forget(Namespace::User(user_id)).await?)
    }

    async fn users(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.vault.users()?)
    }

    /// Read from the keys' names: every key of a user's namespace names
    /// its server (see the `*_key` functions above).
    async fn servers(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        let mut servers: Vec<String> = self
            .vault
            .keys(Namespace::User(user_id))
            .await?
            .iter()
            .filter_map(|key| server_of(key))
            .map(str::to_owned)
            .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }
}

/// The server id a user's key belongs to.
fn server_of(key: &str) -> Option<&str> {
    if let Some(rest) = key.strip_prefix("mcp.oauth.") {
        return rest
            .strip_suffix(".credentials")
            .or_else(|| rest.strip_suffix(".client"));
    }
    if let Some(server) = key.strip_prefix("mcp.token.") {
        return Some(server);
    }
    Some(key.strip_prefix(CONSENT_PREFIX)?.split_once('/')?.0)
}

pub struct VaultCredentials {
    vault: Arc<Vault>,
}

impl VaultCredentials {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

#[async_trait::async_trait]
impl CredentialStore for VaultCredentials {
    async fn load(&self, user_id: u64, server_id: &str) -> Result<Option<Connection>, StoreError> {
        let ns = Namespace::User(user_id);
        let credentials: Option<StoredCredentials> =
            self.vault.get_json(ns, &credentials_key(server_id)).await?;
        let client: Option<ClientRecord> = self.vault.get_json(ns, &client_key(server_id)).await?;
        Ok(match (credentials, client) {
            (Some(credentials), Some(client)) => Some(Connection {
                credentials,
                client,
            }),
            // Half a connection cannot be used or refreshed; it reads as
            // none, and the next connect overwrites both halves.
            _ => None,
        })
    }

    async fn save(
        &self,
        user_id: u64,
        server_id: &str,
        connection: &Connection,
    ) -> Result<(), StoreError> {
        let changes = vec![
            Change::put_json(&credentials_key(server_id), &connection.credentials)?,
            Change::put_json(&client_key(server_id), &connection.client)?,
        ];
        self.vault.apply(Namespace::User(user_id), changes).await?;
        Ok(())
    }

    async fn save_tokens(
        &self,
        user_id: u64,
        server_id: &str,
        credentials: &StoredCredentials,
    ) -> Result<(), StoreError> {
        self.vault
            .put_json(
                Namespace::User(user_id),
                &credentials_key(server_id),
                credentials,
            )
            .await?;
        Ok(())
    }

    /// Keeps what the credentials say about the grant (client, scopes,
    /// issuer) without the tokens, so the connection reads as expired, not
    /// as never made.
    async fn clear_tokens(&self, user_id: u64, server_id: &str) -> Result<(), StoreError> {
        let ns = Namespace::User(user_id);
        let key = credentials_key(server_id);
        let Some(mut credentials) = self.vault.get_json::<StoredCredentials>(ns, &key).await?
        else {
            return Ok(());
        };
        credentials.token_response = None;
        self.vault.put_json(ns, &key, &credentials).await?;
        Ok(())
    }

    async fn remove(&self, user_id: u64, server_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .vault
            .remove_prefix(Namespace::User(user_id), &server_prefix(server_id))
            .await?)
    }
}

/// One registration per server, reused while the redirect URI and the
/// issuer stay the same: registering on every `/connect` would litter the
/// authorization server with clients and trip its rate limits (the MCP
/// TypeScript SDK's server allows 20 an hour per address).
pub struct VaultRegistrations {
    vault: Arc<Vault>,
}

impl VaultRegistrations {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

#[async_trait::async_trait]
impl RegistrationStore for VaultRegistrations {
    async fn find(
        &self,
        server_id: &str,
        redirect_uri: &str,
        issuer: Option<&str>,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let record: Option<ClientRecord> = self
            .vault
            .get_json(Namespace::System, &registration_key(server_id))
            .await?;
        Ok(record.filter(|r| r.redirect_uri == redirect_uri && r.issuer.as_deref() == issuer))
    }

    async fn remember(&self, server_id: &str, client: &ClientRecord) -> Result<(), StoreError> {
        self.vault
            .put_json(Namespace::System, &registration_key(server_id), client)
            .await?;
        Ok(())
    }

    async fn forget(&self, server_id: &str) -> Result<(), StoreError> {
        self.vault
            .remove(Namespace::System, &registration_key(server_id))
            .await?;
        Ok(())
    }

    async fn all(&self) -> Result<Vec<(String, ClientRecord)>, StoreError> {
        let mut all = Vec::new();
        for key in self.vault.keys(Namespace::System).await? {
            let Some(server_id) = key.strip_prefix(REGISTRATION_PREFIX) else {
                continue;
            };
            if let Some(client) = self.vault.get_json(Namespace::System, &key).await? {
                all.push((server_id.to_owned(), client));
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::vault::KeySource;

    fn vault(dir: &std::path::Path) -> Arc<Vault> {
        Arc::new(Vault::open(dir, &KeySource::File(dir.join("k"))).unwrap())
    }

    fn client(id: &str, redirect: &str, issuer: Option<&str>) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            client_secret: Some(Secret::new("s3cret")),
            redirect_uri: redirect.into(),
            issuer: issuer.map(str::to_owned),
            scopes: vec![],
            assumed_endpoints: false,
            challenge: None,
        }
    }

    #[tokio::test]
    async fn each_user_and_server_sees_only_its_own_connection() {
        let temp = tempfile::tempdir().unwrap();
        let store = VaultCredentials::new(vault(temp.path()));
        let connection = Connection {
            credentials: StoredCredentials::new("c1".into(), None, vec!["a".into()], Some(5)),
            client: client("c1", "http://127.0.0.1/cb", None),
        };
        store.save(1, "demo", &connection).await.unwrap();
        let loaded = store.load(1, "demo").await.unwrap().unwrap();
        assert_eq!(loaded.credentials.client_id, "c1");
        assert_eq!(loaded.client.client_secret.unwrap().expose(), "s3cret");
        assert!(store.load(2, "demo").await.unwrap().is_none());
        assert!(store.load(1, "other").await.unwrap().is_none());

        store.clear_tokens(1, "demo").await.unwrap();
        let expired = store.load(1, "demo").await.unwrap().unwrap();
        assert!(!expired.has_tokens(), "reads as expired, not as never made");
        assert_eq!(expired.credentials.granted_scopes, vec!["a".to_owned()]);
        assert!(
            store.remove(1, "demo").await.unwrap(),
            "the client was left"
        );
        assert!(!store.remove(1, "demo").await.unwrap());
    }

    #[tokio::test]
    async fn a_registration_is_reused_only_for_the_same_redirect_and_issuer() {
        let temp = tempfile::tempdir().unwrap();
        let registrations = VaultRegistrations::new(vault(temp.path()));
        let redirect = "http://127.0.0.1:1/oauth/callback";
        registrations
            .remember("demo", &client("c1", redirect, Some("http://as/")))
            .await
            .unwrap();
        let found = |redirect: &'static str, issuer: &'static str| {
            let registrations = &registrations;
            async move {
                registrations
                    .find("demo", redirect, Some(issuer))
                    .await
                    .unwrap()
                    .map(|r| r.client_id)
            }
        };
        assert_eq!(found(redirect, "http://as/").await, Some("c1".into()));
        assert_eq!(
            found("http://127.0.0.1:2/oauth/callback", "http://as/").await,
            None
        );
        assert_eq!(found(redirect, "http://other/").await, None);
    }
}
