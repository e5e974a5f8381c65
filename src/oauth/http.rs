//! The HTTP client of every OAuth request (discovery, registration, token,
//! refresh, revocation), one per server, shared by all its users' managers.
//!
//! rmcp's own client filters addresses only when the MCP URL is public and
//! lets `HTTPS_PROXY` resolve hosts behind the guard's back. This one
//! resolves through [`crate::net_guard::Resolver`] for every request, takes
//! no proxy for an untrusted server (a proxy would resolve the host itself,
//! where no guard can see), checks every redirect's target, caps bodies and
//! times out. It also notes how each request ended, so a failed token
//! exchange can be told apart: the server down (keep the flow, offer a
//! retry) or the server saying no (the flow is spent).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rmcp::transport::auth::{
    OAuthHttpClient, OAuthHttpClientError, OAuthHttpClientFuture, OAuthHttpRedirectPolicy,
    OAuthHttpRequest,
};

use super::discovery_cache::{Answer, DiscoveryCache};
use crate::config::ServerConfig;
use crate::net_guard::{self, GuardError, Resolver};

const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BODY: usize = 1024 * 1024;
const MAX_REDIRECTS: usize = 5;

/// How the last OAuth request of an [`observed`] task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// No response: connection refused, reset, timed out, TLS…
    NoResponse,
    /// A response; for a failure, the OAuth `error` code of its JSON body
    /// (RFC 6749 §5.2), when it has one.
    Status { status: u16, error: Option<String> },
}

impl Ending {
    /// Whether trying the same request again later may succeed.
    pub fn is_passing(&self) -> bool {
        match self {
            Ending::NoResponse => true,
            Ending::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }

    /// The server does not know the client (it forgot a registration).
    pub fn is_invalid_client(&self) -> bool {
        matches!(self, Ending::Status { error: Some(e), .. } if e == "invalid_client")
    }
}

/// The `error` member of an OAuth error response.
fn oauth_error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
        .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
}

tokio::task_local! {
    static LAST: Arc<Mutex<Option<Ending>>>;
}

/// Runs `work`, noting how its last OAuth request ended.
pub async fn observed<F: Future>(work: F) -> (F::Output, Option<Ending>) {
    let cell = Arc::new(Mutex::new(None));
    let output = LAST.scope(cell.clone(), work).await;
    let ending = cell.lock().unwrap_or_else(|p| p.into_inner()).take();
    (output, ending)
}

fn note(ending: Ending) {
    let _ = LAST.try_with(|cell| *cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(ending));
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the response body exceeds {MAX_BODY} bytes")]
    TooLarge,
    /// Refusing an address: a redirect's target, or an endpoint named by
    /// metadata.
    #[error("refusing the address")]
    Redirect(#[source] GuardError),
    #[error("the URL is not valid")]
    BadUrl,
    #[error("the request failed")]
    Http(#[source] reqwest::Error),
}

pub struct OAuthHttp {
    follow: reqwest::Client,
    stop: reqwest::Client,
    trusted: bool,
    /// Drop RFC 8707 `resource` from token requests (the server is
    /// configured with `resource = false`).
    strip_resource: bool,
    /// Discovery's answers and the server's challenge.
    cache: DiscoveryCache,
}

impl OAuthHttp {
    pub fn for_server(server: &ServerConfig) -> Result<Self, reqwest::Error> {
        let trusted = server.trusted;
        let build = |redirect: reqwest::redirect::Policy| {
            let mut builder = reqwest::Client::builder()
                .timeout(TIMEOUT)
                .connect_timeout(TIMEOUT.min(server.timeout))
                .pool_idle_timeout(net_guard::POOL_IDLE_TIMEOUT)
                .redirect(redirect)
                .dns_resolver(Arc::new(Resolver { trusted }));
            if !trusted {
                builder = builder.no_proxy();
            }
            builder.build()
        };
        let follow = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.stop()
            } else {
                match net_guard::check_url(attempt.url(), trusted) {
                    Ok(()) => attempt.follow(),
                    Err(error) => attempt.error(RequestError::Redirect(error)),
                }
            }
        });
        let strip_resource = match &server.auth {
            crate::config::ServerAuth::OAuth(settings) => !settings.resource,
            _ => false,
        };
        Ok(Self {
            follow: build(follow)?,
            stop: build(reqwest::redirect::Policy::none())?,
            trusted,
            strip_resource,
            cache: DiscoveryCache::default(),
        })
    }

    async fn run(
        &self,
        request: OAuthHttpRequest,
    ) -> Result<oauth2::HttpResponse, OAuthHttpClientError> {
        let client = match request.redirect_policy {
            OAuthHttpRedirectPolicy::Stop => &self.stop,
            _ => &self.follow,
        };
        self.exchange(client, request.request).await
    }

    async fn exchange(
        &self,
        client: &reqwest::Client,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, OAuthHttpClientError> {
        let mut request = request;
        if self.strip_resource {
            strip_form_param(&mut request, "resource");
        }
        let request = reqwest::Request::try_from(request)?;
        net_guard::check_url(request.url(), self.trusted)?;
        let cacheable = request.method() == reqwest::Method::GET
            && !request
                .headers()
                .contains_key(reqwest::header::AUTHORIZATION);
        let url = cacheable.then(|| request.url().to_string());
        if let Some(answer) = url.as_deref().and_then(|url| self.cache.answer(url)) {
            note(Ending::Status {
                status: answer.status.as_u16(),
                error: None,
            });
            let mut builder = oauth2::http::Response::builder().status(answer.status);
            for (name, value) in &answer.headers {
                builder = builder.header(name, value);
            }
            return Ok(builder.body(answer.body)?);
        }
        let response = match client.execute(request).await {
            Ok(response) => response,
            Err(error) => {
                note(Ending::NoResponse);
                return Err(Box::new(error));
            }
        };
        let status = response.status();
        let mut builder = oauth2::http::Response::builder()
            .status(response.status())
            .version(response.version());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.inspect_err(|_| note(Ending::NoResponse))?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Box::new(RequestError::TooLarge));
            }
            body.extend_from_slice(&chunk);
        }
        note(Ending::Status {
            status: status.as_u16(),
            error: (!status.is_success())
                .then(|| oauth_error_code(&body))
                .flatten(),
        });
        if let Some(url) = url {
            let answer = Answer {
                status,
                headers: builder.headers_ref().cloned().unwrap_or_default(),
                body,
            };
            self.cache.keep(&url, &answer);
            return Ok(builder.body(answer.body)?);
        }
        Ok(builder.body(body)?)
    }

    /// The `WWW-Authenticate` challenge the MCP endpoint answers an
    /// unauthenticated request with (a 401 or 403), if any: where discovery
    /// starts and which scopes the server asks for (SEP-835).
    pub async fn challenge(&self, mcp_url: &url::Url) -> Option<String> {
        if let Some(challenge) = self.cache.challenge(mcp_url.as_str()) {
            return Some(challenge);
        }
        let challenge = self.ask_challenge(mcp_url).await?;
        self.cache.keep_challenge(mcp_url.as_str(), &challenge);
        Some(challenge)
    }

    /// Forgets the server's discovery answers and challenge: a request
    /// built on them failed, and they may have changed.
    pub fn forget_discovery(&self) {
        self.cache.forget();
    }

    async fn ask_challenge(&self, mcp_url: &url::Url) -> Option<String> {
        let initialize = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "mcpgram", "version": env!("CARGO_PKG_VERSION")}
            }
        });
        let response = self
            .stop
            .post(mcp_url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(initialize.to_string())
            .send()
            .await
            .ok()?;
        if !matches!(response.status().as_u16(), 401 | 403) {
            return None;
        }
        response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 4096)
            .map(str::to_owned)
    }

    /// A form POST outside rmcp (the registration probe), under the same
    /// rules as every other OAuth request.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Ending, RequestError> {
        let parsed = url::Url::parse(url).map_err(|_| RequestError::BadUrl)?;
        net_guard::check_url(&parsed, self.trusted).map_err(RequestError::Redirect)?;
        let mut request = self.stop.post(parsed).form(form);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(RequestError::Http)?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        Ok(Ending::Status {
            status: status.as_u16(),
            error: (!status.is_success())
                .then(|| oauth_error_code(&body[..body.len().min(MAX_BODY)]))
                .flatten(),
        })
    }
}

