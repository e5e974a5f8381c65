//! The port through which the core reaches a chat when something happens
//! outside it: a browser completing (or misusing) a connect link, a link
//! running out.
//!
//! The core reports typed notices; the adapter that implements this port
//! (Telegram's, or the terminal's) chooses the words.

use crate::config::ServerConfig;
use crate::oauth::CallbackError;
use crate::store::{ChatMessage, FlowOwner, Resume};

/// Who tried to use someone else's link.
#[derive(Debug, Clone)]
pub enum Intruder {
    /// Telegram signed another user's identity at the start page.
    TelegramUser { user_id: u64, name: Option<String> },
    /// A browser other than the bound one (a forwarded link).
    OtherBrowser,
}

/// Something a flow's owner should hear of.
#[derive(Debug)]
pub enum Notice<'a> {
    /// The owner's tokens are stored; the server can be used.
    Connected {
        owner: FlowOwner,
        server: &'a ServerConfig,
        /// The command that waited for this authorization, to run now.
        resume: Option<Resume>,
    },
    /// The callback came but connected nothing. `server` is `None` when
    /// the server left the config since the flow started.
    ConnectFailed {
        owner: FlowOwner,
        server: Option<&'a ServerConfig>,
        server_id: &'a str,
        error: &'a CallbackError,
    },
    /// Someone else tried to use the owner's link; it was not used.
    LinkMisused {
        owner: FlowOwner,
        server: Option<&'a ServerConfig>,
        server_id: &'a str,
        by: Intruder,
    },
    /// The link ran out unused; `message` is where it was posted.
    LinkExpired {
        owner: FlowOwner,
        server: Option<&'a ServerConfig>,
        server_id: &'a str,
        message: Option<ChatMessage>,
    },
}

#[async_trait::async_trait]
pub trait ChatNotifier: Send + Sync {
    async fn notify(&self, notice: Notice<'_>);
}

/// For front ends that have no chat to tell (the terminal's own commands).
pub struct Silent;

#[async_trait::async_trait]
impl ChatNotifier for Silent {
    async fn notify(&self, _notice: Notice<'_>) {}
}
