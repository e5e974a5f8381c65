//! Client registrations, cached per (server, redirect URI, issuer).
//!
//! Registering a new OAuth client on every `/connect` would litter the
//! authorization server with clients and trip its rate limits (the MCP
//! TypeScript SDK's server allows 20 an hour per IP), so one registration
//! is kept in the vault's system namespace and reused for every user while
//! the redirect URI and the issuer stay the same.

use std::sync::Arc;

use super::credentials::ClientRecord;
use crate::vault::{Namespace, Vault, VaultError};

fn key(server_id: &str) -> String {
    format!("oauth.registration.{server_id}")
}

#[derive(Clone)]
pub struct Registrations {
    vault: Arc<Vault>,
}

impl Registrations {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }

    /// The cached client for `server_id`, if it was registered for this
    /// redirect URI at this issuer.
    pub async fn find(
        &self,
        server_id: &str,
        redirect_uri: &str,
        issuer: Option<&str>,
    ) -> Result<Option<ClientRecord>, VaultError> {
        let record: Option<ClientRecord> = self
            .vault
            .get_json(Namespace::System, &key(server_id))
            .await?;
        Ok(record.filter(|r| r.redirect_uri == redirect_uri && r.issuer.as_deref() == issuer))
    }

    pub async fn remember(&self, server_id: &str, record: &ClientRecord) -> Result<(), VaultError> {
        self.vault
            .put_json(Namespace::System, &key(server_id), record)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    #[tokio::test]
    async fn a_registration_is_reused_only_for_the_same_redirect_and_issuer() {
        let temp = tempfile::tempdir().unwrap();
        let vault =
            Arc::new(Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap());
        let registrations = Registrations::new(vault);
        let record = ClientRecord {
            client_id: "c1".into(),
            client_secret: None,
            redirect_uri: "http://127.0.0.1:1/oauth/callback".into(),
            issuer: Some("http://as/".into()),
            scopes: vec![],
        };
        registrations.remember("demo", &record).await.unwrap();
        let found = |redirect: &'static str, issuer: &'static str| {
            let registrations = registrations.clone();
            async move {
                registrations
                    .find("demo", redirect, Some(issuer))
                    .await
                    .unwrap()
                    .map(|r| r.client_id)
            }
        };
        assert_eq!(
            found("http://127.0.0.1:1/oauth/callback", "http://as/").await,
            Some("c1".into())
        );
        assert_eq!(
            found("http://127.0.0.1:2/oauth/callback", "http://as/").await,
            None
        );
        assert_eq!(
            found("http://127.0.0.1:1/oauth/callback", "http://other/").await,
            None
        );
    }
}
