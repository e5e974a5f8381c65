//! Each user's tokens per server, and the client they were issued to: one
//! row per (user, server). The two halves are sealed apart, so a refresh
//! rewrites the tokens and leaves the client (and its secret) as it was.

use std::sync::Arc;

use rmcp::transport::auth::StoredCredentials;

use super::{Database, failed, sealing, user_key};
use crate::store::{Connection, CredentialStore, StoreError};
use crate::vault::Vault;

pub struct PgCredentials {
    db: Database,
    vault: Arc<Vault>,
}

impl PgCredentials {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self { db, vault }
    }
}

/// What a sealed half is sealed for.
fn row(user_id: u64, server_id: &str, half: &str) -> String {
    format!("connections/{user_id}/{server_id}/{half}")
}

#[async_trait::async_trait]
impl CredentialStore for PgCredentials {
    async fn load(&self, user_id: u64, server_id: &str) -> Result<Option<Connection>, StoreError> {
        let sealed: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT client, credentials FROM connections WHERE user_id = $1 AND server_id = $2",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .fetch_optional(self.db.pool())
        .await
        .map_err(failed)?;
        let Some((client, credentials)) = sealed else {
            return Ok(None);
        };
        Ok(Some(Connection {
            client: sealing::open(&self.vault, &row(user_id, server_id, "client"), &client)?,
            credentials: sealing::open(
                &self.vault,
                &row(user_id, server_id, "credentials"),
                &credentials,
            )?,
        }))
    }

