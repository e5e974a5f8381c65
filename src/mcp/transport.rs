//! The three ways mcpgram reaches an MCP server over streamable HTTP:
//! with the user's OAuth tokens, with static headers, or with nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use rmcp::RoleClient;
use rmcp::model::ProtocolVersion;
use rmcp::service::{ClientInitializeError, ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationManager};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig,
};

use super::McpError;
use super::client::McpClient;
use super::failure;
use super::standalone::Watched;
use crate::config::{ServerAuth, ServerConfig};
use crate::net_guard::{self, Resolver};
use crate::oauth::Connector;
use crate::secret::Secret;

pub type Session = RunningService<RoleClient, McpClient>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client for one server's MCP traffic, shared by every user's
/// session with it (building one loads the system's CA roots). Redirects
/// are not followed (a redirect could lead an untrusted server's requests,
/// token included, anywhere), and names resolve through the guard. An
/// untrusted server is reached without a proxy: a proxy resolves the host
/// itself, out of the guard's sight (`HTTPS_PROXY` would otherwise make
/// the guard moot); trusted servers honour the environment's proxy.
///
/// HTTP/1.1 only: over HTTP/2 every user's session with the server would
/// share one connection, and each 2025 session holds its GET stream open
/// for as long as it lives. Servers (and the CDNs in front of them) allow
/// 100 to 256 streams per connection, and hyper does not open a second
/// connection when they are used up: past that many warm sessions, every
/// request to the server would wait. Each GET stream gets a connection of
/// its own instead, and the requests share a pool, as with the SDKs'
/// clients.
pub fn http_client(server: &ServerConfig) -> Result<reqwest::Client, McpError> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT.min(server.timeout))
        .pool_idle_timeout(net_guard::POOL_IDLE_TIMEOUT)
        .dns_resolver(Arc::new(Resolver {
            trusted: server.trusted,
        }));
    if !server.trusted {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|error| McpError::Other {
        source: Box::new(error),
    })
}

/// Opens and initializes an MCP session for `user_id` on `server`.
/// `personal` is the user's own token, for a server that takes one.
pub async fn connect(
    server: &ServerConfig,
    http: reqwest::Client,
    user_id: u64,
    connector: &Connector,
    client: McpClient,
    personal: Option<Secret>,
) -> Result<Session, McpError> {
    net_guard::check_url(&server.url, server.trusted)?;
    let config = StreamableHttpClientTransportConfig::with_uri(server.url.as_str());
    let limit = server.timeout;
    if let Some(settings) = &server.user_token {
        let Some(token) = personal else {
            return Err(McpError::NoPersonalToken);
        };
        let mut headers = match &server.auth {
            ServerAuth::Headers(headers) => headers.clone(),
            _ => BTreeMap::new(),
        };
        // The user's own header wins over a static one of the same name.
        headers.retain(|name, _| !name.eq_ignore_ascii_case(&settings.header));
        headers.insert(
            settings.header.clone(),
            Secret::new(format!("{}{}", settings.prefix, token.expose())),
        );
        let config = with_headers(config, &headers)?;
        return start(client, &http, config, limit, |http| http).await;
    }
    match &server.auth {
        ServerAuth::None => start(client, &http, config, limit, |http| http).await,
        ServerAuth::Headers(headers) => {
            let config = with_headers(config, headers)?;
            start(client, &http, config, limit, |http| http).await
        }
        ServerAuth::OAuth(_) => {
            let Some(manager) = connector.session_manager(server, user_id).await? else {
                return Err(McpError::NotAuthorized {
                    challenge: None,
                    source: None,
                });
            };
            start(client, &http, config, limit, authorized(&http, manager)).await
        }
        ServerAuth::ClientCredentials(settings) => {
            let manager = connector
                .client_credentials_manager(server, settings)
                .await?;
            start(client, &http, config, limit, authorized(&http, manager)).await
        }
        ServerAuth::Enterprise(settings) => {
            // The token is the session's: a new session (after a 401, say)
            // exchanges the identity again.
            let token = connector.enterprise_token(server, settings).await?;
            let config = config.auth_header(token.expose());
            start(client, &http, config, limit, |http| http).await
        }
    }
}

/// The OAuth layer over each attempt's watched client, all attempts
/// sharing the one authorization manager.
fn authorized(
    http: &reqwest::Client,
    manager: AuthorizationManager,
) -> impl Fn(Watched<reqwest::Client>) -> AuthClient<Watched<reqwest::Client>> {
    let shared = AuthClient::new(Watched::new(http.clone()), manager);
    move |watched| {
        let mut client = shared.clone();
        client.http_client = watched;
        client
    }
}

