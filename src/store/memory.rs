//! Process-local coordination: refresh locks as mutexes. Enough for one
//! node; several replicas need a shared store.

use std::sync::Arc;

use dashmap::DashMap;

use super::{CommandGuards, CommandTicket, RefreshGuard, RefreshLocks, Running, StoreError};

type SlotLock = Arc<tokio::sync::Mutex<()>>;

/// One mutex per (user, server), created on first use.
#[derive(Default)]
pub struct LocalRefreshLocks {
    locks: DashMap<(u64, String), SlotLock>,
}

#[async_trait::async_trait]
impl RefreshLocks for LocalRefreshLocks {
    async fn acquire(&self, user_id: u64, server_id: &str) -> Result<RefreshGuard, StoreError> {
        // The map guard is dropped before waiting: only this slot waits.
        let lock = self
            .locks
            .entry((user_id, server_id.to_owned()))
            .or_default()
            .clone();
        Ok(Box::new(lock.lock_owned().await))
    }
}

/// The running command of each user, in this process (the embedded
/// store; with PostgreSQL, `postgres::commands` holds it for the cluster).
#[derive(Default)]
pub struct LocalCommandGuards {
    running: Arc<DashMap<u64, Running>>,
}

struct LocalTicket {
    running: Arc<DashMap<u64, Running>>,
    user_id: u64,
}

impl Drop for LocalTicket {
    fn drop(&mut self) {
        self.running.remove(&self.user_id);
    }
}

#[async_trait::async_trait]
impl CommandGuards for LocalCommandGuards {
    async fn try_begin(&self, user_id: u64, label: &str) -> Result<CommandTicket, Running> {
        match self.running.entry(user_id) {
            dashmap::Entry::Occupied(mut running) => {
                let seen = running.get().clone();
                running.get_mut().told = true;
                Err(seen)
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Running {
                    label: label.to_owned(),
                    told: false,
                });
                Ok(Box::new(LocalTicket {
                    running: self.running.clone(),
                    user_id,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_refresh_lock_is_per_slot() {
        let locks = LocalRefreshLocks::default();
        let held = locks.acquire(1, "demo").await.unwrap();
        // Another slot is free while this one is held…
        let other = tokio::time::timeout(Duration::from_secs(5), locks.acquire(2, "demo")).await;
        assert!(other.is_ok());
        // …and the same slot waits until it is released.
        let same = locks.acquire(1, "demo");
        tokio::pin!(same);
        assert!(futures_poll_once(&mut same).await.is_none());
        drop(held);
        assert!(same.await.is_ok());
    }

    #[tokio::test]
    async fn one_command_at_a_time_per_user() {
        let guards = LocalCommandGuards::default();
        let ticket = guards.try_begin(1, "/call demo x").await.unwrap();
        let first = guards.try_begin(1, "/tools demo").await.err().unwrap();
        assert_eq!((first.label.as_str(), first.told), ("/call demo x", false));
        assert!(guards.try_begin(1, "/tools demo").await.err().unwrap().told);
        assert!(
            guards.try_begin(2, "/tools demo").await.is_ok(),
            "others are not held up"
        );
        drop(ticket);
        assert!(guards.try_begin(1, "/tools demo").await.is_ok());
    }

    /// Polls a future once; `None` if it is still pending.
    async fn futures_poll_once<F: std::future::Future + Unpin>(
        future: &mut F,
    ) -> Option<F::Output> {
        use std::task::Poll;
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *future).poll(cx) {
            Poll::Ready(value) => Poll::Ready(Some(value)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }
}
