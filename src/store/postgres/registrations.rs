//! Clients registered dynamically, shared by every user of a server and
//! by every replica: one registration per (server, redirect URI, issuer),
//! so a flow started on one replica and completed on another uses the
//! same client, and no replica registers a client of its own.

use std::sync::Arc;

use super::{Database, failed, sealing};
use crate::store::{ClientRecord, RegistrationStore, StoreError};
use crate::vault::Vault;

pub struct PgRegistrations {
    db: Database,
    vault: Arc<Vault>,
}

impl PgRegistrations {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self { db, vault }
    }
}

/// A missing issuer is kept as '' (a key column cannot be NULL; no
/// issuer is an empty URL).
fn issuer_key(issuer: Option<&str>) -> &str {
    issuer.unwrap_or("")
}

/// What a registration is sealed for: its whole key.
fn row(server_id: &str, redirect_uri: &str, issuer: &str) -> String {
    format!("registrations/{server_id}/{redirect_uri}/{issuer}")
}

#[async_trait::async_trait]
impl RegistrationStore for PgRegistrations {
    async fn find(
        &self,
        server_id: &str,
        redirect_uri: &str,
        issuer: Option<&str>,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let issuer = issuer_key(issuer);
        let sealed: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT client FROM registrations
             WHERE server_id = $1 AND redirect_uri = $2 AND issuer = $3",
        )
        .bind(server_id)
        .bind(redirect_uri)
        .bind(issuer)
        .fetch_optional(self.db.pool())
        .await
        .map_err(failed)?;
        sealed
            .map(|(sealed,)| {
                sealing::open(&self.vault, &row(server_id, redirect_uri, issuer), &sealed)
            })
            .transpose()
    }

    async fn remember(&self, server_id: &str, client: &ClientRecord) -> Result<(), StoreError> {
        let issuer = issuer_key(client.issuer.as_deref());
        let sealed = sealing::seal(
            &self.vault,
            &row(server_id, &client.redirect_uri, issuer),
            client,
        )?;
        sqlx::query(
            "INSERT INTO registrations (server_id, redirect_uri, issuer, client)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (server_id, redirect_uri, issuer) DO UPDATE SET client = EXCLUDED.client",
        )
        .bind(server_id)
        .bind(&client.redirect_uri)
        .bind(issuer)
        .bind(sealed)
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// Every registration of the server goes: the server no longer knows
    /// the client, whichever redirect URI it was made for.
    async fn forget(&self, server_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM registrations WHERE server_id = $1")
            .bind(server_id)
            .execute(self.db.pool())
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn all(&self) -> Result<Vec<(String, ClientRecord)>, StoreError> {
        let rows: Vec<(String, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT server_id, redirect_uri, issuer, client FROM registrations
             ORDER BY server_id, redirect_uri, issuer",
        )
        .fetch_all(self.db.pool())
        .await
        .map_err(failed)?;
        rows.into_iter()
            .map(|(server_id, redirect_uri, issuer, sealed)| {
                let client = sealing::open(
                    &self.vault,
                    &row(&server_id, &redirect_uri, &issuer),
                    &sealed,
                )?;
                Ok((server_id, client))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    fn client(id: &str, redirect: &str, issuer: Option<&str>) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            client_secret: Some(crate::secret::Secret::new("client-SECRET-41")),
            redirect_uri: redirect.into(),
            issuer: issuer.map(str::to_owned),
            scopes: vec![],
            assumed_endpoints: false,
            challenge: None,
        }
    }

    #[tokio::test]
    async fn a_registration_is_reused_only_for_the_same_redirect_and_issuer() {
        let db = testing::migrated().await;
        let registrations = PgRegistrations::new(db.database.clone(), db.vault.clone());
        let redirect = "http://127.0.0.1:1/oauth/callback";
        registrations
            .remember("demo", &client("c1", redirect, Some("http://as/")))
            .await
            .unwrap();
        registrations
            .remember("demo", &client("c2", redirect, None))
            .await
            .unwrap();
        let found = |redirect: &'static str, issuer: Option<&'static str>| {
            let registrations = &registrations;
            async move {
                registrations
                    .find("demo", redirect, issuer)
                    .await
                    .unwrap()
                    .map(|r| r.client_id)
            }
        };
        assert_eq!(found(redirect, Some("http://as/")).await, Some("c1".into()));
        assert_eq!(found(redirect, None).await, Some("c2".into()));
        assert_eq!(
            found("http://127.0.0.1:2/oauth/callback", Some("http://as/")).await,
            None
        );
        assert_eq!(found(redirect, Some("http://other/")).await, None);

        // A new registration for the same key replaces the old one.
        registrations
            .remember("demo", &client("c3", redirect, Some("http://as/")))
            .await
            .unwrap();
        assert_eq!(found(redirect, Some("http://as/")).await, Some("c3".into()));
        let all: Vec<(String, String)> = registrations
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|(server, client)| (server, client.client_id))
            .collect();
        assert_eq!(
            all,
            [("demo".into(), "c2".into()), ("demo".into(), "c3".into())],
            "each opened for its own row"
        );

        registrations.forget("demo").await.unwrap();
        assert_eq!(found(redirect, Some("http://as/")).await, None);
        assert_eq!(found(redirect, None).await, None);
        let cells = db.raw("SELECT client FROM registrations").await;
        assert!(cells.is_empty());
    }

    #[tokio::test]
    async fn the_client_secret_is_sealed() {
        let db = testing::migrated().await;
        let registrations = PgRegistrations::new(db.database.clone(), db.vault.clone());
        registrations
            .remember("demo", &client("c1", "http://x/cb", None))
            .await
            .unwrap();
        for cell in db
            .raw("SELECT convert_to(t::text, 'UTF8') FROM registrations t")
            .await
        {
            assert!(!cell.windows(13).any(|w| w == b"client-SECRET"));
        }
    }
}
