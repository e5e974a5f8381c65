//! The updates each replica acknowledged to Telegram and is handling, in
//! one table for the cluster. A row is written before the webhook is
//! answered, leased by its replica (one `UPDATE` per replica renews them
//! all), and marked done when its handling ends. A row whose lease ran
//! out was left by a replica that died: the first replica to sweep takes
//! it (an `UPDATE … RETURNING` of rows not done yet, so no two replicas
//! take the same), and the user is told to send it again.
//!
//! Done rows are kept for [`REDELIVERY_WINDOW`]: an update Telegram sends
//! again after it was handled (the 200 got lost) still meets its row and
//! is dropped.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Database, failed, user_key, user_of};
use crate::store::journal::REDELIVERY_WINDOW;
use crate::store::{JournalEntry, StoreError, UpdateJournal};

/// Most updates marked done in one statement.
const BATCH: usize = 500;

pub struct PgJournal {
    db: Database,
    /// Updates whose handling ended, for the task that marks them done
    /// in batches; started on first use (a runtime is needed).
    ended: OnceLock<mpsc::UnboundedSender<Ended>>,
    /// The receiver, until that task takes it.
    waiting: Mutex<Option<mpsc::UnboundedReceiver<Ended>>>,
}

/// What the marking task is told.
enum Ended {
    Update(i64),
    /// Answer once everything sent before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl PgJournal {
    pub fn new(db: Database) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let ended = OnceLock::new();
        let _ = ended.set(sender);
        Self {
            db,
            ended,
            waiting: Mutex::new(Some(receiver)),
        }
    }

    fn lease_secs(&self) -> f64 {
        self.db.lease().as_secs_f64()
    }

    /// Starts the task that marks updates done, once.
    fn start_marking(&self) {
        let receiver = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(receiver) = receiver
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(mark_done(self.db.clone(), receiver));
        }
    }
}

