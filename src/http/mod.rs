//! The HTTP adapter: the OAuth redirect target and health checks.
//!
//! Handlers only translate: the query in, the core's outcome out as a page.
//! [`pages`] holds every word a browser shows; [`PageError`] turns the
//! core's typed errors into a status and a page.

mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::gateway::{Gateway, OAuthError};
use crate::oauth::{CallbackError, CallbackParams};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub gateway: Arc<Gateway>,
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
    query: Result<Query<CallbackParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(params) = query.map_err(|_| PageError(CallbackError::MissingState))?;
    let connected = state.gateway.complete_connect(params).await?;
    Ok(pages::connected(&connected.server.name))
}

/// A callback that connected nothing, as the browser sees it.
pub struct PageError(pub CallbackError);

impl From<CallbackError> for PageError {
    fn from(error: CallbackError) -> Self {
        Self(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            // The authorization server or the token endpoint let us down.
            CallbackError::Exchange {
                source: OAuthError::Timeout(_),
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            CallbackError::Exchange {
                source: OAuthError::IssuerMismatch(_),
                ..
            } => StatusCode::BAD_REQUEST,
            CallbackError::Exchange {
                source: OAuthError::Store(_),
                ..
            }
            | CallbackError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            CallbackError::Exchange { .. } => StatusCode::BAD_GATEWAY,
            // The link or the browser's request is not usable.
            CallbackError::MissingState
            | CallbackError::UnknownState
            | CallbackError::Expired { .. }
            | CallbackError::Denied { .. }
            | CallbackError::MissingCode { .. }
            | CallbackError::UnknownServer { .. } => StatusCode::BAD_REQUEST,
        };
        pages::not_connected(status, &self.0)
    }
}
