//! Process-local stores: pending flows in a table, refresh locks as
//! mutexes. Enough for one node; a restart forgets pending flows.

use std::sync::Arc;

use dashmap::DashMap;

use super::{FlowState, FlowStore, PendingFlow, RefreshGuard, RefreshLocks, StoreError, TakeError};

/// Pending flows keyed by their state; lookups are exact matches on a
/// 256-bit random value.
#[derive(Default)]
pub struct MemoryFlows {
    flows: DashMap<FlowState, PendingFlow>,
}

#[async_trait::async_trait]
impl FlowStore for MemoryFlows {
    async fn insert(&self, flow: PendingFlow) -> Result<FlowState, StoreError> {
        // Expired flows go whenever a new one comes, so the table stays as
        // small as the number of links that can still be used.
        self.flows.retain(|_, old| {
            let replaced =
                old.owner.user_id == flow.owner.user_id && old.server_id == flow.server_id;
            !old.is_expired() && !replaced
        });
        let state = FlowState::random();
        self.flows.insert(state.clone(), flow);
        Ok(state)
    }

    async fn take(&self, state: &str) -> Result<PendingFlow, TakeError> {
        let (_, flow) = self
            .flows
            .remove(&FlowState::from(state))
            .ok_or(TakeError::Unknown)?;
        if flow.is_expired() {
            return Err(TakeError::Expired {
                owner: flow.owner,
                server_id: flow.server_id,
            });
        }
        Ok(flow)
    }
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rmcp::transport::auth::StoredAuthorizationState;

    use super::*;
    use crate::store::{ClientRecord, FlowOwner};

    const ALICE: FlowOwner = FlowOwner {
        user_id: 1,
        chat_id: 1,
    };

    fn flow(owner: FlowOwner, server_id: &str, ttl: Duration) -> PendingFlow {
        let verifier = oauth2::PkceCodeVerifier::new("v".repeat(43));
        let csrf = oauth2::CsrfToken::new("csrf".into());
        PendingFlow {
            owner,
            server_id: server_id.into(),
            expires_at: PendingFlow::expires_after(ttl),
            authorization: StoredAuthorizationState::new(&verifier, &csrf),
            client: ClientRecord {
                client_id: "c".into(),
                client_secret: None,
                redirect_uri: "http://127.0.0.1/cb".into(),
                issuer: None,
                scopes: vec![],
            },
        }
    }

    const TTL: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn a_state_is_single_use() {
        let flows = MemoryFlows::default();
        let state = flows.insert(flow(ALICE, "demo", TTL)).await.unwrap();
        let taken = flows.take(state.as_str()).await.unwrap();
        assert_eq!((taken.owner, taken.server_id.as_str()), (ALICE, "demo"));
        assert!(matches!(
            flows.take(state.as_str()).await,
            Err(TakeError::Unknown)
        ));
    }

    #[tokio::test]
    async fn an_expired_state_is_rejected_and_names_its_owner() {
        let flows = MemoryFlows::default();
        let state = flows
            .insert(flow(ALICE, "demo", Duration::ZERO))
            .await
            .unwrap();
        assert!(matches!(
            flows.take(state.as_str()).await,
            Err(TakeError::Expired { owner: ALICE, server_id }) if server_id == "demo"
        ));
        assert!(matches!(
            flows.take(state.as_str()).await,
            Err(TakeError::Unknown)
        ));
    }

    #[tokio::test]
    async fn unknown_and_near_miss_states_are_rejected() {
        let flows = MemoryFlows::default();
        let state = flows.insert(flow(ALICE, "demo", TTL)).await.unwrap();
        let mut near = state.as_str().to_owned();
        near.pop();
        assert!(matches!(flows.take(&near).await, Err(TakeError::Unknown)));
        assert!(matches!(flows.take("").await, Err(TakeError::Unknown)));
        assert!(flows.take(state.as_str()).await.is_ok());
    }

    #[tokio::test]
    async fn a_newer_link_replaces_the_older_one_for_the_same_server_only() {
        let flows = MemoryFlows::default();
        let bob = FlowOwner {
            user_id: 2,
            chat_id: 2,
        };
        let old = flows.insert(flow(ALICE, "demo", TTL)).await.unwrap();
        let other_server = flows.insert(flow(ALICE, "other", TTL)).await.unwrap();
        let bobs = flows.insert(flow(bob, "demo", TTL)).await.unwrap();
        let new = flows.insert(flow(ALICE, "demo", TTL)).await.unwrap();
        assert!(matches!(
            flows.take(old.as_str()).await,
            Err(TakeError::Unknown)
        ));
        for state in [new, other_server, bobs] {
            assert!(flows.take(state.as_str()).await.is_ok());
        }
    }

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