/// Marks ended updates done, as many as have ended by then in one
/// statement: under load, one round trip for hundreds of updates.
async fn mark_done(db: Database, mut ended: mpsc::UnboundedReceiver<Ended>) {
    let mut received = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while ended.recv_many(&mut received, BATCH).await > 0 {
        for message in received.drain(..) {
            match message {
                Ended::Update(id) => batch.push(id),
                Ended::Flush(done) => flushes.push(done),
            }
        }
        // Tried again while the database is busy or away: a row left
        // undone would be taken for abandoned once this replica stops.
        if !batch.is_empty() {
            super::write_patiently(
                "mark handled updates done",
                &[100, 500, 2000, 5000, 10_000],
                || {
                    sqlx::query("UPDATE update_journal SET done = true WHERE update_id = ANY($1)")
                        .bind(&batch)
                        .execute(db.pool())
                },
            )
            .await;
        }
        batch.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

#[async_trait::async_trait]
impl UpdateJournal for PgJournal {
    async fn record(&self, entry: &JournalEntry) -> Result<bool, StoreError> {
        let written = sqlx::query(
            "INSERT INTO update_journal
                (update_id, user_id, chat_id, command, replica, lease_until)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
             ON CONFLICT (update_id) DO NOTHING",
        )
        .bind(entry.update_id)
        .bind(entry.user_id.map(user_key))
        .bind(entry.chat_id)
        .bind(entry.command.as_deref())
        .bind(self.db.replica())
        .bind(self.lease_secs())
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(written.rows_affected() == 1)
    }

    fn finish(&self, update_id: i64) {
        self.start_marking();
        if let Some(ended) = self.ended.get() {
            let _ = ended.send(Ended::Update(update_id));
        }
    }

    async fn flush(&self) {
        self.start_marking();
        let (done, written) = tokio::sync::oneshot::channel();
        if let Some(ended) = self.ended.get()
            && ended.send(Ended::Flush(done)).is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), written).await;
        }
    }

    async fn release(&self, update_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM update_journal WHERE update_id = $1 AND replica = $2")
            .bind(update_id)
            .bind(self.db.replica())
            .execute(self.db.pool())
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn renew(&self) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE update_journal SET lease_until = now() + make_interval(secs => $2)
             WHERE replica = $1 AND NOT done",
        )
        .bind(self.db.replica())
        .bind(self.lease_secs())
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn take_abandoned(&self) -> Result<Vec<JournalEntry>, StoreError> {
        // One statement: the rows are taken and their users' command
        // leases, held by the replica that left them, freed together.
        let rows: Vec<(i64, Option<i64>, Option<i64>, Option<String>)> = sqlx::query_as(
            "WITH taken AS (
                UPDATE update_journal SET done = true
                WHERE NOT done AND lease_until < now()
                RETURNING update_id, user_id, chat_id, command, replica
             ), freed AS (
                DELETE FROM command_leases AS c USING taken AS t
                WHERE c.user_id = t.user_id AND c.replica = t.replica
             )
             SELECT update_id, user_id, chat_id, command FROM taken ORDER BY update_id",
        )
        .fetch_all(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(rows
            .into_iter()
            .map(|(update_id, user_id, chat_id, command)| JournalEntry {
                update_id,
                user_id: user_id.map(user_of),
                chat_id,
                command,
            })
            .collect())
    }

    async fn purge(&self) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM update_journal
             WHERE done AND received_at < now() - make_interval(secs => $1)",
        )
        .bind(REDELIVERY_WINDOW.as_secs_f64())
        .execute(self.db.pool())
        .await
        .map_err(failed)?;
        Ok(())
    }

    fn period(&self) -> Duration {
        // Four renewals per lease: a slow one or two do not let it lapse.
        self.db.lease() / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CommandGuards;
    use crate::store::postgres::commands::PgCommandGuards;
    use crate::store::postgres::testing;

    fn entry(update_id: i64, user_id: u64) -> JournalEntry {
        JournalEntry {
            update_id,
            user_id: Some(user_id),
            chat_id: Some(user_id as i64),
            command: Some("/call".to_owned()),
        }
    }

    /// Makes every open lease past its time, as if its replica had died
    /// long ago.
    async fn expire_all(db: &Database) {
        sqlx::query("UPDATE update_journal SET lease_until = now() - interval '1 second'")
            .execute(db.pool())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_update_sent_again_is_recorded_once_across_replicas() {
        let db = testing::migrated().await;
        let a = PgJournal::new(db.database.clone());
        let b = PgJournal::new(db.replica().await);
        assert!(a.record(&entry(1, 10)).await.unwrap());
        assert!(!b.record(&entry(1, 10)).await.unwrap(), "a redelivery");
        assert!(!a.record(&entry(1, 10)).await.unwrap());
        // Still recognised once handled.
        a.finish(1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while db
            .raw("SELECT 'x'::bytea FROM update_journal WHERE NOT done")
            .await
            .len()
            == 1
        {
            assert!(tokio::time::Instant::now() < deadline, "never marked done");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!b.record(&entry(1, 10)).await.unwrap());
        a.purge().await.unwrap();
        assert!(
            !b.record(&entry(1, 10)).await.unwrap(),
            "kept for the window"
        );
    }

    #[tokio::test]
    async fn a_live_replicas_updates_are_not_taken() {
        let db = testing::migrated().await;
        let a = PgJournal::new(db.database.clone());
        let b = PgJournal::new(db.replica().await);
        a.record(&entry(1, 10)).await.unwrap();
        a.renew().await.unwrap();
        assert!(b.take_abandoned().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_update_is_taken_once_and_frees_its_user() {
        let db = testing::migrated().await;
        let dead = db.database.clone();
        let survivors = [db.replica().await, db.replica().await];
        let journal = PgJournal::new(dead.clone());
        let commands = PgCommandGuards::new(dead.clone());
        for (update, user) in [(1, 10), (2, 11), (3, 12)] {
            journal.record(&entry(update, user)).await.unwrap();
        }
        let ticket = commands.try_begin(10, "/call demo slow").await.unwrap();
        // The replica dies: nothing it held is renewed or ended.
        std::mem::forget(ticket);
        expire_all(&dead).await;

        let sweepers: Vec<PgJournal> = survivors.iter().cloned().map(PgJournal::new).collect();
        let (first, second) =
            tokio::join!(sweepers[0].take_abandoned(), sweepers[1].take_abandoned());
        let mut taken: Vec<i64> = first
            .unwrap()
            .into_iter()
            .chain(second.unwrap())
            .map(|e| e.update_id)
            .collect();
        taken.sort();
        assert_eq!(taken, [1, 2, 3], "each taken by one replica");
        assert!(sweepers[0].take_abandoned().await.unwrap().is_empty());

        let other = PgCommandGuards::new(survivors[0].clone());
        assert!(
            other.try_begin(10, "/call demo slow").await.is_ok(),
            "the user is free at once, not when the lease runs out"
        );
    }

    #[tokio::test]
    async fn a_taken_update_comes_back_as_it_was_recorded() {
        let db = testing::migrated().await;
        let journal = PgJournal::new(db.database.clone());
        journal.record(&entry(5, 10)).await.unwrap();
        expire_all(&db.database).await;
        let taken = journal.take_abandoned().await.unwrap();
        assert_eq!(taken, [entry(5, 10)]);
    }
}
