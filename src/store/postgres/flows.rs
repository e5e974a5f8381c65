//! Pending flows in PostgreSQL, with the semantics of the embedded
//! [`FlowTable`](crate::store::flows::FlowTable): the newest link of a
//! user for a server replaces the older one, a user has at most so many
//! links waiting, an expired flow is refused and named, the first browser
//! binds a flow, and a state is single use.
//!
//! Single use holds across replicas because a take is one statement,
//! `DELETE … WHERE state_hash = $1 RETURNING …`: of two callbacks with
//! the same state, on any replicas, exactly one gets the row. Inserts of
//! one user are serialised by a transaction-level advisory lock on the
//! user, so the limit and the replacement hold under concurrent
//! `/connect`s too.
//!
//! States and start ids are looked up by their SHA-256 (see the
//! migration), and the flow itself (PKCE verifier, authorization URL) is
//! sealed for its row.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::locks::advisory_key;
use super::{Database, failed, sealing, user_key};
use crate::logging::chain;
use crate::store::records::now_secs;
use crate::store::{
    BindError, ChatMessage, FlowStore, InsertError, PendingFlow, StoreError, TakeError,
};
use crate::vault::Vault;

/// The columns every read selects, in [`FlowRow`]'s order (a macro, so
/// queries stay literal strings).
macro_rules! columns {
    () => {
        "state_hash, binding, message_chat_id, message_id, flow"
    };
}

pub struct PgFlows {
    db: Database,
    vault: Arc<Vault>,
}

impl PgFlows {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self { db, vault }
    }

    /// The flow of a row: the sealed record, with the columns that change
    /// after it was sealed (binding, message) laid over it.
    fn open(&self, row: FlowRow) -> Result<PendingFlow, StoreError> {
        let mut flow: PendingFlow =
            sealing::open(&self.vault, &row_name(&row.state_hash), &row.flow)?;
        flow.binding = row.binding;
        flow.message = match (row.message_chat_id, row.message_id) {
            (Some(chat_id), Some(message_id)) => Some(ChatMessage {
                chat_id,
                message_id,
            }),
            _ => None,
        };
        Ok(flow)
    }

    async fn by_start_hash(&self, start_hash: &[u8]) -> Result<Option<PendingFlow>, StoreError> {
        let row: Option<FlowRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM pending_flows WHERE start_hash = $1"
        ))
        .bind(start_hash)
        .fetch_optional(self.db.pool())
        .await
        .map_err(failed)?;
        row.map(|row| self.open(row)).transpose()
    }

    /// Writes `flow` whole, over any row of the same state.
    async fn upsert<'c, E>(&self, executor: E, flow: &PendingFlow) -> Result<(), StoreError>
    where
        E: sqlx::PgExecutor<'c>,
    {
        let state_hash = digest(flow.state.as_str());
        let sealed = sealing::seal(&self.vault, &row_name(&state_hash), flow)?;
        sqlx::query(
            "INSERT INTO pending_flows (state_hash, start_hash, user_id, server_id, expires_at,
                                        binding, message_chat_id, message_id, flow)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (state_hash) DO UPDATE SET
                start_hash = EXCLUDED.start_hash, user_id = EXCLUDED.user_id,
                server_id = EXCLUDED.server_id, expires_at = EXCLUDED.expires_at,
                binding = EXCLUDED.binding, message_chat_id = EXCLUDED.message_chat_id,
                message_id = EXCLUDED.message_id, flow = EXCLUDED.flow",
        )
        .bind(state_hash)
        .bind(digest(flow.start_id.as_str()))
        .bind(user_key(flow.owner.user_id))
        .bind(&flow.server_id)
        .bind(epoch(flow.expires_at))
        .bind(&flow.binding)
        .bind(flow.message.map(|m| m.chat_id))
        .bind(flow.message.map(|m| m.message_id))
        .bind(sealed)
        .execute(executor)
        .await
        .map_err(failed)?;
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct FlowRow {
    state_hash: Vec<u8>,
    binding: Option<String>,
    message_chat_id: Option<i64>,
    message_id: Option<i32>,
    flow: Vec<u8>,
}