impl OAuthHttp {
    /// A JSON document (authorization server metadata) fetched outside
    /// rmcp's discovery, under the same rules; `None` unless it is a 200
    /// with a body that parses.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &url::Url) -> Option<T> {
        net_guard::check_url(url, self.trusted).ok()?;
        let response = self
            .stop
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .ok()?;
        if response.status() != reqwest::StatusCode::OK {
            return None;
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.ok()?;
            if body.len() + chunk.len() > MAX_BODY {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).ok()
    }
}

impl OAuthHttpClient for OAuthHttp {
    fn execute(&self, request: OAuthHttpRequest) -> OAuthHttpClientFuture<'_> {
        Box::pin(self.run(request))
    }
}

/// Removes `name` from an `application/x-www-form-urlencoded` body.
fn strip_form_param(request: &mut oauth2::HttpRequest, name: &str) {
    let is_form = request
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return;
    }
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(request.body())
        .filter(|(key, _)| key != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    *request.body_mut() = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish()
        .into_bytes();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_is_stripped_from_form_bodies_only() {
        let mut request = oauth2::http::Request::builder()
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(b"grant_type=authorization_code&code=c&resource=https%3A%2F%2Fmcp%2F".to_vec())
            .unwrap();
        strip_form_param(&mut request, "resource");
        assert_eq!(request.body(), b"grant_type=authorization_code&code=c");
        let mut json = oauth2::http::Request::builder()
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b"{\"resource\":1}".to_vec())
            .unwrap();
        strip_form_param(&mut json, "resource");
        assert_eq!(json.body(), b"{\"resource\":1}");
    }

    #[tokio::test]
    async fn passing_and_final_endings_are_told_apart() {
        let status = |status, error: Option<&str>| Ending::Status {
            status,
            error: error.map(str::to_owned),
        };
        assert!(Ending::NoResponse.is_passing());
        assert!(status(503, None).is_passing());
        assert!(!status(400, Some("invalid_grant")).is_passing());
        assert!(status(401, Some("invalid_client")).is_invalid_client());
        let ((), ending) = observed(async { note(status(502, None)) }).await;
        assert_eq!(ending, Some(status(502, None)));
        assert_eq!(
            oauth_error_code(b"{\"error\":\"invalid_client\"}").as_deref(),
            Some("invalid_client")
        );
        assert_eq!(oauth_error_code(b"<html>"), None);
        let ((), nothing) = observed(async {}).await;
        assert_eq!(nothing, None);
    }
}
