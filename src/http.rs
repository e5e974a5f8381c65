//! The bot's HTTP side: the OAuth redirect target and health checks.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::mcp::McpHub;
use crate::notify::ChatNotifier;
use crate::oauth::{CallbackError, CallbackParams, Connector};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub connector: Arc<Connector>,
    pub hub: Arc<McpHub>,
    pub notifier: Arc<dyn ChatNotifier>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/oauth/callback", get(oauth_callback))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// `GET /oauth/callback?code&state[&iss]` or `?error&state`.
async fn oauth_callback(
    State(state): State<HttpState>,
    Query(params): Query<CallbackParams>,
) -> Response {
    match state.connector.complete(params).await {
        Ok(connected) => {
            state
                .hub
                .forget(connected.owner.user_id, &connected.server_id)
                .await;
            state.notifier.connected(&connected).await;
            page(
                StatusCode::OK,
                &format!(
                    "Connected to {} — you can close this tab",
                    connected.server_name
                ),
                "Go back to Telegram: the bot has confirmed the connection there.",
            )
        }
        Err(error) => {
            if let Some(report) = error.chat_report() {
                state
                    .notifier
                    .connect_failed(
                        report.owner,
                        report.server_id,
                        report.server_name,
                        &report.reason,
                    )
                    .await;
            }
            let status = match error {
                CallbackError::Exchange { .. } => StatusCode::BAD_GATEWAY,
                _ => StatusCode::BAD_REQUEST,
            };
            page(status, "Not connected", &error.to_string())
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
