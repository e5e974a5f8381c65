//! Replies that reach another replica than the one holding the user's
//! dialogue. A dialogue (a guided call's questions, a server's question,
//! `/token`) lives in the memory of the replica that opened it, while
//! Telegram's webhook lands anywhere: the replica that opens a dialogue
//! says so in `dialogue_homes`, and one that receives a reply it has no
//! dialogue for hands the update over: sealed into `handoffs`, announced
//! with `NOTIFY`, taken once by its replica, which handles it as if it
//! had come straight from Telegram.
//!
//! A replica that died cannot take what is handed to it: the sender waits
//! a moment for the take, and otherwise withdraws the update, forgets the
//! dead replica's claim and handles the update itself.

use std::time::Duration;

use super::{Database, notices, sealing, user_key};
use crate::store::{Handoffs, StoreError};
use crate::vault::Vault;
use std::sync::Arc;

/// The channel on which replicas announce a handed-over update.
const CHANNEL: &str = "mcpgram_handoff";
/// How long a claim on a user's dialogue holds without being renewed (a
/// dialogue that waits longer is claimed again at its next question).
const CLAIM: Duration = Duration::from_secs(3600);
/// How long the sender waits for the holder to take an update.
const TAKE_WITHIN: Duration = Duration::from_secs(3);

pub struct PgHandoffs {
    db: Database,
    vault: Arc<Vault>,
    /// This process, among the replicas.
    replica: String,
}

impl PgHandoffs {
    pub fn new(db: Database, vault: Arc<Vault>) -> Self {
        Self {
            db,
            vault,
            replica: hex::encode(rand::random::<[u8; 8]>()),
        }
    }

    fn row(id: i64) -> String {
        format!("handoffs/{id}")
    }

    /// Waits until the update `id` is taken; answers whether it was.
    async fn taken(&self, id: i64) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + TAKE_WITHIN;
        let mut pause = Duration::from_millis(20);
        loop {
            let waiting: Option<i64> = sqlx::query_scalar("SELECT id FROM handoffs WHERE id = $1")
                .bind(id)
                .fetch_optional(self.db.pool())
                .await
                .map_err(StoreError::Database)?;
            if waiting.is_none() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Takes update `id` if it is this replica's.
    async fn take(&self, id: i64) -> Result<Option<serde_json::Value>, StoreError> {
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM handoffs WHERE id = $1 AND replica = $2 RETURNING sealed",
        )
        .bind(id)
        .bind(&self.replica)
        .fetch_optional(self.db.pool())
        .await
        .map_err(StoreError::Database)?;
        sealed
            .map(|sealed| sealing::open(&self.vault, &Self::row(id), &sealed))
            .transpose()
    }

    /// A notice on [`CHANNEL`]: `"<replica>:<id>"`; this replica's
    /// updates are taken and delivered.
    async fn on_notice(&self, payload: &str, deliver: &(dyn Fn(serde_json::Value) + Send + Sync)) {
        let Some((replica, id)) = payload.split_once(':') else {
            return;
        };
        let Ok(id) = id.parse::<i64>() else {
            return;
        };
        if replica != self.replica {
            return;
        }
        match self.take(id).await {
            Ok(Some(update)) => deliver(update),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %crate::logging::chain(&error), "could not take an update another replica handed over");
            }
        }
    }
}

#[async_trait::async_trait]
impl Handoffs for PgHandoffs {
    fn shared(&self) -> bool {
        true
    }

    async fn claim(&self, user_id: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dialogue_homes (user_id, replica, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (user_id) DO UPDATE
             SET replica = EXCLUDED.replica, expires_at = EXCLUDED.expires_at",
        )
        .bind(user_key(user_id))
        .bind(&self.replica)
        .bind(CLAIM.as_secs_f64())
        .execute(self.db.pool())
        .await
        .map_err(StoreError::Database)?;
        Ok(())
    }

    async fn leave(&self, user_id: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dialogue_homes WHERE user_id = $1 AND replica = $2")
            .bind(user_key(user_id))
            .bind(&self.replica)
            .execute(self.db.pool())
            .await
            .map_err(StoreError::Database)?;
        Ok(())
    }

