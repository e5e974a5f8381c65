//! What else is kept per user: the tools they allowed to run unasked, the
//! personal tokens they gave (sealed), and forgetting all of a user.

use std::sync::Arc;

use super::{Database, failed, sealing, user_key, user_of};
use crate::secret::Secret;
use crate::store::{Consents, PersonalTokens, StoreError, UserData};
use crate::vault::Vault;

/// Which tools a user allowed is not a secret (the vault keeps it in the
/// user's encrypted namespace only because everything of a user lives
/// there), so consents are plain rows: listing them needs no key.
pub struct PgConsents {
    db: Database,
}

impl PgConsents {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

#[async_trait::async_trait]
impl Consents for PgConsents {
    async fn allows(&self, user_id: u64, server_id: &str, tool: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM consents
                            WHERE user_id = $1 AND server_id = $2 AND tool = $3)",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .bind(tool)
        .fetch_one(self.db.pool())
        .await
        .map_err(failed)
    }

    async fn allow(&self, user_id: u64, server_id: &str, tool: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO consents (user_id, server_id, tool) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .bind(tool)
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn allowed(&self, user_id: u64) -> Result<Vec<(String, String)>, StoreError> {
        // Sorted as Rust sorts strings (bytewise), whatever the database's
        // collation.
        let mut allowed: Vec<(String, String)> =
            sqlx::query_as("SELECT server_id, tool FROM consents WHERE user_id = $1")
                .bind(user_key(user_id))
                .fetch_all(self.db.pool())
                .await
                .map_err(failed)?;
        allowed.sort();
        Ok(allowed)
    }

    async fn withdraw(
        &self,
        user_id: u64,
        server_id: &str,
        tool: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM consents WHERE user_id = $1 AND server_id = $2 AND tool = $3")
                .bind(user_key(user_id))
                .bind(server_id)
                .bind(tool)
                .execute(self.db.pool())
                .await
                .map_err(failed)?;
        Ok(done.rows_affected() > 0)
    }
}

pub struct PgPersonalTokens {
    db: Database,
    vault: Arc<Vault>,
}

impl PgPersonalTokens {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self { db, vault }
    }
}

/// What a personal token is sealed for.
fn token_row(user_id: u64, server_id: &str) -> String {
    format!("personal_tokens/{user_id}/{server_id}")
}

#[async_trait::async_trait]
impl PersonalTokens for PgPersonalTokens {
    async fn load(&self, user_id: u64, server_id: &str) -> Result<Option<Secret>, StoreError> {
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT token FROM personal_tokens WHERE user_id = $1 AND server_id = $2",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .fetch_optional(self.db.pool())
        .await
        .map_err(failed)?;
        sealed
            .map(|sealed| {
                sealing::open::<String>(&self.vault, &token_row(user_id, server_id), &sealed)
                    .map(Secret::from)
            })
            .transpose()
    }

