//! Building rmcp `AuthorizationManager`s for a configured server.
//!
//! A manager is built to start a flow, again to complete it (a pending
//! flow keeps data, not a live manager with its two HTTP clients), and
//! once per live MCP session; each starts with metadata discovery under the
//! server's timeout and address rules.

use std::sync::Arc;

use rmcp::transport::auth::{
    AuthError, AuthorizationManager, AuthorizationMetadata, OAuthClientConfig,
};

use super::OAuthError;
use super::http::OAuthHttp;
use crate::config::{ServerAuth, ServerConfig};
use crate::net_guard;
use crate::store::ClientRecord;

/// A manager that has discovered the server's authorization metadata, and
/// a copy of that metadata (rmcp keeps its own private).
pub struct Discovered {
    pub manager: AuthorizationManager,
    pub metadata: AuthorizationMetadata,
    /// The endpoints were not discovered but assumed (`/authorize`,
    /// `/token`, `/register` at the server's root), as servers of the
    /// 2025-03-26 specification may expect.
    pub assumed: bool,
}

impl Discovered {
    /// The issuer named by the discovered metadata, if any.
    pub fn issuer(&self) -> Option<String> {
        self.metadata.issuer.clone()
    }

    /// Every scope the authorization server advertises.
    pub fn advertised_scopes(&self) -> Vec<String> {
        self.metadata.scopes_supported.clone().unwrap_or_default()
    }