    async fn hand_over(
        &self,
        user_id: u64,
        update: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let home: Option<String> = sqlx::query_scalar(
            "SELECT replica FROM dialogue_homes
             WHERE user_id = $1 AND expires_at > now() AND replica <> $2",
        )
        .bind(user_key(user_id))
        .bind(&self.replica)
        .fetch_optional(self.db.pool())
        .await
        .map_err(StoreError::Database)?;
        let Some(home) = home else {
            return Ok(false);
        };
        let mut tx = self.db.pool().begin().await.map_err(StoreError::Database)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO handoffs (replica, sealed) VALUES ($1, '') RETURNING id",
        )
        .bind(&home)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::Database)?;
        let sealed = sealing::seal(&self.vault, &Self::row(id), update)?;
        sqlx::query("UPDATE handoffs SET sealed = $2 WHERE id = $1")
            .bind(id)
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::Database)?;
        notices::notify(&mut *tx, CHANNEL, &format!("{home}:{id}"))
            .await
            .map_err(StoreError::Database)?;
        tx.commit().await.map_err(StoreError::Database)?;
        if self.taken(id).await? {
            return Ok(true);
        }
        // Nobody took it: that replica is gone, and its dialogue with it.
        tracing::warn!(
            user = user_id,
            "the replica holding a dialogue did not take a reply; handling it here"
        );
        let withdrawn = sqlx::query("DELETE FROM handoffs WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await
            .map_err(StoreError::Database)?;
        sqlx::query("DELETE FROM dialogue_homes WHERE user_id = $1 AND replica = $2")
            .bind(user_key(user_id))
            .bind(&home)
            .execute(self.db.pool())
            .await
            .map_err(StoreError::Database)?;
        // Taken at the last moment after all.
        Ok(withdrawn.rows_affected() == 0)
    }

    fn listen(
        self: Arc<Self>,
        deliver: Box<dyn Fn(serde_json::Value) + Send + Sync>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let deliver: Arc<dyn Fn(serde_json::Value) + Send + Sync> = Arc::from(deliver);
        let db = self.db.clone();
        Some(tokio::spawn(notices::listen(db, CHANNEL, move |payload| {
            let (this, deliver) = (self.clone(), deliver.clone());
            async move { this.on_notice(&payload, &*deliver).await }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::testing;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_reaches_the_replica_holding_the_dialogue_once() {
        let db = testing::migrated().await;
        let home = Arc::new(PgHandoffs::new(db.database.clone(), db.vault.clone()));
        let other = PgHandoffs::new(db.replica().await, db.vault.clone());
        let (delivered, mut received) = tokio::sync::mpsc::unbounded_channel();
        let listening = home
            .clone()
            .listen(Box::new(move |update| {
                let _ = delivered.send(update);
            }))
            .unwrap();

        // No dialogue anywhere: nothing to hand over.
        let update = serde_json::json!({"update_id": 7, "text": "tok-SECRET"});
        assert!(!other.hand_over(1001, &update).await.unwrap());

        home.claim(1001).await.unwrap();
        // The listener may not be listening yet: try until it takes one.
        let mut handed = false;
        for _ in 0..50 {
            if other.hand_over(1001, &update).await.unwrap() {
                handed = true;
                break;
            }
            home.claim(1001).await.unwrap();
        }
        assert!(handed, "the holder took the update");
        assert_eq!(received.recv().await.unwrap(), update);
        assert!(
            db.raw("SELECT sealed FROM handoffs").await.is_empty(),
            "taken once, nothing left"
        );
        // The holder itself never hands to itself.
        assert!(!home.hand_over(1001, &update).await.unwrap());

        // Its dialogue ended: nothing is handed over any more.
        home.leave(1001).await.unwrap();
        assert!(!other.hand_over(1001, &update).await.unwrap());
        listening.abort();
    }

    #[tokio::test]
    async fn a_dead_holder_is_given_up_on_and_forgotten() {
        let db = testing::migrated().await;
        let dead = PgHandoffs::new(db.database.clone(), db.vault.clone());
        let other = PgHandoffs::new(db.replica().await, db.vault.clone());
        dead.claim(2002).await.unwrap();
        let update = serde_json::json!({"update_id": 8});
        assert!(
            !other.hand_over(2002, &update).await.unwrap(),
            "no one took it: handled where it landed"
        );
        assert!(db.raw("SELECT sealed FROM handoffs").await.is_empty());
        assert!(
            db.raw("SELECT replica::bytea FROM dialogue_homes")
                .await
                .is_empty(),
            "the dead replica's claim is gone"
        );
    }
}
