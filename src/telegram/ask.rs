//! Dialogues as messages: each question is a message with its buttons;
//! once answered, its buttons give way to the answer and the next
//! question follows. A server's elicitation becomes such a dialogue, and
//! the call waits for it (up to [`ELICIT_WAIT`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rmcp::model::{ElicitRequestParams, ElicitResult, ElicitationAction};
use serde_json::Value;
use teloxide::RequestError;
use teloxide::types::ChatId;

use super::TgBot;
use super::dialogue::{self, Body, Dialogue, Dialogues, Ending, Purpose, Step};
use super::send;
use super::wording;
use crate::config::ServerConfig;
use crate::gateway::form::Form;
use crate::mcp::Schema;

/// How long a server's question waits for its answer.
pub const ELICIT_WAIT: Duration = Duration::from_secs(10 * 60);

/// Sends the dialogue's open question (or its last step).
pub async fn show(bot: &TgBot, d: &mut Dialogue) -> Result<(), RequestError> {
    let rows: Vec<Vec<(String, String)>> = d
        .buttons()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(label, verb)| (label, dialogue::data(&d.id, &verb)))
                .collect()
        })
        .collect();
    let sent = match &d.body {
        Body::Url { url } => {
            let html = wording::url_question(&d.intro, url, &host_of(url));
            let sent = send::html_with_buttons(bot, d.chat, &html, rows).await?;
            d.question = Some((sent.id, html));
            return Ok(());
        }
        Body::Form(_) | Body::Token => {
            let text = wording::dialogue_question(d);
            let sent = send::with_buttons(bot, d.chat, &text, rows).await?;
            (sent.id, text)
        }
    };
    d.question = Some(sent);
    Ok(())
}

/// Opens `d` for `user_id` and asks its first question; a server's open
/// question is never pushed aside, and the user is told so. Whether it
/// opened.
pub async fn start(
    bot: &TgBot,
    dialogues: &Dialogues,
    user_id: u64,
    d: Dialogue,
) -> Result<bool, RequestError> {
    let chat = d.chat;
    match dialogues.begin(user_id, d).await {
        Ok(open) => show(bot, &mut *open.lock().await).await.map(|()| true),
        Err(_) => send::text(bot, chat, wording::QUESTION_OPEN)
            .await
            .map(|()| false),
    }
}

/// Takes the buttons off the open question and puts `note` under it.
async fn close(bot: &TgBot, d: &mut Dialogue, note: &str) {
    let Some((id, text)) = d.question.take() else {
        return;
    };
    let result = match &d.body {
        Body::Url { .. } => {
            // HTML: the note is plain words of ours.
            let html = format!("{text}\n\n{note}");
            bot_edit_html(bot, d.chat, id, &html).await
        }
        Body::Form(_) | Body::Token => {
            send::edit_with_buttons(bot, d.chat, id, &format!("{text}\n\n{note}"), Vec::new()).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "could not close an answered question");
    }
}

async fn bot_edit_html(
    bot: &TgBot,
    chat: ChatId,
    id: teloxide::types::MessageId,
    html: &str,
) -> Result<(), RequestError> {
    use teloxide::prelude::*;
    use teloxide::types::ParseMode;
    bot.edit_message_text(chat, id, html)
        .parse_mode(ParseMode::Html)
        .await
        .map(|_| ())
}

/// What the answer to the open question was, for the note under it.
pub fn answer_note(d: &Dialogue, name: Option<&str>) -> String {
    let Body::Form(form) = &d.body else {
        return String::new();
    };
    match name.and_then(|n| form.values().get(n)) {
        Some(Value::String(s)) => wording::answered(s),
        Some(other) => wording::answered(&other.to_string()),
        None => wording::SKIPPED.to_owned(),
    }
}

/// The name of the property the dialogue asks for now.
pub fn open_field(d: &Dialogue) -> Option<String> {
    match &d.body {
        Body::Form(form) => form.current().map(|f| f.name.clone()),
        Body::Url { .. } | Body::Token => None,
    }
}

