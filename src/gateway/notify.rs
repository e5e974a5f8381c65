//! The port through which the core reaches a chat when something finishes
//! outside the chat (a browser completing an authorization flow).
//!
//! The core reports typed events; the adapter that implements this port
//! (Telegram's, or the terminal's) chooses the words.

use crate::config::ServerConfig;
use crate::oauth::CallbackError;
use crate::store::FlowOwner;

/// How a connect flow ended, for its owner's chat.
#[derive(Debug)]
pub enum ConnectOutcome<'a> {
    /// The owner's tokens are stored; the server can be used.
    Connected {
        owner: FlowOwner,
        server: &'a ServerConfig,
    },
    /// The flow was found but did not connect anything.
    Failed {
        owner: FlowOwner,
        /// `None` when the server left the config since the flow started.
        server: Option<&'a ServerConfig>,
        server_id: &'a str,
        error: &'a CallbackError,
    },
}

#[async_trait::async_trait]
pub trait ChatNotifier: Send + Sync {
    async fn connect_finished(&self, outcome: ConnectOutcome<'_>);
}

/// For front ends that have no chat to tell (the terminal's own commands).
pub struct Silent;

#[async_trait::async_trait]
impl ChatNotifier for Silent {
    async fn connect_finished(&self, _outcome: ConnectOutcome<'_>) {}
}
