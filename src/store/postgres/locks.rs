//! Refresh locks as PostgreSQL advisory locks, so one refresh at a time
//! per (user, server) across every replica: a rotating refresh token is
//! never spent twice, whichever replica's session refreshes.
//!
//! A lock is transaction-level (`pg_advisory_xact_lock`) in a transaction
//! kept open for the guard's life, on a connection of the lock pool.
//! Dropping the guard drops the transaction; sqlx rolls it back before the
//! connection is reused (it pings every returned connection), which
//! releases the lock, and a connection that breaks meanwhile releases it
//! on the server's side. No unlock has to run in a `Drop`, and a replica
//! that dies never leaves a lock behind.
//!
//! rmcp takes the guard, then loads the tokens, refreshes and saves: the
//! replica that waited loads what the first one saved and refreshes with
//! the new refresh token, never the spent one.

use sha2::{Digest, Sha256};
use sqlx::Postgres;

use super::{Database, failed};
use crate::store::{RefreshGuard, RefreshLocks, StoreError};

pub struct PgRefreshLocks {
    db: Database,
}

impl PgRefreshLocks {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

/// A held lock: the transaction it was taken in.
struct Held {
    _transaction: sqlx::Transaction<'static, Postgres>,
}

#[async_trait::async_trait]
impl RefreshLocks for PgRefreshLocks {
    async fn acquire(&self, user_id: u64, server_id: &str) -> Result<RefreshGuard, StoreError> {
        let key = advisory_key("refresh", &[&user_id.to_be_bytes(), server_id.as_bytes()]);
        let mut transaction = self.db.locks.begin().await.map_err(failed)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *transaction)
            .await
            .map_err(failed)?;
        Ok(Box::new(Held {
            _transaction: transaction,
        }))
    }
}

/// A 64-bit advisory lock key for `parts` under `purpose`: the first 8
/// bytes of a SHA-256, the same in every process and every version (the
/// key is what two replicas agree on). Each part is length-prefixed so
/// ("ab", "c") and ("a", "bc") differ.
pub(super) fn advisory_key(purpose: &str, parts: &[&[u8]]) -> i64 {
    let mut hash = Sha256::new();
    hash.update(b"mcpgram/");
    hash.update(purpose.as_bytes());
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing;
    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    #[test]
    fn the_key_is_stable_and_tells_parts_apart() {
        let key = advisory_key("refresh", &[&1001u64.to_be_bytes(), b"demo"]);
        // Pinned (worked out apart from this code): replicas of different
        // builds must agree on it.
        assert_eq!(key, -4778788957267494007);
        assert_ne!(
            advisory_key("x", &[b"ab", b"c"]),
            advisory_key("x", &[b"a", b"bc"])
        );
        assert_ne!(
            key,
            advisory_key("flows", &[&1001u64.to_be_bytes(), b"demo"])
        );
    }

    /// Advisory lock requests the server has not granted yet.
    async fn waiting(db: &testing::TestDb) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(db.database.pool())
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_replica_waits_until_the_first_guard_drops() {
        let db = testing::migrated().await;
        let first = PgRefreshLocks::new(db.database.clone());
        let second = PgRefreshLocks::new(db.replica().await);
        let held = first.acquire(1, "demo").await.unwrap();

        // Another slot is free meanwhile, on either replica.
        let other = tokio::time::timeout(LIMIT, second.acquire(2, "demo")).await;
        drop(other.expect("another slot does not wait").unwrap());

        let (taken_tx, mut taken_rx) = tokio::sync::oneshot::channel();
        let contender = tokio::spawn(async move {
            let guard = second.acquire(1, "demo").await.unwrap();
            let _ = taken_tx.send(());
            drop(guard);
        });
        // The server says the second replica waits for this very lock…
        tokio::time::timeout(LIMIT, async {
            while waiting(&db).await == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the second acquire reaches the server and waits");
        // …and it has not got it.
        assert!(taken_rx.try_recv().is_err());

        drop(held);
        tokio::time::timeout(LIMIT, taken_rx)
            .await
            .expect("the lock passes once the guard drops")
            .unwrap();
        contender.await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_guard_can_be_taken_again_at_once() {
        let db = testing::migrated().await;
        let locks = PgRefreshLocks::new(db.database.clone());
        for _ in 0..3 {
            let guard = tokio::time::timeout(LIMIT, locks.acquire(1, "demo"))
                .await
                .expect("not left held")
                .unwrap();
            drop(guard);
        }
    }
}
