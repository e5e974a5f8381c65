//! Every word a browser sees, and the one tiny page they are shown in.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::ServerConfig;
use crate::oauth::{BrowserError, CallbackError, OAuthError, StartPage};
use crate::text::foreign;

pub fn connected(server_name: &str) -> Response {
    page(
        StatusCode::OK,
        &format!("Connected to {server_name} — you can close this tab"),
        "Go back to Telegram: the bot has confirmed the connection there.",
    )
}

/// The start page: who asked, for what, and the one button that lets this
/// browser go on (a POST to this same address).
pub fn start(start: &StartPage, server: Option<&ServerConfig>) -> Response {
    let name = server.map_or(start.flow.server_id.as_str(), |s| s.name.as_str());
    let requester = foreign(&start.requester, 64);
    let body = format!(
        "<p>Telegram user <strong>{requester}</strong> asked to connect their chat to your {name} account.</p>\n\
<p><strong>Continue only if you are {requester}.</strong> If someone sent you this link, close this page: \
continuing would let them use your {name} account.</p>\n\
<form method=\"post\"><button type=\"submit\" style=\"font-size:1.1em;padding:.5em 1em\">Continue to {name}</button></form>\n\
<p><small>The link expires in {minutes} minute(s) and works in one browser only.</small></p>",
        requester = escape(&requester),
        name = escape(name),
        minutes = start.expires_in.as_secs().div_ceil(60),
    );
    let mut response = html(StatusCode::OK, &format!("Connect {name}"), &body);
    // With no-referrer a browser posts the form with `Origin: null`; the
    // origin is what proves the form came from this page. Other sites
    // still get no referrer.
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

pub fn start_refused(status: StatusCode, error: &BrowserError) -> Response {
    let text = match error {
        BrowserError::Unknown => "This link is not valid: it was already used, replaced by a newer one, or never issued. Send /connect in Telegram to get a new one.".to_owned(),
        BrowserError::Expired { flow } => format!(
            "This link expired. Send /connect {} in Telegram to get a new one.",
            flow.server_id
        ),
        BrowserError::TakenByAnotherBrowser { .. } => {
            "This link was already opened in another browser, and works in that one only. Send /connect in Telegram to get a new one.".to_owned()
        }
        BrowserError::NotTheRequester { .. } => {
            "This link belongs to someone else: it connects their Telegram chat, not yours. It was not used, and its owner has been told.".to_owned()
        }
        BrowserError::Login(_) => {
            "Telegram could not confirm who you are. Open the link with the button in your Telegram chat with the bot.".to_owned()
        }
        BrowserError::CrossSite => {
            "This form can only be sent from its own page. Open the link from your Telegram chat with the bot.".to_owned()
        }
        BrowserError::Store(_) => {
            "Something went wrong on the bot's side. Please try again in a moment.".to_owned()
        }
    };
    page(status, "Not continued", &text)
}

pub fn not_connected(status: StatusCode, error: &CallbackError, retry: Option<&str>) -> Response {
    let mut body = format!("<p>{}</p>", escape(&explain(error)));
    if let Some(retry) = retry {
        body.push_str(&format!(
            "\n<p><a href=\"{}\">Try again</a></p>",
            escape(retry)
        ));
    }
    html(status, "Not connected", &body)
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
        CallbackError::WrongBrowser { .. } => {
            "This sign-in was started in another browser and can only be finished there. If someone sent you this link, your account was not connected to them. Its owner has been told.".to_owned()
        }
        CallbackError::Exchange {
            flow,
            source,
            retry: passing,
        } => {
            if *passing {
                return "The authorization server could not be reached to finish connecting. Your approval is kept: try again in a moment.".to_owned();
            }
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

/// A page of one paragraph of plain text.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    html(status, title, &format!("<p>{}</p>", escape(text)))
}

/// A tiny self-contained page; `body` is HTML already escaped.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{title}</title></head>\n<body style=\"font-family:sans-serif;max-width:32em;margin:3em auto;padding:0 1em\">\
<h1>{title}</h1>\n{body}</body></html>\n",
        title = escape(title),
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    private(&mut response);
    response
}

/// Headers of every page of a flow. The URLs that lead here hold codes,
/// states and start ids, so they must not leak through a Referer or a
/// cache; no script runs, and no other site may frame the page (a framed
/// start page could be clicked through). There is no `form-action`: the
/// start form's answer redirects to the authorization server, and browsers
/// hold redirects after a form post to that directive too.
pub fn private(response: &mut Response) {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