    /// Whether the server takes a Client ID Metadata Document URL as a
    /// client id (SEP-991).
    pub fn supports_metadata_documents(&self) -> bool {
        self.metadata
            .additional_fields
            .get("client_id_metadata_document_supported")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

/// Discovers the server's authorization metadata (RFC 9728 protected
/// resource metadata, then RFC 8414 / OIDC), every request made by `http`.
///
/// `challenge` is the `WWW-Authenticate` of the server's 401, when there
/// was one: its `resource_metadata` is followed first and its `scope`
/// seeds scope selection. Only a server known to want OAuth (it answered
/// 401, or `assumed_before` says its endpoints were assumed when the user
/// connected) is assumed to use the 2025-03-26 default endpoints when
/// nothing is discovered; any other server is not an OAuth server.
pub async fn discover(
    server: &ServerConfig,
    http: Arc<OAuthHttp>,
    challenge: Option<&str>,
    assumed_before: bool,
) -> Result<Discovered, OAuthError> {
    net_guard::check_url(&server.url, server.trusted)?;
    let work = async {
        let mut manager =
            AuthorizationManager::new_with_oauth_http_client(server.url.as_str(), http.clone())
                .await
                .map_err(OAuthError::Discovery)?;
        let (metadata, assumed) = match manager.resolve_metadata_from_challenge(challenge).await {
            Ok(resolution) => (resolution.metadata, !resolution.source.is_discovered()),
            Err(AuthError::AuthorizationServerMismatch {
                expected_issuer,
                received_issuer,
            }) if legacy_issuer_allowed(server, challenge, &expected_issuer, &received_issuer) => {
                let metadata = legacy_metadata(&server.url, &http)
                    .await
                    .ok_or(OAuthError::NoMetadata)?;
                tracing::info!(server = %server.id, issuer = %received_issuer, "2025-03-26 server: metadata at the root names an issuer with a path; accepted (same origin)");
                (metadata, false)
            }
            Err(error) => return Err(OAuthError::Discovery(error)),
        };
        if assumed && challenge.is_none() && !assumed_before {
            return Err(OAuthError::NoMetadata);
        }
        let mut metadata = metadata;
        if let ServerAuth::OAuth(settings) = &server.auth
            && let Some(method) = settings.token_endpoint_auth_method
        {
            // rmcp picks basic or post from what the server advertises; a
            // pre-registered client's method is known, so say only that.
            metadata.additional_fields.insert(
                "token_endpoint_auth_methods_supported".to_owned(),
                serde_json::json!([method.as_str()]),
            );
        }
        manager.set_metadata(metadata.clone());
        Ok(Discovered {
            manager,
            metadata,
            assumed,
        })
    };
    tokio::time::timeout(server.timeout, work)
        .await
        .map_err(|_| OAuthError::Timeout(server.timeout))?
}

/// A server of the 2025-03-26 specification has no protected resource
/// metadata: its authorization server is defined as the MCP URL's origin,
/// whose root metadata is used whatever issuer it names. RFC 8414 would
/// refuse an issuer with a path there, yet servers of that generation
/// send one; it is taken only when it stays on the MCP server's own origin
/// (whoever serves that metadata controls the origin anyway) and nothing
/// points at protected resource metadata. Anything else is a mismatch.
fn legacy_issuer_allowed(
    server: &ServerConfig,
    challenge: Option<&str>,
    expected: &str,
    received: &str,
) -> bool {
    let origin = server.url.origin().ascii_serialization();
    let expected_is_root = expected.trim_end_matches('/') == origin;
    let same_origin = url::Url::parse(received)
        .is_ok_and(|issuer| issuer.origin().ascii_serialization() == origin);
    let points_to_metadata = challenge.is_some_and(|c| c.contains("resource_metadata"));
    expected_is_root && same_origin && !points_to_metadata
}

/// The metadata at the root of the MCP server's origin.
async fn legacy_metadata(mcp_url: &url::Url, http: &OAuthHttp) -> Option<AuthorizationMetadata> {
    let mut url = mcp_url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.set_path("/.well-known/oauth-authorization-server");
    http.get_json(&url).await
}

/// Points a discovered manager at an existing client registration.
///
/// rmcp's own `initialize_from_store` would set the redirect URI to the MCP
/// URL and drop the client secret, which breaks refresh for confidential
/// clients; this keeps both.
pub fn use_client(
    manager: &mut AuthorizationManager,
    client: &ClientRecord,
) -> Result<(), OAuthError> {
    let mut config = OAuthClientConfig::new(client.client_id.clone(), client.redirect_uri.clone())
        .with_scopes(client.scopes.clone());
    if let Some(secret) = &client.client_secret {
        config = config.with_client_secret(secret.expose());
    }
    manager
        .configure_client(config)
        .map_err(OAuthError::Authorize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resource server and its authorization server on loopback that
    /// count the requests they answer.
    async fn counted_server() -> (url::Url, Arc<AtomicUsize>) {
        use axum::routing::{get, post};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let count = {
            let hits = hits.clone();
            move || {
                hits.fetch_add(1, Ordering::SeqCst);
            }
        };
        let challenge =
            format!("Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\"");
        let resource = serde_json::json!({
            "resource": format!("{base}/mcp"),
            "authorization_servers": [base.clone()],
            "scopes_supported": ["read"],
        });
        let metadata = serde_json::json!({
            "issuer": base.clone(),
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"),
            "registration_endpoint": format!("{base}/register"),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        });
        let (c1, c2, c3) = (count.clone(), count.clone(), count);
        let app = axum::Router::new()
            .route(
                "/mcp",
                post(move || {
                    c1();
                    let challenge = challenge.clone();
                    async move {
                        (
                            axum::http::StatusCode::UNAUTHORIZED,
                            [(axum::http::header::WWW_AUTHENTICATE, challenge)],
                        )
                    }
                }),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(move || {
                    c2();
                    let resource = resource.clone();
                    async move { axum::Json(resource) }
                }),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(move || {
                    c3();
                    let metadata = metadata.clone();
                    async move { axum::Json(metadata) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url::Url::parse(&format!("{base}/mcp")).unwrap(), hits)
    }

    #[tokio::test]
    async fn discovery_asks_the_network_once_until_told_to_forget() {
        let (url, hits) = counted_server().await;
        let server = ServerConfig::from_url(url.clone(), ServerAuth::None);
        let http = Arc::new(OAuthHttp::for_server(&server).unwrap());
        let discover_once = || async {
            let challenge = http.challenge(&url).await;
            assert!(challenge.is_some(), "the server challenges");
            discover(&server, http.clone(), challenge.as_deref(), false)
                .await
                .map(|d| d.metadata.token_endpoint)
                .unwrap()
        };
        let first = discover_once().await;
        let asked = hits.load(Ordering::SeqCst);
        assert!(
            asked >= 3,
            "challenge, resource and server metadata: {asked}"
        );
        assert_eq!(discover_once().await, first);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            asked,
            "answered from the cache"
        );
        http.forget_discovery();
        assert_eq!(discover_once().await, first);
        assert_eq!(hits.load(Ordering::SeqCst), 2 * asked, "asked again");
    }

    fn server(url: &str) -> ServerConfig {
        ServerConfig::from_url(url::Url::parse(url).unwrap(), ServerAuth::None)
    }

    #[test]
    fn a_legacy_issuer_is_taken_only_on_the_servers_own_origin() {
        let s = server("http://localhost:3000/mcp");
        let root = "http://localhost:3000/";
        assert!(legacy_issuer_allowed(
            &s,
            None,
            root,
            "http://localhost:3000/oauth"
        ));
        // Another origin: a mix-up, refused.
        assert!(!legacy_issuer_allowed(
            &s,
            None,
            root,
            "https://attacker.example/oauth"
        ));
        assert!(!legacy_issuer_allowed(
            &s,
            None,
            root,
            "http://localhost:3001/oauth"
        ));
        // Expected from protected resource metadata, not the legacy root.
        assert!(!legacy_issuer_allowed(
            &s,
            None,
            "http://localhost:3000/tenant",
            "http://localhost:3000/oauth"
        ));
        // The server points at resource metadata: the 2025-06 rules apply.
        let challenge = r#"Bearer resource_metadata="http://localhost:3000/.well-known/oauth-protected-resource""#;
        assert!(!legacy_issuer_allowed(
            &s,
            Some(challenge),
            root,
            "http://localhost:3000/oauth"
        ));
    }
}
