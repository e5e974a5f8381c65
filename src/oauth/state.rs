//! rmcp's `StateStore` for one flow's PKCE verifier, used twice: to catch
//! what rmcp generates when the authorization URL is made (so the pending
//! flow can keep it as data), and to hand it back for the code exchange.

use std::sync::{Arc, Mutex};

use rmcp::transport::auth::{AuthError, StateStore, StoredAuthorizationState};

/// Holds at most one flow's state; a fresh one per manager.
#[derive(Clone, Default)]
pub struct OneFlowState {
    slot: Arc<Mutex<Option<(String, StoredAuthorizationState)>>>,
}

impl OneFlowState {
    /// A store that already holds the state saved for `csrf_token`.
    pub fn holding(state: StoredAuthorizationState) -> Self {
        let csrf_token = state.csrf_token.clone();
        Self {
            slot: Arc::new(Mutex::new(Some((csrf_token, state)))),
        }
    }

    /// The state rmcp saved, if any.
    pub fn take(&self) -> Option<StoredAuthorizationState> {
        self.lock().take().map(|(_, state)| state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, StoredAuthorizationState)>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl StateStore for OneFlowState {
    async fn save(
        &self,
        csrf_token: &str,
        state: StoredAuthorizationState,
    ) -> Result<(), AuthError> {
        *self.lock() = Some((csrf_token.to_owned(), state));
        Ok(())
    }

    async fn load(&self, csrf_token: &str) -> Result<Option<StoredAuthorizationState>, AuthError> {
        Ok(self
            .lock()
            .as_ref()
            .filter(|(token, _)| token == csrf_token)
            .map(|(_, state)| state.clone()))
    }

    async fn delete(&self, csrf_token: &str) -> Result<(), AuthError> {
        let mut slot = self.lock();
        if slot.as_ref().is_some_and(|(token, _)| token == csrf_token) {
            *slot = None;
        }
        Ok(())
    }
}
