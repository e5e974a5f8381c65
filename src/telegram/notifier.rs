//! Tells a flow's chat what happened outside it: a connect that finished,
//! a link someone else tried, a link that expired.

use teloxide::prelude::*;

use super::TgBot;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, MessageId};

use super::{commands, send, wording};
use tokio::sync::mpsc;

use crate::gateway::{ChatNotifier, Notice};
use crate::logging::chain;
use crate::store::{FlowOwner, Resume};

pub struct TelegramNotifier {
    bot: TgBot,
    resumes: mpsc::UnboundedSender<Resumption>,
}

impl TelegramNotifier {
    pub fn new(bot: TgBot, resumes: mpsc::UnboundedSender<Resumption>) -> Self {
        Self { bot, resumes }
    }
}

/// A command to run again now that its authorization completed.
#[derive(Debug)]
pub struct Resumption {
    pub owner: FlowOwner,
    pub server_id: String,
    pub resume: Resume,
}

/// The queue between the notifier (which learns that a flow completed)
/// and the bot's loop (which has what running a command takes).
pub struct Resumes {
    sender: mpsc::UnboundedSender<Resumption>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Resumption>>>,
}

impl Resumes {
    pub fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<Resumption> {
        self.sender.clone()
    }

    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Resumption>> {
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Default for Resumes {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl ChatNotifier for TelegramNotifier {
    async fn notify(&self, notice: Notice<'_>) {
        let sent = match notice {
            Notice::Connected {
                owner,
                server,
                resume,
            } => {
                let sent = send::text(
                    &self.bot,
                    ChatId(owner.chat_id),
                    &wording::connected(server, resume.is_some()),
                )
                .await;
                if let Some(resume) = resume {
                    let _ = self.resumes.send(Resumption {
                        owner,
                        server_id: server.id.clone(),
                        resume,
                    });
                }
                sent
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
                        .paced(
                            ChatId(owner.chat_id),
                            self.bot
                                .send_message(ChatId(owner.chat_id), text)
                                .reply_markup(markup),
                        )
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