    async fn save(&self, user_id: u64, server_id: &str, token: &Secret) -> Result<(), StoreError> {
        let sealed = sealing::seal(&self.vault, &token_row(user_id, server_id), token.expose())?;
        sqlx::query(
            "INSERT INTO personal_tokens (user_id, server_id, token) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, server_id) DO UPDATE SET token = EXCLUDED.token",
        )
        .bind(user_key(user_id))
        .bind(server_id)
        .bind(sealed)
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn remove(&self, user_id: u64, server_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM personal_tokens WHERE user_id = $1 AND server_id = $2")
            .bind(user_key(user_id))
            .bind(server_id)
            .execute(self.db.pool())
            .await
            .map_err(failed)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Forgetting a user deletes their rows in every table, in one
/// transaction: all of it goes, or (the database failing half-way)
/// nothing does and the user can ask again.
pub struct PgUserData {
    db: Database,
}

impl PgUserData {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

/// The rows of one user in every table that has them. Pending flows too:
/// a link the user still has must not complete into a store that was just
/// emptied.
const FORGET: [&str; 4] = [
    "DELETE FROM connections WHERE user_id = $1",
    "DELETE FROM consents WHERE user_id = $1",
    "DELETE FROM personal_tokens WHERE user_id = $1",
    "DELETE FROM pending_flows WHERE user_id = $1",
];

#[async_trait::async_trait]
impl UserData for PgUserData {
    async fn forget(&self, user_id: u64) -> Result<bool, StoreError> {
        let mut tx = self.db.pool().begin().await.map_err(failed)?;
        let mut any = false;
        for statement in FORGET {
            let done = sqlx::query(statement)
                .bind(user_key(user_id))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            any |= done.rows_affected() > 0;
        }
        tx.commit().await.map_err(failed)?;
        Ok(any)
    }

    /// Pending flows do not count: they expire within minutes and are
    /// not moved.
    async fn users(&self) -> Result<Vec<u64>, StoreError> {
        let users: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM connections
             UNION SELECT user_id FROM consents
             UNION SELECT user_id FROM personal_tokens
             ORDER BY 1",
        )
        .fetch_all(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(users.into_iter().map(user_of).collect())
    }

    async fn servers(&self, user_id: u64) -> Result<Vec<String>, StoreError> {
        let mut servers: Vec<String> = sqlx::query_scalar(
            "SELECT server_id FROM connections WHERE user_id = $1
             UNION SELECT server_id FROM consents WHERE user_id = $1
             UNION SELECT server_id FROM personal_tokens WHERE user_id = $1",
        )
        .bind(user_key(user_id))
        .fetch_all(self.db.pool())
        .await
        .map_err(failed)?;
        // Sorted as Rust sorts strings, whatever the database's collation.
        servers.sort();
        Ok(servers)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    /// Every table with a `user_id`; [`FORGET`] must cover each.
    const USER_TABLES: [&str; 4] = [
        "connections",
        "consents",
        "personal_tokens",
        "pending_flows",
    ];

    #[tokio::test]
    async fn consents_are_per_user_sorted_and_withdrawn() {
        let db = testing::migrated().await;
        let consents = PgConsents::new(db.database.clone());
        assert!(!consents.allows(1, "demo", "greet").await.unwrap());
        consents.allow(1, "demo", "greet").await.unwrap();
        consents.allow(1, "demo", "greet").await.unwrap();
        consents.allow(1, "b", "z").await.unwrap();
        consents.allow(2, "demo", "other").await.unwrap();
        assert!(consents.allows(1, "demo", "greet").await.unwrap());
        assert!(!consents.allows(2, "demo", "greet").await.unwrap());
        assert_eq!(
            consents.allowed(1).await.unwrap(),
            vec![
                ("b".to_owned(), "z".to_owned()),
                ("demo".to_owned(), "greet".to_owned())
            ]
        );
        assert!(consents.withdraw(1, "demo", "greet").await.unwrap());
        assert!(!consents.withdraw(1, "demo", "greet").await.unwrap());
        assert!(!consents.allows(1, "demo", "greet").await.unwrap());
    }

    #[tokio::test]
    async fn a_personal_token_is_sealed_and_per_user() {
        let db = testing::migrated().await;
        let tokens = PgPersonalTokens::new(db.database.clone(), db.vault.clone());
        let token = Secret::new("pat-PLAIN-8e1f");
        tokens.save(1, "demo", &token).await.unwrap();
        assert_eq!(tokens.load(1, "demo").await.unwrap(), Some(token));
        assert_eq!(tokens.load(2, "demo").await.unwrap(), None);
        for cell in db
            .raw("SELECT convert_to(t::text, 'UTF8') FROM personal_tokens t")
            .await
        {
            assert!(!cell.windows(9).any(|w| w == b"pat-PLAIN"));
        }
        tokens.save(1, "demo", &Secret::new("pat-2")).await.unwrap();
        assert_eq!(
            tokens.load(1, "demo").await.unwrap().unwrap().expose(),
            "pat-2"
        );
        assert!(tokens.remove(1, "demo").await.unwrap());
        assert!(!tokens.remove(1, "demo").await.unwrap());
    }

    #[tokio::test]
    async fn users_and_their_servers_are_listed_from_every_table() {
        let db = testing::migrated().await;
        let consents = PgConsents::new(db.database.clone());
        let tokens = PgPersonalTokens::new(db.database.clone(), db.vault.clone());
        let users = PgUserData::new(db.database.clone());
        assert!(users.users().await.unwrap().is_empty());
        consents.allow(30, "b", "z").await.unwrap();
        consents.allow(30, "a", "y").await.unwrap();
        tokens.save(30, "pat", &Secret::new("t")).await.unwrap();
        tokens.save(4, "a", &Secret::new("t")).await.unwrap();
        assert_eq!(users.users().await.unwrap(), [4, 30]);
        assert_eq!(users.servers(30).await.unwrap(), ["a", "b", "pat"]);
        assert_eq!(users.servers(4).await.unwrap(), ["a"]);
        assert!(users.servers(5).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn forgetting_a_user_removes_every_row_of_theirs_and_only_theirs() {
        use crate::store::{Connection, CredentialStore, FlowStore};

        let db = testing::migrated().await;
        let credentials =
            super::super::credentials::PgCredentials::new(db.database.clone(), db.vault.clone());
        let flows = super::super::flows::PgFlows::new(db.database.clone(), db.vault.clone());
        let consents = PgConsents::new(db.database.clone());
        let tokens = PgPersonalTokens::new(db.database.clone(), db.vault.clone());
        let users = PgUserData::new(db.database.clone());
        let connection = Connection {
            credentials: rmcp::transport::auth::StoredCredentials::new(
                "c".into(),
                None,
                vec![],
                None,
            ),
            client: crate::store::ClientRecord {
                client_id: "c".into(),
                client_secret: None,
                redirect_uri: "http://x/cb".into(),
                issuer: None,
                scopes: vec![],
                assumed_endpoints: false,
                challenge: None,
            },
        };
        for user in [1, 2] {
            credentials.save(user, "demo", &connection).await.unwrap();
            consents.allow(user, "demo", "greet").await.unwrap();
            tokens.save(user, "pat", &Secret::new("t")).await.unwrap();
            let verifier = oauth2::PkceCodeVerifier::new("v".repeat(43));
            let csrf = oauth2::CsrfToken::new("c".into());
            let flow = crate::store::PendingFlow {
                state: crate::store::FlowState::random(),
                start_id: crate::store::FlowState::random(),
                owner: crate::store::FlowOwner {
                    user_id: user,
                    chat_id: 1,
                },
                requester: "x".into(),
                server_id: "other".into(),
                expires_at: crate::store::PendingFlow::expires_after(
                    std::time::Duration::from_secs(600),
                ),
                authorization: rmcp::transport::auth::StoredAuthorizationState::new(
                    &verifier, &csrf,
                ),
                client: connection.client.clone(),
                authorize_url: Secret::new("http://as/authorize"),
                binding: None,
                message: None,
                resume: None,
            };
            flows.insert(flow, 3).await.unwrap();
        }

        assert!(users.forget(1).await.unwrap());
        assert!(!users.forget(1).await.unwrap(), "nothing left to forget");
        for table in USER_TABLES {
            let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE user_id = 1"
            )))
            .fetch_one(db.database.pool())
            .await
            .unwrap();
            assert_eq!(left, 0, "{table} still holds rows of the user");
            let others: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE user_id = 2"
            )))
            .fetch_one(db.database.pool())
            .await
            .unwrap();
            assert_eq!(others, 1, "{table} lost another user's rows");
        }
    }
}