/// Opens the session in the newest generation the server speaks. rmcp's
/// own fallback covers a server that rejects `server/discover` with a
/// JSON-RPC error; servers of 2025 also answer it with an HTTP 4xx (no
/// session id) or with a result that is not a discovery result, and those
/// get the `initialize` handshake on a fresh transport here. `wrap` puts
/// the authorization layer, if any, over the watched HTTP client.
async fn start<C>(
    client: McpClient,
    http: &reqwest::Client,
    config: StreamableHttpClientTransportConfig,
    limit: Duration,
    wrap: impl Fn(Watched<reqwest::Client>) -> C,
) -> Result<Session, McpError>
where
    C: StreamableHttpClient + Send + Sync + 'static,
{
    let watched = Watched::new(http.clone());
    let modern = client
        .clone()
        .serve_with_lifecycle(
            StreamableHttpClientTransport::with_client(wrap(watched.clone()), config.clone()),
            lifecycle(),
        )
        .await;
    let error = match modern {
        Ok(session) => {
            stream_ready(&session, &watched).await;
            return Ok(session);
        }
        // rmcp tried `initialize` already.
        Err(error @ ClientInitializeError::LegacyFallbackFailed { .. }) => {
            return Err(failure::from_initialize(error, limit));
        }
        Err(error) => failure::from_initialize(error, limit),
    };
    if !error.may_be_an_older_generation() {
        return Err(error);
    }
    tracing::debug!(error = %crate::logging::chain(&error), "server/discover not understood; trying initialize");
    let watched = Watched::new(http.clone());
    let session = client
        .serve_with_lifecycle(
            StreamableHttpClientTransport::with_client(wrap(watched.clone()), config),
            ClientLifecycleMode::Initialize,
        )
        .await
        .map_err(|error| failure::from_initialize(error, limit))?;
    stream_ready(&session, &watched).await;
    Ok(session)
}

/// Waits for the standalone stream of a session that has one: only the
/// 2025 generation (with `initialize`) opens it.
async fn stream_ready<C>(session: &Session, watched: &Watched<C>) {
    let legacy = session
        .peer()
        .peer_info()
        .is_some_and(|info| info.protocol_version.has_initialize());
    if legacy {
        watched.stream_ready().await;
    }
}

/// Both protocol generations: `server/discover` first (2026-07-28,
/// stateless), and the `initialize` handshake when the server answers as a
/// 2025 server does. rmcp falls back on the answer, or after 10 s of silence.
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
    }
}

/// Static headers. A `Bearer` Authorization goes through rmcp's
/// `auth_header` (which adds "Bearer " itself) so it is never sent twice;
/// any other scheme is passed through unchanged.
fn with_headers(
    config: StreamableHttpClientTransportConfig,
    headers: &BTreeMap<String, Secret>,
) -> Result<StreamableHttpClientTransportConfig, McpError> {
    let mut custom = HashMap::new();
    let mut bearer = None;
    for (name, value) in headers {
        let bad = || McpError::BadHeader { name: name.clone() };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        if header == AUTHORIZATION
            && let Some(token) = strip_bearer(value.expose())
        {
            bearer = Some(token.to_owned());
            continue;
        }
        let mut value = HeaderValue::from_str(value.expose()).map_err(|_| bad())?;
        value.set_sensitive(true);
        custom.insert(header, value);
    }
    let mut config = config.custom_headers(custom);
    if let Some(token) = bearer {
        config = config.auth_header(token);
    }
    Ok(config)
}

fn strip_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_authorization_becomes_the_bare_auth_header() {
        let mut headers = BTreeMap::new();
        headers.insert("Authorization".to_owned(), Secret::new("Bearer abc123"));
        headers.insert("X-Team".to_owned(), Secret::new("blue"));
        let config = with_headers(
            StreamableHttpClientTransportConfig::with_uri("http://x"),
            &headers,
        )
        .unwrap();
        assert_eq!(config.auth_header.as_deref(), Some("abc123"));
        assert!(!config.custom_headers.contains_key(&AUTHORIZATION));
        assert_eq!(
            config.custom_headers[&HeaderName::from_static("x-team")],
            "blue"
        );
    }

    #[test]
    fn other_authorization_schemes_pass_through() {
        let mut headers = BTreeMap::new();
        headers.insert(
            "authorization".to_owned(),
            Secret::new("Basic dXNlcjpwdw=="),
        );
        let config = with_headers(
            StreamableHttpClientTransportConfig::with_uri("http://x"),
            &headers,
        )
        .unwrap();
        assert_eq!(config.auth_header, None);
        assert_eq!(config.custom_headers[&AUTHORIZATION], "Basic dXNlcjpwdw==");
    }
}
