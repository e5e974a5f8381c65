//! One command at a time per user across every replica: a lease row per
//! user. Taking it is one `INSERT … ON CONFLICT DO UPDATE … WHERE` the
//! old lease has expired, so two replicas can never both take it. The
//! lease is renewed while the command runs and deleted when it ends; a
//! replica that dies leaves its users locked out for one lease at most
//! (`store.lease`), and not at all when another replica takes over its
//! unfinished updates (see [`super::journal`]). Each lease names the
//! replica holding it for that.
//!
//! The guard is about fairness, not data (tokens are safe by the refresh
//! locks, flows by their single-use take), so a database that fails here
//! lets the command run rather than refusing it: the command meets the
//! database's trouble itself and says so.

use std::time::Duration;

use rand::RngCore;

use super::{Database, notices, user_key};
use crate::store::{CommandGuards, CommandTicket, Running, StoreError};

/// A command's lease is deleted just after its answer goes out, by a task
/// of its own (a drop cannot wait for the database): a user who answers
/// at once, through another replica, may find it still there. Looking
/// again for this long tells "just finished" from "still running".
const JUST_ENDED: [Duration; 3] = [
    Duration::from_millis(30),
    Duration::from_millis(60),
    Duration::from_millis(120),
];

pub struct PgCommandGuards {
    db: Database,
}

impl PgCommandGuards {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

/// A held lease: renewed by a task until dropped, then deleted.
struct Lease {
    db: Database,
    user_id: u64,
    holder: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewing.abort();
        let (db, user, holder) = (self.db.clone(), user_key(self.user_id), self.holder.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // The user stays locked out until this succeeds or the
                // lease expires.
                super::write_patiently("end a command's lease", &[100, 500, 2000, 5000], || {
                    sqlx::query("DELETE FROM command_leases WHERE user_id = $1 AND holder = $2")
                        .bind(user)
                        .bind(&holder)
                        .execute(db.pool())
                })
                .await;
            });
        }
    }
}

impl PgCommandGuards {
    fn lease_secs(&self) -> f64 {
        self.db.lease().as_secs_f64()
    }
}

/// The channel on which replicas ask each other to cancel a user's call.
const CANCELS: &str = "mcpgram_cancel";

/// Cancels, through `cancel`, the calls other replicas are asked to cancel
/// (a user's `/cancel` or Cancel button that reached a replica not running
/// the call). Runs until the process ends; a lost connection to the
/// database is opened again.
pub async fn listen_for_cancels(db: Database, cancel: impl Fn(u64, Option<&str>) + Send) {
    notices::listen(db, CANCELS, |payload| {
        match parse_cancel(&payload) {
            Some((user_id, call)) => cancel(user_id, call),
            None => tracing::warn!("an unreadable cancel request between replicas; ignored"),
        }
        std::future::ready(())
    })
    .await
}

