//! The HTTP adapter: the browser's side of a connect (the start page that
//! binds the browser, the OAuth callback), the client metadata document
//! and health checks.
//!
//! Handlers only translate: the request in, the core's outcome out as a
//! page. [`pages`] holds every word a browser sees; [`PageError`] turns the
//! core's typed errors into a status and a page.

mod pages;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use crate::gateway::ready::{self, Dependency};
use crate::gateway::{Binding, Bound, BrowserError, Gateway, OAuthError};
use crate::oauth::{CLIENT_METADATA_PATH, CallbackError, CallbackParams};

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub gateway: Arc<Gateway>,
    /// What `/readyz` checks.
    pub dependencies: Vec<Arc<dyn Dependency>>,
    /// In webhook mode: the path Telegram posts to, and the slot the chat
    /// adapter puts its route in once it is ready for updates.
    pub webhook: Option<(&'static str, WebhookSlot)>,
}

/// The chat adapter's webhook route while it takes updates: empty before
/// it starts and after it stops (so its update queue can close).
pub type WebhookSlot = Arc<std::sync::RwLock<Option<Router>>>;

/// The public routes; `/metrics` among them unless it has an address of
/// its own (`with_metrics`).
pub fn router(state: HttpState, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/oauth/start/{flow}", get(start_page).post(start_confirmed))
        .route("/oauth/callback", get(oauth_callback))
        .route(CLIENT_METADATA_PATH, get(client_metadata))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let router = if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    let router = match &state.webhook {
        Some((path, slot)) => {
            let slot = slot.clone();
            router.route(
                path,
                axum::routing::post(move |request: axum::extract::Request| async move {
                    // The chat adapter's own route checks the secret token
                    // and queues the update; the answer does not wait for
                    // the update to be handled.
                    let route = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
                    match route {
                        Some(route) => {
                            use tower::ServiceExt;
                            match route.clone().oneshot(request).await {
                                Ok(response) => response.into_response(),
                                Err(never) => match never {},
                            }
                        }
                        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    }
                }),
            )
        }
        None => router,
    };
    router.with_state(state)
}

