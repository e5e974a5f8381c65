//! Authorization flows that have started and wait for their callback.
//!
//! Each flow is keyed by its own 256-bit random `state` (rmcp's CSRF token
//! is only 128 bits and says nothing about who asked), records its owner
//! (Telegram user and chat) and server, expires after [`FLOW_TTL`], and can
//! be taken exactly once: a replayed or forwarded callback finds nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use rand::RngCore;
use rmcp::transport::auth::{AuthError, StateStore, StoredAuthorizationState};

/// How long a connect link stays valid.
pub const FLOW_TTL: Duration = Duration::from_secs(10 * 60);

/// Who asked for a flow: the Telegram user and the chat to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowOwner {
    pub user_id: u64,
    pub chat_id: i64,
}

/// The `state` value of one flow: 32 random bytes, base64url.
///
/// Not a [`crate::secret::Secret`] because it travels in URLs the user
/// sees, but it is never logged: `Debug` shows a prefix only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FlowState(String);

impl FlowState {
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for FlowState {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for FlowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlowState({}…)", self.0.get(..4).unwrap_or(""))
    }
}

/// One waiting flow; `T` carries whatever completing it needs.
pub struct Pending<T> {
    pub owner: FlowOwner,
    pub server_id: String,
    created: Instant,
    pub payload: T,
}

/// Why a `state` found no flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeError {
    /// Never issued, already used, or replaced by a newer link.
    Unknown,
    /// Issued, but older than [`FLOW_TTL`].
    Expired { owner: FlowOwner, server_id: String },
}

pub struct PendingFlows<T> {
    flows: DashMap<FlowState, Pending<T>>,
    ttl: Duration,
}

impl<T> Default for PendingFlows<T> {
    fn default() -> Self {
        Self::with_ttl(FLOW_TTL)
    }
}

impl<T> PendingFlows<T> {
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            flows: DashMap::new(),
            ttl,
        }
    }

    /// Registers a flow under a fresh state. An older flow of the same user
    /// for the same server is dropped: only the newest link works, so a
    /// user is never left guessing which of two buttons is live.
    pub fn insert(&self, owner: FlowOwner, server_id: &str, payload: T) -> FlowState {
        let now = Instant::now();
        self.flows.retain(|_, flow| {
            now.duration_since(flow.created) < self.ttl
                && !(flow.owner.user_id == owner.user_id && flow.server_id == server_id)
        });
        let state = FlowState::random();
        self.flows.insert(
            state.clone(),
            Pending {
                owner,
                server_id: server_id.to_owned(),
                created: now,
                payload,
            },
        );
        state
    }

    /// Removes and returns the flow for `state`: a second call with the same
    /// value always fails.
    pub fn take(&self, state: &str) -> Result<Pending<T>, TakeError> {
        let (_, flow) = self
            .flows
            .remove(&FlowState::from(state))
            .ok_or(TakeError::Unknown)?;
        if flow.created.elapsed() >= self.ttl {
            return Err(TakeError::Expired {
                owner: flow.owner,
                server_id: flow.server_id,
            });
        }
        Ok(flow)
    }
}

/// rmcp's view of one flow's PKCE verifier. The manager is created per flow,
/// so this holds exactly the states that one manager issued, inside the
/// [`Pending`] record that owns it.
#[derive(Clone, Default)]
pub struct FlowStateStore {
    states: Arc<DashMap<String, StoredAuthorizationState>>,
}

#[async_trait::async_trait]
impl StateStore for FlowStateStore {
    async fn save(
        &self,
        csrf_token: &str,
        state: StoredAuthorizationState,
    ) -> Result<(), AuthError> {
        self.states.insert(csrf_token.to_owned(), state);
        Ok(())
    }

    async fn load(&self, csrf_token: &str) -> Result<Option<StoredAuthorizationState>, AuthError> {
        Ok(self.states.get(csrf_token).map(|entry| entry.clone()))
    }

    async fn delete(&self, csrf_token: &str) -> Result<(), AuthError> {
        self.states.remove(csrf_token);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: FlowOwner = FlowOwner {
        user_id: 1,
        chat_id: 1,
    };

    #[test]
    fn states_are_256_bit_and_distinct() {
        let a = FlowState::random();
        let b = FlowState::random();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.as_str()).unwrap().len(), 32);
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn a_state_is_single_use() {
        let flows = PendingFlows::default();
        let state = flows.insert(ALICE, "demo", 7);
        let flow = flows.take(state.as_str()).unwrap();
        assert_eq!(
            (flow.owner, flow.server_id.as_str(), flow.payload),
            (ALICE, "demo", 7)
        );
        assert_eq!(flows.take(state.as_str()).err(), Some(TakeError::Unknown));
    }

    #[test]
    fn an_expired_state_is_rejected_and_names_its_owner() {
        let flows = PendingFlows::with_ttl(Duration::ZERO);
        let state = flows.insert(ALICE, "demo", ());
        assert_eq!(
            flows.take(state.as_str()).err(),
            Some(TakeError::Expired {
                owner: ALICE,
                server_id: "demo".into()
            })
        );
        assert_eq!(flows.take(state.as_str()).err(), Some(TakeError::Unknown));
    }

    #[test]
    fn unknown_and_near_miss_states_are_rejected() {
        let flows = PendingFlows::default();
        let state = flows.insert(ALICE, "demo", ());
        let mut near = state.as_str().to_owned();
        near.pop();
        assert_eq!(flows.take(&near).err(), Some(TakeError::Unknown));
        assert_eq!(flows.take("").err(), Some(TakeError::Unknown));
        assert!(flows.take(state.as_str()).is_ok());
    }

    #[test]
    fn a_newer_link_replaces_the_older_one_for_the_same_server_only() {
        let flows = PendingFlows::default();
        let old = flows.insert(ALICE, "demo", ());
        let other_server = flows.insert(ALICE, "other", ());
        let bob = flows.insert(
            FlowOwner {
                user_id: 2,
                chat_id: 2,
            },
            "demo",
            (),
        );
        let new = flows.insert(ALICE, "demo", ());
        assert_eq!(flows.take(old.as_str()).err(), Some(TakeError::Unknown));
        assert!(flows.take(new.as_str()).is_ok());
        assert!(flows.take(other_server.as_str()).is_ok());
        assert!(flows.take(bob.as_str()).is_ok());
    }
}
