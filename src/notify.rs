//! The port through which a finished authorization flow reaches its chat.
//!
//! The HTTP callback knows nothing of Telegram; it reports outcomes here and
//! the telegram module delivers them.

use crate::oauth::{Connected, FlowOwner};

#[async_trait::async_trait]
pub trait ChatNotifier: Send + Sync {
    /// The owner's tokens are stored; tell the chat it can use the server.
    async fn connected(&self, connected: &Connected);

    /// The flow failed after the owner was known; tell them why and how to
    /// retry. `reason` is already fit for the user.
    async fn connect_failed(
        &self,
        owner: FlowOwner,
        server_id: &str,
        server_name: &str,
        reason: &str,
    );
}
