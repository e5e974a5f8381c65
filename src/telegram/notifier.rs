//! Tells a flow's chat what happened outside it: a connect that finished,
//! a link someone else tried, a link that expired.

use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, MessageId};

use super::{commands, send, wording};
use crate::gateway::{ChatNotifier, Notice};
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
    async fn notify(&self, notice: Notice<'_>) {
        let sent = match notice {
            Notice::Connected { owner, server } => {
                send::text(
                    &self.bot,
                    ChatId(owner.chat_id),
                    &wording::connected(server),
                )
                .await
            }
            Notice::ConnectFailed {
                owner,
                server,
                server_id,
                error,
            } => {
                let text = wording::connect_failed(server, server_id, error);
                send::text(&self.bot, ChatId(owner.chat_id), &text).await
            }
            Notice::LinkMisused {
                owner,
                server,
                server_id,
                by,
            } => {
                let text = wording::link_misused(server, server_id, &by);
                send::text(&self.bot, ChatId(owner.chat_id), &text).await
            }
            Notice::LinkExpired {
                owner,
                server,
                server_id,
                message,
            } => {
                let text = wording::link_expired(server, server_id);
                let markup = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback(
                    wording::NEW_LINK_BUTTON,
                    commands::new_link_data(server_id),
                )]]);
                match message {
                    Some(message) => {
                        send::replace(
                            &self.bot,
                            ChatId(message.chat_id),
                            MessageId(message.message_id),
                            &text,
                            markup,
                        )
                        .await
                    }
                    None => self
                        .bot
                        .send_message(ChatId(owner.chat_id), text)
                        .reply_markup(markup)
                        .await
                        .map(|_| ()),
                }
            }
        };
        if let Err(error) = sent {
            tracing::warn!(error = %chain(&error), "could not tell a chat about its connect link");
        }
    }
}
