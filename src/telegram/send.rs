//! Sending messages the way Telegram accepts them: plain text split into
//! 4096-unit pieces, link previews off, links as inline buttons.

use teloxide::prelude::*;

use super::TgBot;
use teloxide::types::{
    InlineKeyboardButton, InlineKeyboardMarkup, InputFile, LinkPreviewOptions, LoginUrl, MessageId,
    ParseMode,
};
use teloxide::{ApiError, RequestError};

use super::format::{MAX_MESSAGE_UNITS, button_url, chunks};
use super::results::{Outgoing, Upload};

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
pub async fn text(bot: &TgBot, chat: ChatId, text: &str) -> Result<(), RequestError> {
    for piece in chunks(text, MAX_MESSAGE_UNITS) {
        bot.paced(
            chat,
            bot.send_message(chat, piece)
                .link_preview_options(no_preview()),
        )
        .await?;
    }
    Ok(())
}

/// A planned result, message by message. A photo or audio file Telegram
/// refuses (its format or size) goes again as a document, so nothing is
/// lost.
pub async fn outgoing(
    bot: &TgBot,
    chat: ChatId,
    messages: Vec<Outgoing>,
) -> Result<(), RequestError> {
    for message in messages {
        match message {
            Outgoing::Text(html) => {
                bot.paced(
                    chat,
                    bot.send_message(chat, html)
                        .parse_mode(ParseMode::Html)
                        .link_preview_options(no_preview()),
                )
                .await?;
            }
            Outgoing::Photo(upload) => {
                let sent = bot
                    .paced(
                        chat,
                        bot.send_photo(chat, file(&upload))
                            .parse_mode(ParseMode::Html)
                            .caption(upload.caption.clone().unwrap_or_default()),
                    )
                    .await;
                match sent {
                    Ok(_) => {}
                    Err(RequestError::Api(error)) => {
                        tracing::info!(%error, "Telegram refused a photo; sending it as a document");
                        document(bot, chat, upload).await?;
                    }
                    Err(error) => return Err(error),
                }
            }
            Outgoing::Audio(upload) => {
                let sent = bot
                    .paced(
                        chat,
                        bot.send_audio(chat, file(&upload))
                            .parse_mode(ParseMode::Html)
                            .caption(upload.caption.clone().unwrap_or_default()),
                    )
                    .await;
                as_document_if_refused(bot, chat, upload, sent.map(|_| ())).await?;
            }
            Outgoing::Voice(upload) => {
                let sent = bot
                    .paced(
                        chat,
                        bot.send_voice(chat, file(&upload))
                            .parse_mode(ParseMode::Html)
                            .caption(upload.caption.clone().unwrap_or_default()),
                    )
                    .await;
                as_document_if_refused(bot, chat, upload, sent.map(|_| ())).await?;
            }
            Outgoing::Document(upload) => document(bot, chat, upload).await?,
        }
    }
    Ok(())
}

/// Audio Telegram refuses (a format it does not play as such) goes again
/// as a document.
async fn as_document_if_refused(
    bot: &TgBot,
    chat: ChatId,
    upload: Upload,
    sent: Result<(), RequestError>,
) -> Result<(), RequestError> {
    match sent {
        Err(RequestError::Api(error)) => {
            tracing::info!(%error, "Telegram refused an audio file; sending it as a document");
            document(bot, chat, upload).await
        }
        other => other,
    }
}

async fn document(bot: &TgBot, chat: ChatId, upload: Upload) -> Result<(), RequestError> {
    bot.paced(
        chat,
        bot.send_document(chat, file(&upload))
            .parse_mode(ParseMode::Html)
            .caption(upload.caption.unwrap_or_default()),
    )
    .await
    .map(|_| ())
}

fn file(upload: &Upload) -> InputFile {
    InputFile::memory(upload.data.clone()).file_name(upload.file_name.clone())
}

/// Text with inline buttons under it (plain text, no preview). Buttons are
/// rows of (label, callback data).
pub async fn with_buttons(
    bot: &TgBot,
    chat: ChatId,
    text: &str,
    rows: Vec<Vec<(String, String)>>,
) -> Result<Message, RequestError> {
    bot.paced(
        chat,
        bot.send_message(chat, text)
            .link_preview_options(no_preview())
            .reply_markup(keyboard(rows)),
    )
    .await
}

