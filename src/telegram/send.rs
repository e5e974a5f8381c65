//! Sending messages the way Telegram accepts them: plain text split into
//! 4096-unit pieces, link previews off, links as inline URL buttons.

use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions};
use teloxide::{ApiError, RequestError};

use super::format::{MAX_MESSAGE_UNITS, button_url, chunks};

fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
}

/// Plain text (never parsed as markup: tool output is arbitrary).
pub async fn text(bot: &Bot, chat: ChatId, text: &str) -> Result<(), RequestError> {
    for piece in chunks(text, MAX_MESSAGE_UNITS) {
        bot.send_message(chat, piece)
            .link_preview_options(no_preview())
            .await?;
    }
    Ok(())
}

/// A message with one URL button. Should Telegram still refuse the button,
/// the link goes into the text, so the user can always continue.
pub async fn link(
    bot: &Bot,
    chat: ChatId,
    text: &str,
    label: &str,
    url: &str,
) -> Result<(), RequestError> {
    if let Some(button) = button_url(url) {
        let markup = InlineKeyboardMarkup::new([[InlineKeyboardButton::url(label, button)]]);
        match bot
            .send_message(chat, text)
            .link_preview_options(no_preview())
            .reply_markup(markup)
            .await
        {
            Ok(_) => return Ok(()),
            Err(RequestError::Api(ApiError::ButtonUrlInvalid)) => {
                tracing::warn!("Telegram refused the link button; sending the link as text");
            }
            Err(error) => return Err(error),
        }
    }
    self::text(bot, chat, &format!("{text}\n\n{url}")).await
}

/// Whether Telegram refused because the user never started a private chat
/// with the bot (or blocked it).
pub fn is_forbidden(error: &RequestError) -> bool {
    match error {
        RequestError::Api(ApiError::BotBlocked | ApiError::CantInitiateConversation) => true,
        // Telegram now says "Forbidden: bot can't initiate conversation…",
        // which teloxide's table (written for "Unauthorized: …") misses.
        RequestError::Api(ApiError::Unknown(text)) => text.starts_with("Forbidden"),
        _ => false,
    }
}