/// Carries out `step` in the chat. A guided call's Run comes back to the
/// caller, which runs it.
pub async fn advance(
    bot: &TgBot,
    dialogues: &Dialogues,
    user_id: u64,
    d: &mut Dialogue,
    step: Step,
    answered: Option<String>,
) -> Result<Option<Ending>, RequestError> {
    match step {
        Step::Ignored => Ok(None),
        Step::Refused(problems) => {
            send::text(bot, d.chat, &wording::answer_refused(&problems)).await?;
            Ok(None)
        }
        Step::Next => {
            let note = answer_note(d, answered.as_deref());
            close(bot, d, &note).await;
            show(bot, d).await?;
            Ok(None)
        }
        Step::Opened => {
            dialogues.end(user_id, &d.id);
            if let (Body::Url { url }, Some((id, text))) = (&d.body, d.question.take()) {
                let host = host_of(url);
                let html = format!(
                    "{text}\n\n{}",
                    teloxide::utils::html::escape(&wording::page_opened(&host))
                );
                send::edit_html_with_link(
                    bot,
                    d.chat,
                    id,
                    &html,
                    &wording::open_host_button(&host),
                    url,
                )
                .await?;
            }
            Ok(None)
        }
        Step::Ended(ending) => {
            dialogues.end(user_id, &d.id);
            let note = match &ending {
                Ending::Elicited(ElicitationAction::Accept) => wording::ANSWERS_SENT,
                Ending::Elicited(ElicitationAction::Decline) => wording::DECLINED,
                Ending::Elicited(_) | Ending::Left => wording::LEFT,
                Ending::Run { .. } | Ending::Prompt { .. } => "✔",
                Ending::Token { .. } => wording::TOKEN_RECEIVED,
            };
            close(bot, d, note).await;
            Ok(Some(ending))
        }
    }
}

/// A server's elicitation, put to `user_id` in their private chat; the
/// call waits for the answer.
pub fn elicit(
    bot: TgBot,
    dialogues: Arc<Dialogues>,
    server: Arc<ServerConfig>,
    user_id: u64,
    request: ElicitRequestParams,
) -> BoxFuture<'static, ElicitResult> {
    Box::pin(async move {
        let decline = || ElicitResult::new(ElicitationAction::Decline);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let (message, body) = match request {
            ElicitRequestParams::FormElicitationParams {
                message,
                requested_schema,
                ..
            } => {
                let Ok(Value::Object(schema)) = serde_json::to_value(&requested_schema) else {
                    return decline();
                };
                let form = Form::new(Arc::new(Schema::new(Arc::new(schema))));
                (message, Body::Form(form))
            }
            ElicitRequestParams::UrlElicitationParams { message, url, .. } => {
                // Only a web page is offered to open.
                match url::Url::parse(&url) {
                    Ok(parsed)
                        if matches!(parsed.scheme(), "https" | "http")
                            && parsed.host_str().is_some() => {}
                    _ => {
                        tracing::info!(server = %server.id, "declined a URL elicitation that is not a web page");
                        return decline();
                    }
                }
                (message, Body::Url { url })
            }
            #[allow(unreachable_patterns)] // rmcp's enum is non-exhaustive
            _ => return decline(),
        };
        let d = Dialogue::new(
            ChatId(user_id as i64),
            server.clone(),
            wording::elicit_intro(&server, &message),
            body,
            Purpose::Elicit(Some(reply)),
        );
        let id = d.id.clone();
        let Ok(d) = dialogues.begin(user_id, d).await else {
            // Another question of a server is open: one at a time.
            return ElicitResult::new(ElicitationAction::Cancel);
        };
        if let Err(error) = show(&bot, &mut *d.lock().await).await {
            tracing::info!(%error, "could not ask the user a server's question");
            dialogues.end(user_id, &id);
            return ElicitResult::new(ElicitationAction::Cancel);
        }
        match tokio::time::timeout(ELICIT_WAIT, answer).await {
            Ok(Ok(result)) => result,
            _ => {
                dialogues.end(user_id, &id);
                close(&bot, &mut *d.lock().await, wording::QUESTION_EXPIRED).await;
                ElicitResult::new(ElicitationAction::Cancel)
            }
        }
    })
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}
