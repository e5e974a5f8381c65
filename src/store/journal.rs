//! The update journal of a single bot process: nobody outlives it to
//! answer what it was handling, so it keeps only enough to drop the
//! updates Telegram sends again (their acknowledgement got lost).
//! Several replicas keep theirs in PostgreSQL (`postgres::journal`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{JournalEntry, StoreError, UpdateJournal};

/// How long a finished update is remembered: Telegram sends an update
/// again only while it has not been acknowledged, for far less than this.
pub const REDELIVERY_WINDOW: Duration = Duration::from_secs(3600);

/// Updates seen, by id: `None` while handled, then when it ended.
#[derive(Default)]
pub struct LocalJournal {
    seen: Mutex<HashMap<i64, Option<Instant>>>,
}

impl LocalJournal {
    fn forget_old(seen: &mut HashMap<i64, Option<Instant>>, now: Instant) {
        seen.retain(|_, ended| ended.is_none_or(|at| now.duration_since(at) < REDELIVERY_WINDOW));
    }
}

#[async_trait::async_trait]
impl UpdateJournal for LocalJournal {
    async fn record(&self, entry: &JournalEntry) -> Result<bool, StoreError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains_key(&entry.update_id) {
            return Ok(false);
        }
        seen.insert(entry.update_id, None);
        Ok(true)
    }

    fn finish(&self, update_id: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ended) = seen.get_mut(&update_id) {
            *ended = Some(Instant::now());
        }
    }

    async fn flush(&self) {}

    async fn release(&self, update_id: i64) -> Result<(), StoreError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(&update_id);
        Ok(())
    }

    async fn renew(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn take_abandoned(&self) -> Result<Vec<JournalEntry>, StoreError> {
        Ok(Vec::new())
    }

    async fn purge(&self) -> Result<(), StoreError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        Self::forget_old(&mut seen, Instant::now());
        Ok(())
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(update_id: i64) -> JournalEntry {
        JournalEntry {
            update_id,
            user_id: Some(1),
            chat_id: Some(1),
            command: None,
        }
    }

    #[tokio::test]
    async fn a_redelivered_update_is_recognised_while_and_after_it_is_handled() {
        let journal = LocalJournal::default();
        assert!(journal.record(&entry(7)).await.unwrap());
        assert!(!journal.record(&entry(7)).await.unwrap());
        journal.finish(7);
        journal.purge().await.unwrap();
        assert!(!journal.record(&entry(7)).await.unwrap());
        assert!(journal.record(&entry(8)).await.unwrap());
    }
}
