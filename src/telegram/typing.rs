//! "typing…" while the bot works on a request. It is shown only once the
//! work has taken long enough for a user to wonder: a reply that comes
//! sooner needs no sign (Telegram clears it at the bot's next message
//! anyway), and a fast request then costs one Bot API call, not two,
//! against the bot's flood limits and its CPU. Once shown, the sign is
//! renewed until the work ends, since Telegram lets it go after 5 s.

use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::ChatAction;

use super::TgBot;

/// How long work may take before the chat shows "typing…".
const AFTER: Duration = Duration::from_millis(300);

/// Telegram shows "typing…" for 5 s; renewed a little sooner.
const EVERY: Duration = Duration::from_secs(4);

/// "typing…" in a chat while this lives. Nothing waits for Telegram:
/// the actions go from a task of their own.
pub struct Typing(tokio::task::JoinHandle<()>);

impl Typing {
    pub fn start(bot: &TgBot, chat: ChatId) -> Self {
        let bot = bot.clone();
        Self(tokio::spawn(async move {
            tokio::time::sleep(AFTER).await;
            loop {
                let _ = bot.send_chat_action(chat, ChatAction::Typing).await;
                tokio::time::sleep(EVERY).await;
            }
        }))
    }
}

impl Drop for Typing {
    fn drop(&mut self) {
        self.0.abort();
    }
}