/// `"<user id>:<call id>"`, or `"<user id>:*"` for any of the user's calls.
fn parse_cancel(payload: &str) -> Option<(u64, Option<&str>)> {
    let (user, call) = payload.split_once(':')?;
    let user = user.parse().ok()?;
    match call {
        "*" => Some((user, None)),
        id if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some((user, Some(id)))
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl CommandGuards for PgCommandGuards {
    async fn cancel_elsewhere(&self, user_id: u64, call: Option<&str>) -> Result<bool, StoreError> {
        let running: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM command_leases WHERE user_id = $1 AND expires_at > now()",
        )
        .bind(user_key(user_id))
        .fetch_optional(self.db.pool())
        .await
        .map_err(StoreError::Database)?;
        if running.is_none() {
            return Ok(false);
        }
        notices::notify(
            self.db.pool(),
            CANCELS,
            &format!("{user_id}:{}", call.unwrap_or("*")),
        )
        .await
        .map_err(StoreError::Database)?;
        Ok(true)
    }

    async fn try_begin(&self, user_id: u64, label: &str) -> Result<CommandTicket, Running> {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let holder = hex::encode(bytes);
        let mut pauses = JUST_ENDED.iter();
        let taken = loop {
            let taken = self.take(user_id, label, &holder).await;
            match (&taken, pauses.next()) {
                (Ok(None), Some(pause)) => tokio::time::sleep(*pause).await,
                _ => break taken,
            }
        };
        match taken {
            Ok(Some(_)) => {}
            Ok(None) => return Err(self.running(user_id).await),
            Err(error) => {
                tracing::warn!(%error, "could not take a command lease; running the command anyway");
                return Ok(Box::new(()));
            }
        }
        let renewing = {
            let (db, user, holder) = (self.db.clone(), user_key(user_id), holder.clone());
            let lease = self.lease_secs();
            // Three renewals per lease: one lost to a slow database does
            // not let it run out.
            let renew = db.lease() / 3;
            tokio::spawn(async move {
                let mut every = tokio::time::interval(renew);
                every.tick().await;
                loop {
                    every.tick().await;
                    let _ = sqlx::query(
                        "UPDATE command_leases SET expires_at = now() + make_interval(secs => $3)
                         WHERE user_id = $1 AND holder = $2",
                    )
                    .bind(user)
                    .bind(&holder)
                    .bind(lease)
                    .execute(db.pool())
                    .await;
                }
            })
        };
        Ok(Box::new(Lease {
            db: self.db.clone(),
            user_id,
            holder,
            renewing,
        }))
    }
}

impl PgCommandGuards {
    /// Takes the user's lease for `holder` unless a live one is held.
    async fn take(
        &self,
        user_id: u64,
        label: &str,
        holder: &str,
    ) -> Result<Option<(String,)>, sqlx::Error> {
        sqlx::query_as(
            "INSERT INTO command_leases (user_id, label, told, holder, expires_at, replica)
             VALUES ($1, $2, false, $3, now() + make_interval(secs => $4), $5)
             ON CONFLICT (user_id) DO UPDATE
                SET label = EXCLUDED.label, told = false,
                    holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
                    replica = EXCLUDED.replica
                WHERE command_leases.expires_at < now()
             RETURNING holder",
        )
        .bind(user_key(user_id))
        .bind(label)
        .bind(holder)
        .bind(self.lease_secs())
        .bind(self.db.replica())
        .fetch_optional(self.db.pool())
        .await
    }

    /// What the user has running, marking that they were told.
    async fn running(&self, user_id: u64) -> Running {
        let seen: Result<Option<(String, bool)>, sqlx::Error> = sqlx::query_as(
            "UPDATE command_leases SET told = true
             FROM (SELECT told AS was FROM command_leases WHERE user_id = $1 FOR UPDATE) AS old
             WHERE user_id = $1
             RETURNING label, old.was",
        )
        .bind(user_key(user_id))
        .fetch_optional(self.db.pool())
        .await;
        match seen {
            Ok(Some((label, told))) => Running { label, told },
            // Ended in between, or unreadable: a command is running all
            // the same; say so without its name.
            _ => Running {
                label: "command".to_owned(),
                told: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cancel_requests_between_replicas_are_read_strictly() {
        use super::parse_cancel;
        assert_eq!(parse_cancel("1001:*"), Some((1001, None)));
        assert_eq!(
            parse_cancel("1001:00ff00ff00ff00ff"),
            Some((1001, Some("00ff00ff00ff00ff")))
        );
        for bad in ["", "1001", "x:*", "1001:", "1001:not-hex", "-1:*"] {
            assert_eq!(parse_cancel(bad), None, "{bad}");
        }
    }

    use super::*;
    use crate::store::postgres::testing;

    #[tokio::test]
    async fn one_command_at_a_time_per_user_across_replicas() {
        let db = testing::migrated().await;
        let replica_a = PgCommandGuards::new(db.database.clone());
        let replica_b = PgCommandGuards::new(db.replica().await);

        let ticket = replica_a.try_begin(1, "/call demo x").await.unwrap();
        let busy = replica_b.try_begin(1, "/tools demo").await.err().unwrap();
        assert_eq!((busy.label.as_str(), busy.told), ("/call demo x", false));
        assert!(
            replica_a
                .try_begin(1, "/tools demo")
                .await
                .err()
                .unwrap()
                .told
        );
        assert!(
            replica_b.try_begin(2, "/tools demo").await.is_ok(),
            "others are not held up"
        );
        drop(ticket);
        // The lease ends in a task of its own (a drop cannot wait for the
        // database): the other replica gets it once that task has run.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Err(running) = replica_b.try_begin(1, "/tools demo").await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lease was never ended: {running:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_expired_lease_frees_the_user() {
        let db = testing::migrated().await;
        let guards = PgCommandGuards::new(db.database.clone());
        let ticket = guards.try_begin(3, "/call demo slow").await.unwrap();
        // The replica holding it died: its lease is past its time.
        std::mem::forget(ticket);
        sqlx::query("UPDATE command_leases SET expires_at = now() - interval '1 second'")
            .execute(db.database.pool())
            .await
            .unwrap();
        assert!(guards.try_begin(3, "/tools demo").await.is_ok());
    }
}