fn digest(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// What a flow is sealed for.
fn row_name(state_hash: &[u8]) -> String {
    format!("pending_flows/{}", hex::encode(state_hash))
}

/// Seconds since the epoch as PostgreSQL's BIGINT (good for 292 billion
/// years).
fn epoch(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn expired(flow: PendingFlow) -> TakeError {
    TakeError::Expired {
        owner: flow.owner,
        server_id: flow.server_id,
    }
}

#[async_trait::async_trait]
impl FlowStore for PgFlows {
    async fn insert(&self, flow: PendingFlow, max_per_user: u32) -> Result<(), InsertError> {
        let now = epoch(now_secs());
        let user = user_key(flow.owner.user_id);
        let mut tx = self.db.pool().begin().await.map_err(failed)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(advisory_key("flows", &[&flow.owner.user_id.to_be_bytes()]))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        // Live links for other servers count; the one this replaces does not.
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pending_flows
             WHERE user_id = $1 AND server_id <> $2 AND expires_at > $3",
        )
        .bind(user)
        .bind(&flow.server_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(failed)?;
        if waiting >= i64::from(max_per_user) {
            return Err(InsertError::TooMany(max_per_user));
        }
        // Expired ones stay until the sweep, so their owner hears of them.
        sqlx::query(
            "DELETE FROM pending_flows
             WHERE user_id = $1 AND server_id = $2 AND expires_at > $3",
        )
        .bind(user)
        .bind(&flow.server_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        self.upsert(&mut *tx, &flow).await?;
        tx.commit().await.map_err(failed)?;
        Ok(())
    }

    async fn by_start_id(&self, start_id: &str) -> Result<PendingFlow, TakeError> {
        let flow = self
            .by_start_hash(&digest(start_id))
            .await?
            .ok_or(TakeError::Unknown)?;
        if flow.is_expired() {
            return Err(expired(flow));
        }
        Ok(flow)
    }

    /// One conditional update: of two browsers, on any replicas, the one
    /// whose update finds no binding yet wins.
    async fn bind(&self, start_id: &str, binding: &str) -> Result<PendingFlow, BindError> {
        let start_hash = digest(start_id);
        let bound: Option<FlowRow> = sqlx::query_as(concat!(
            "UPDATE pending_flows SET binding = $2
             WHERE start_hash = $1 AND binding IS NULL AND expires_at > $3
             RETURNING ",
            columns!()
        ))
        .bind(&start_hash)
        .bind(binding)
        .bind(epoch(now_secs()))
        .fetch_optional(self.db.pool())
        .await
        .map_err(|error| TakeError::from(failed(error)))?;
        if let Some(row) = bound {
            return Ok(self.open(row).map_err(TakeError::from)?);
        }
        // Why not: gone, expired, or bound already.
        let flow = self
            .by_start_hash(&start_hash)
            .await
            .map_err(TakeError::from)?
            .ok_or(TakeError::Unknown)?;
        if flow.is_expired() {
            return Err(expired(flow).into());
        }
        if flow.binding.is_some() {
            return Err(BindError::AlreadyBound {
                owner: flow.owner,
                server_id: flow.server_id,
            });
        }
        Err(TakeError::Unknown.into())
    }

    async fn set_message(&self, start_id: &str, message: ChatMessage) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pending_flows SET message_chat_id = $2, message_id = $3
             WHERE start_hash = $1",
        )
        .bind(digest(start_id))
        .bind(message.chat_id)
        .bind(message.message_id)
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn take(&self, state: &str) -> Result<PendingFlow, TakeError> {
        let row: Option<FlowRow> = sqlx::query_as(concat!(
            "DELETE FROM pending_flows WHERE state_hash = $1 RETURNING ",
            columns!()
        ))
        .bind(digest(state))
        .fetch_optional(self.db.pool())
        .await
        .map_err(failed)?;
        let flow = self.open(row.ok_or(TakeError::Unknown)?)?;
        if flow.is_expired() {
            return Err(expired(flow));
        }
        Ok(flow)
    }

    async fn restore(&self, flow: PendingFlow) -> Result<(), StoreError> {
        self.upsert(self.db.pool(), &flow).await
    }

    /// Rows that cannot be opened (sealed with another key) are deleted
    /// with the rest and logged: nobody could complete them.
    async fn sweep(&self) -> Result<Vec<PendingFlow>, StoreError> {
        let rows: Vec<FlowRow> = sqlx::query_as(concat!(
            "DELETE FROM pending_flows WHERE expires_at <= $1 RETURNING ",
            columns!()
        ))
        .bind(epoch(now_secs()))
        .fetch_all(self.db.pool())
        .await
        .map_err(failed)?;
        let mut swept = Vec::with_capacity(rows.len());
        for row in rows {
            match self.open(row) {
                Ok(flow) => swept.push(flow),
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "an expired pending flow is unreadable; dropped");
                }
            }
        }
        Ok(swept)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_flows")
            .fetch_one(self.db.pool())
            .await
            .map_err(failed)?;
        Ok(usize::try_from(count).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;
