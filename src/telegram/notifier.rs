//! Tells a chat how its authorization flow ended.

use teloxide::prelude::*;

use super::{send, wording};
use crate::gateway::{ChatNotifier, ConnectOutcome};
use crate::logging::chain;

pub struct TelegramNotifier {
    bot: Bot,
}

impl TelegramNotifier {
    pub fn new(bot: Bot) -> Self {
        Self { bot }
    }
}

#[async_trait::async_trait]
impl ChatNotifier for TelegramNotifier {
    async fn connect_finished(&self, outcome: ConnectOutcome<'_>) {
        let (chat, text) = match outcome {
            ConnectOutcome::Connected { owner, server } => {
                (owner.chat_id, wording::connected(server))
            }
            ConnectOutcome::Failed {
                owner,
                server,
                server_id,
                error,
            } => (
                owner.chat_id,
                wording::connect_failed(server, server_id, error),
            ),
        };
        if let Err(error) = send::text(&self.bot, ChatId(chat), &text).await {
            tracing::warn!(error = %chain(&error), "could not tell the chat how its connect ended");
        }
    }
}