/// HTML with inline buttons under it (no preview).
pub async fn html_with_buttons(
    bot: &TgBot,
    chat: ChatId,
    html: &str,
    rows: Vec<Vec<(String, String)>>,
) -> Result<Message, RequestError> {
    bot.paced(
        chat,
        bot.send_message(chat, html)
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .reply_markup(keyboard(rows)),
    )
    .await
}

/// Replaces a message's HTML and gives it one URL button. Telegram opens
/// the page only when the user taps it; the link preview stays off, so
/// nothing fetches it before.
pub async fn edit_html_with_link(
    bot: &TgBot,
    chat: ChatId,
    message: MessageId,
    html: &str,
    label: &str,
    url: &str,
) -> Result<(), RequestError> {
    let mut edit = bot
        .edit_message_text(chat, message, html)
        .parse_mode(ParseMode::Html)
        .link_preview_options(no_preview());
    if let Some(url) = button_url(url) {
        edit = edit.reply_markup(InlineKeyboardMarkup::new([[InlineKeyboardButton::url(
            label, url,
        )]]));
    }
    edit.await.map(|_| ())
}

/// Replaces a message's text and buttons (a page turned).
pub async fn edit_with_buttons(
    bot: &TgBot,
    chat: ChatId,
    message: MessageId,
    text: &str,
    rows: Vec<Vec<(String, String)>>,
) -> Result<(), RequestError> {
    match bot
        .edit_message_text(chat, message, text)
        .link_preview_options(no_preview())
        .reply_markup(keyboard(rows))
        .await
    {
        Ok(_) => Ok(()),
        // The same page again: nothing to change.
        Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
        Err(error) => Err(error),
    }
}

fn keyboard(rows: Vec<Vec<(String, String)>>) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(rows.into_iter().map(|row| {
        row.into_iter()
            .map(|(label, data)| InlineKeyboardButton::callback(label, data))
            .collect::<Vec<_>>()
    }))
}

/// How a connect button opens its link.
pub enum LinkButton<'a> {
    /// An ordinary URL button.
    Url { label: &'a str, url: &'a str },
    /// A Telegram Login button: Telegram signs who tapped it and appends
    /// that to the URL.
    Login { label: &'a str, url: &'a str },
}

/// An authorization message: one button, no preview, and protected
/// content (no forwarding, no saving: the link is for its owner only).
/// Should Telegram refuse a URL button, the link goes into the text, so
/// the user can always continue. Returns the message sent.
pub async fn link(
    bot: &TgBot,
    chat: ChatId,
    text: &str,
    button: LinkButton<'_>,
) -> Result<Message, RequestError> {
    let (markup, url) = match button {
        LinkButton::Url { label, url } => (
            button_url(url)
                .map(|u| InlineKeyboardMarkup::new([[InlineKeyboardButton::url(label, u)]])),
            url,
        ),
        LinkButton::Login { label, url } => (
            url.parse().ok().map(|u| {
                InlineKeyboardMarkup::new([[InlineKeyboardButton::login(
                    label,
                    LoginUrl {
                        url: u,
                        forward_text: None,
                        bot_username: None,
                        request_write_access: None,
                    },
                )]])
            }),
            url,
        ),
    };
    if let Some(markup) = markup {
        match bot
            .paced(
                chat,
                bot.send_message(chat, text)
                    .link_preview_options(no_preview())
                    .protect_content(true)
                    .reply_markup(markup),
            )
            .await
        {
            Ok(message) => return Ok(message),
            Err(RequestError::Api(ApiError::ButtonUrlInvalid)) => {
                tracing::warn!("Telegram refused the link button; sending the link as text");
            }
            Err(error) => return Err(error),
        }
    }
    bot.paced(
        chat,
        bot.send_message(chat, format!("{text}\n\n{url}"))
            .link_preview_options(no_preview())
            .protect_content(true),
    )
    .await
}

/// Replaces a message's text and buttons; when that fails (the message is
/// gone), sends the text as a new message.
pub async fn replace(
    bot: &TgBot,
    chat: ChatId,
    message: MessageId,
    text: &str,
    markup: InlineKeyboardMarkup,
) -> Result<(), RequestError> {
    match bot
        .edit_message_text(chat, message, text)
        .link_preview_options(no_preview())
        .reply_markup(markup.clone())
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::debug!(%error, "could not edit the message; sending a new one");
            bot.paced(
                chat,
                bot.send_message(chat, text)
                    .link_preview_options(no_preview())
                    .reply_markup(markup),
            )
            .await
            .map(|_| ())
        }
    }
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