    async fn save(
        &self,
        user_id: u64,
        server_id: &str,
        connection: &Connection,
    ) -> Result<(), StoreError> {
        let client = sealing::seal(
            &self.vault,
            &row(user_id, server_id, "client"),
            &connection.client,
        )?;
        let credentials = sealing::seal(
            &self.vault,
            &row(user_id, server_id, "credentials"),
            &connection.credentials,
        )?;
        sqlx::query(
            "INSERT INTO connections (user_id, server_id, client, credentials)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, server_id) DO UPDATE
             SET client = EXCLUDED.client, credentials = EXCLUDED.credentials, updated_at = now()",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .bind(client)
        .bind(credentials)
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// Tokens for a connection that is gone (disconnected while a refresh
    /// was under way) are dropped: without their client they could not be
    /// used or refreshed anyway.
    async fn save_tokens(
        &self,
        user_id: u64,
        server_id: &str,
        credentials: &StoredCredentials,
    ) -> Result<(), StoreError> {
        let sealed = sealing::seal(
            &self.vault,
            &row(user_id, server_id, "credentials"),
            credentials,
        )?;
        sqlx::query(
            "UPDATE connections SET credentials = $3, updated_at = now()
             WHERE user_id = $1 AND server_id = $2",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .bind(sealed)
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    /// Keeps what the credentials say about the grant (client, scopes,
    /// issuer) without the tokens, so the connection reads as expired, not
    /// as never made. The row is locked from read to write: a refresh
    /// saving meanwhile on another replica is not undone half-way.
    async fn clear_tokens(&self, user_id: u64, server_id: &str) -> Result<(), StoreError> {
        let row_name = row(user_id, server_id, "credentials");
        let mut tx = self.db.pool().begin().await.map_err(failed)?;
        let sealed: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT credentials FROM connections
             WHERE user_id = $1 AND server_id = $2 FOR UPDATE",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed)?;
        let Some((sealed,)) = sealed else {
            return Ok(());
        };
        let mut credentials: StoredCredentials = sealing::open(&self.vault, &row_name, &sealed)?;
        credentials.token_response = None;
        let sealed = sealing::seal(&self.vault, &row_name, &credentials)?;
        sqlx::query(
            "UPDATE connections SET credentials = $3, updated_at = now()
             WHERE user_id = $1 AND server_id = $2",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .bind(sealed)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn remove(&self, user_id: u64, server_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM connections WHERE user_id = $1 AND server_id = $2")
            .bind(user_key(user_id))
            .bind(server_id)
            .execute(self.db.pool())
            .await
            .map_err(failed)?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use oauth2::basic::BasicTokenType;
    use oauth2::{AccessToken, RefreshToken};
    use rmcp::transport::auth::OAuthTokenResponse;

    use super::super::testing;
    use super::*;
    use crate::store::ClientRecord;

    fn tokens(access: &str, refresh: &str) -> StoredCredentials {
        let mut response = OAuthTokenResponse::new(
            AccessToken::new(access.into()),
            BasicTokenType::Bearer,
            Default::default(),
        );
        response.set_refresh_token(Some(RefreshToken::new(refresh.into())));
        let mut credentials =
            StoredCredentials::new("c1".into(), Some(response), vec!["read".into()], Some(7));
        credentials.token_received_at = Some(7);
        credentials
    }

    fn client(id: &str, secret: Option<&str>) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            client_secret: secret.map(crate::secret::Secret::new),
            redirect_uri: "http://127.0.0.1/oauth/callback".into(),
            issuer: Some("http://as/".into()),
            scopes: vec!["read".into()],
            assumed_endpoints: false,
            challenge: None,
        }
    }

    fn access_token(connection: &Connection) -> Option<String> {
        use oauth2::TokenResponse;
        connection
            .credentials
            .token_response
            .as_ref()
            .map(|t| t.access_token().secret().clone())
    }

    #[tokio::test]
    async fn a_connection_round_trips_per_user_and_server() {
        let db = testing::migrated().await;
        let store = PgCredentials::new(db.database.clone(), db.vault.clone());
        let connection = Connection {
            credentials: tokens("at-1", "rt-1"),
            client: client("c1", Some("s3cret")),
        };
        store.save(1, "demo", &connection).await.unwrap();
        let loaded = store.load(1, "demo").await.unwrap().unwrap();
        assert_eq!(access_token(&loaded).as_deref(), Some("at-1"));
        assert_eq!(loaded.client.client_secret.unwrap().expose(), "s3cret");
        assert!(store.load(2, "demo").await.unwrap().is_none());
        assert!(store.load(1, "other").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn new_tokens_and_cleared_tokens_keep_the_client() {
        let db = testing::migrated().await;
        let store = PgCredentials::new(db.database.clone(), db.vault.clone());
        let connection = Connection {
            credentials: tokens("at-1", "rt-1"),
            client: client("c1", Some("s3cret")),
        };
        store.save(1, "demo", &connection).await.unwrap();

        store
            .save_tokens(1, "demo", &tokens("at-2", "rt-2"))
            .await
            .unwrap();
        let refreshed = store.load(1, "demo").await.unwrap().unwrap();
        assert_eq!(access_token(&refreshed).as_deref(), Some("at-2"));
        assert_eq!(refreshed.client.client_secret.unwrap().expose(), "s3cret");

        store.clear_tokens(1, "demo").await.unwrap();
        let expired = store.load(1, "demo").await.unwrap().unwrap();
        assert!(!expired.has_tokens(), "reads as expired, not as never made");
        assert_eq!(expired.credentials.granted_scopes, vec!["read".to_owned()]);
        assert_eq!(expired.client.client_id, "c1");

        assert!(store.remove(1, "demo").await.unwrap());
        assert!(!store.remove(1, "demo").await.unwrap());
        // Nothing to clear or refresh once removed, and nothing comes back.
        store.clear_tokens(1, "demo").await.unwrap();
        store
            .save_tokens(1, "demo", &tokens("at-3", "rt-3"))
            .await
            .unwrap();
        assert!(store.load(1, "demo").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_database_never_holds_a_token_or_secret_in_clear() {
        let db = testing::migrated().await;
        let store = PgCredentials::new(db.database.clone(), db.vault.clone());
        let connection = Connection {
            credentials: tokens("at-PLAIN-7f3a", "rt-PLAIN-9c1e"),
            client: client("c1", Some("secret-PLAIN-5d2b")),
        };
        store.save(1, "demo", &connection).await.unwrap();
        let cells = db
            .raw(
                "SELECT convert_to(t::text, 'UTF8') FROM connections t
                 UNION ALL SELECT client FROM connections
                 UNION ALL SELECT credentials FROM connections",
            )
            .await;
        assert_eq!(cells.len(), 3);
        for cell in cells {
            for needle in [&b"at-PLAIN"[..], b"rt-PLAIN", b"secret-PLAIN"] {
                assert!(
                    !cell.windows(needle.len()).any(|w| w == needle),
                    "a secret in clear in the database"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_sealed_cell_moved_to_another_users_row_is_refused() {
        let db = testing::migrated().await;
        let store = PgCredentials::new(db.database.clone(), db.vault.clone());
        let alice = Connection {
            credentials: tokens("at-alice", "rt-alice"),
            client: client("c1", None),
        };
        store.save(1, "demo", &alice).await.unwrap();
        store
            .save(
                2,
                "demo",
                &Connection {
                    credentials: tokens("at-mallory", "rt-mallory"),
                    client: client("c1", None),
                },
            )
            .await
            .unwrap();
        sqlx::query(
            "UPDATE connections SET credentials =
             (SELECT credentials FROM connections WHERE user_id = 1) WHERE user_id = 2",
        )
        .execute(db.database.pool())
        .await
        .unwrap();
        assert!(matches!(
            store.load(2, "demo").await,
            Err(StoreError::Misplaced)
        ));
    }
}
