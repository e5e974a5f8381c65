//! Every word a browser sees, and the one tiny page they are shown in.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::oauth::{CallbackError, OAuthError};
use crate::text::foreign;

pub fn connected(server_name: &str) -> Response {
    page(
        StatusCode::OK,
        &format!("Connected to {server_name} — you can close this tab"),
        "Go back to Telegram: the bot has confirmed the connection there.",
    )
}

pub fn not_connected(status: StatusCode, error: &CallbackError) -> Response {
    page(status, "Not connected", &explain(error))
}

fn explain(error: &CallbackError) -> String {
    let retry =
        |server_id: &str| format!("Send /connect {server_id} in Telegram to get a new link.");
    match error {
        CallbackError::MissingState => {
            "This page needs the code and state the authorization server sends; it cannot be opened directly.".to_owned()
        }
        CallbackError::UnknownState => {
            "This link is not valid: it was already used, replaced by a newer one, or never issued. Send /connect in Telegram to get a new one.".to_owned()
        }
        CallbackError::Expired { flow } => {
            format!("This link expired. {}", retry(&flow.server_id))
        }
        CallbackError::Denied {
            flow,
            error,
            description,
        } => format!(
            "The authorization server refused: {}{}. {}",
            foreign(error, 100),
            description
                .as_deref()
                .map(|d| format!(" ({})", foreign(d, 200)))
                .unwrap_or_default(),
            retry(&flow.server_id)
        ),
        CallbackError::MissingCode { flow } => format!(
            "The authorization server sent neither a code nor an error. {}",
            retry(&flow.server_id)
        ),
        CallbackError::UnknownServer { .. } => {
            "This server is no longer configured in the bot.".to_owned()
        }
        CallbackError::Exchange { flow, source } => {
            let why = match source {
                OAuthError::Timeout(limit) => format!(
                    "the authorization server did not answer within {} s",
                    limit.as_secs()
                ),
                OAuthError::IssuerMismatch(_) => {
                    "the answer came from a different authorization server than expected"
                        .to_owned()
                }
                OAuthError::Store(_) => "the bot could not store the tokens".to_owned(),
                _ => "the authorization server did not accept the approval".to_owned(),
            };
            format!("Connecting failed: {why}. {}", retry(&flow.server_id))
        }
        CallbackError::Store { .. } => {
            "Connecting failed: the bot could not store the tokens. Its admin can see the details in the log.".to_owned()
        }
    }
}

/// A tiny self-contained page. The URL that led here holds the code and
/// state, so it must not leak through a Referer or a cache.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{title}</title></head>\n<body style=\"font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em\">\
<h1>{title}</h1>\n<p>{body}</p></body></html>\n",
        title = escape(title),
        body = escape(body),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        html,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