/// `/metrics` alone, for `http.metrics_listen`.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// 200 when every dependency answers, 503 naming those that do not (the
/// reasons go to the log).
async fn readyz(State(state): State<HttpState>) -> Response {
    let results = ready::check_all(&state.dependencies).await;
    let mut body = String::new();
    let mut ready = true;
    for (name, result) in results {
        match result {
            Ok(()) => body.push_str(&format!("{name}: ok\n")),
            Err(reason) => {
                ready = false;
                tracing::warn!(dependency = name, %reason, "not ready");
                body.push_str(&format!("{name}: failing\n"));
            }
        }
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.gateway.render_metrics().await,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// `GET /oauth/start/{flow}`: with Telegram Login, the signed identity is
/// checked and the requester's browser sent on; otherwise a page names the
/// requester and asks them to confirm (a GET changes nothing).
async fn start_page(
    State(state): State<HttpState>,
    Path(flow): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    jar: CookieJar,
) -> Result<Response, BrowserPageError> {
    match state.gateway.binding() {
        Binding::Loopback => Err(BrowserError::Unknown.into()),
        Binding::TelegramLogin => {
            let presented = presented_cookie(&jar, &flow);
            let bound = state
                .gateway
                .bind_telegram_login(&flow, &query, presented)
                .await?;
            Ok(go_on(jar, bound))
        }
        Binding::StartPage => {
            let page = state.gateway.start_page(&flow).await?;
            let server = state.gateway.config().server(&page.flow.server_id).cloned();
            Ok(pages::start(&page, server.as_deref()))
        }
    }
}

/// `POST /oauth/start/{flow}`: the requester confirmed on the start page.
async fn start_confirmed(
    State(state): State<HttpState>,
    Path(flow): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<Response, BrowserPageError> {
    if state.gateway.binding() != Binding::StartPage {
        return Err(BrowserError::Unknown.into());
    }
    let same_origin = is_same_origin(&headers, state.gateway.config().http.public_url.as_ref());
    let presented = presented_cookie(&jar, &flow);
    let bound = state
        .gateway
        .bind_browser(&flow, same_origin, presented)
        .await?;
    Ok(go_on(jar, bound))
}

/// Sets the binding cookie and sends the browser to the authorization
/// server (303: the next request is a GET, whatever this one was).
fn go_on(jar: CookieJar, bound: Bound) -> Response {
    let cookie = Cookie::build((bound.cookie.name, bound.cookie.value.expose().to_owned()))
        .path("/oauth")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(bound.cookie.secure)
        .max_age(
            cookie::time::Duration::try_from(bound.cookie.max_age)
                .unwrap_or(cookie::time::Duration::minutes(10)),
        );
    let mut response =
        (jar.add(cookie), Redirect::to(bound.authorize_url.expose())).into_response();
    pages::private(&mut response);
    response
}

fn presented_cookie(jar: &CookieJar, flow: &str) -> Option<String> {
    jar.get(&crate::oauth::binding::cookie_name(flow))
        .map(|c| c.value().to_owned())
}

/// The form was posted from the bot's own page: the browser says so in
/// `Origin`, or, where it sends `Origin: null` or none, in
/// `Sec-Fetch-Site`. A cross-site auto-submitted form must not bind a
/// victim's browser to someone else's flow.
fn is_same_origin(headers: &HeaderMap, public: Option<&url::Url>) -> bool {
    let Some(public) = public else {
        return false;
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null");
    match origin {
        Some(origin) => url::Url::parse(origin).is_ok_and(|o| o.origin() == public.origin()),
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin"),
    }
}

/// `GET /oauth/callback?code&state[&iss]` or `?error&state`.
async fn oauth_callback(
    State(state): State<HttpState>,
    OriginalUri(uri): OriginalUri,
    jar: CookieJar,
    query: Result<Query<CallbackParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(params) = query.map_err(|_| PageError::new(CallbackError::MissingState, &uri))?;
    let cookie = |name: &str| jar.get(name).map(|c| c.value().to_owned());
    let connected = state
        .gateway
        .complete_connect(params, &cookie)
        .await
        .map_err(|error| PageError::new(error, &uri))?;
    Ok(pages::connected(&connected.server.name))
}

/// `GET /oauth/client-metadata.json` (SEP-991), when hosted on https.
async fn client_metadata(State(state): State<HttpState>) -> Response {
    match state.gateway.client_metadata() {
        Some(document) => (
            [(header::CACHE_CONTROL, "public, max-age=3600")],
            axum::Json(document),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A callback that connected nothing, as the browser sees it. `retry` is
/// the callback's own address, when loading it again may work.
pub struct PageError {
    error: CallbackError,
    retry: Option<String>,
}

impl PageError {
    fn new(error: CallbackError, uri: &axum::http::Uri) -> Self {
        let retry =
            matches!(error, CallbackError::Exchange { retry: true, .. }).then(|| uri.to_string());
        Self { error, retry }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self.error {
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
            CallbackError::WrongBrowser { .. } => StatusCode::FORBIDDEN,
            // The link or the browser's request is not usable.
            CallbackError::MissingState
            | CallbackError::UnknownState
            | CallbackError::Expired { .. }
            | CallbackError::Denied { .. }
            | CallbackError::MissingCode { .. }
            | CallbackError::UnknownServer { .. } => StatusCode::BAD_REQUEST,
        };
        pages::not_connected(status, &self.error, self.retry.as_deref())
    }
}

/// A start page that cannot go on, as the browser sees it.
pub struct BrowserPageError(BrowserError);

impl From<BrowserError> for BrowserPageError {
    fn from(error: BrowserError) -> Self {
        Self(error)
    }
}

impl IntoResponse for BrowserPageError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            BrowserError::Unknown | BrowserError::Expired { .. } => StatusCode::NOT_FOUND,
            BrowserError::TakenByAnotherBrowser { .. }
            | BrowserError::NotTheRequester { .. }
            | BrowserError::CrossSite => StatusCode::FORBIDDEN,
            BrowserError::Login(_) => StatusCode::BAD_REQUEST,
            BrowserError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        pages::start_refused(status, &self.0)
    }
}
