//! Delivers finished authorization flows to their chat.

use teloxide::prelude::*;

use super::send;
use crate::notify::ChatNotifier;
use crate::oauth::{Connected, FlowOwner};

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
    async fn connected(&self, connected: &Connected) {
        let text = format!(
            "Connected to {}. Try /tools {}.",
            connected.server_name, connected.server_id
        );
        if let Err(error) = send::text(&self.bot, ChatId(connected.owner.chat_id), &text).await {
            tracing::warn!(%error, "could not confirm the connection in chat");
        }
    }

    async fn connect_failed(
        &self,
        owner: FlowOwner,
        server_id: &str,
        server_name: &str,
        reason: &str,
    ) {
        let text = format!(
            "Connecting to {server_name} failed: {reason}. Send /connect {server_id} to try again."
        );
        if let Err(error) = send::text(&self.bot, ChatId(owner.chat_id), &text).await {
            tracing::warn!(%error, "could not report the failed connection in chat");
        }
    }
}
