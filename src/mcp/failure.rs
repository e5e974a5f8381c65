//! Turning rmcp's layered errors into a [`McpError`].
//!
//! An rmcp failure is a chain (service error → transport wrapper →
//! streamable-HTTP error → reqwest → hyper → io or TLS) whose top-level
//! text names Rust types. The chain is walked by type, never by text, for
//! the facts that matter: no usable token, which HTTP status, did the name
//! resolve, was the connection refused, did TLS fail, did it time out.
//!
//! One exception, in one place: rmcp 3.11 types only 429 and 5xx statuses
//! ([`HttpStatusError`]); any other non-success status reaches us as
//! [`StreamableHttpError::UnexpectedServerResponse`] whose text rmcp
//! formats as `HTTP <status>: <body>`. That prefix is read there and
//! nowhere else.

use std::error::Error;
use std::io::ErrorKind;
use std::time::Duration;

use rmcp::service::{ClientInitializeError, ServiceError};
use rmcp::transport::auth::AuthError;
use rmcp::transport::streamable_http_client::StreamableHttpError;

use super::error::{BoxError, McpError};
use crate::net_guard::{GuardError, ResolveError};

type HttpError = StreamableHttpError<reqwest::Error>;

/// What the chain turned out to mean; the error itself is attached after.
enum Kind {
    /// With the challenge, when the server sent one.
    NotAuthorized(Option<String>),
    /// The scope required, and the challenge.
    InsufficientScope(Option<String>, Option<String>),
    NameNotResolved,
    Refused,
    Unreachable,
    Tls,
    Timeout,
    Status(u16, Option<String>),
    Protocol,
    Lost,
    Guard(GuardError),
    /// The token needed renewing and the renewal failed for a passing
    /// reason (the authorization server down, a 5xx, a timeout).
    RefreshFailed,
    Unknown,
}

/// Classifies a failed request on an initialized session. `limit` is the
/// operation's timeout, reported when rmcp's own timer fired.
pub fn from_service(error: ServiceError, limit: Duration) -> McpError {
    match error {
        ServiceError::McpError(data) => {
            let pages = if data.code.0 == super::error::URL_ELICITATION_REQUIRED {
                url_pages(data.data.as_ref())
            } else {
                Vec::new()
            };
            if pages.is_empty() {
                McpError::Rpc {
                    code: data.code.0,
                    message: data.message.into_owned(),
                }
            } else {
                McpError::UrlRequired { pages }
            }
        }
        ServiceError::Timeout { .. } => McpError::Timeout(limit),
        ServiceError::TransportClosed => McpError::ConnectionLost { source: None },
        error @ ServiceError::TransportSend(_) => {
            let kind = kind_of(&error);
            attach(kind, Box::new(error), limit)
        }
        other => McpError::Other {
            source: Box::new(other),
        },
    }
}

/// The pages of a `-32042` error's `data.elicitations` (URL mode only,
/// web pages only).
fn url_pages(data: Option<&serde_json::Value>) -> Vec<super::error::UrlPage> {
    let Some(list) = data
        .and_then(|d| d.get("elicitations"))
        .and_then(|e| e.as_array())
    else {
        return Vec::new();
    };
    list.iter()
        .filter(|e| e.get("mode").and_then(|m| m.as_str()).unwrap_or("url") == "url")
        .filter_map(|e| {
            let url = e.get("url")?.as_str()?;
            let web = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some());
            web.then(|| super::error::UrlPage {
                url: url.to_owned(),
                message: e
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                elicitation_id: e
                    .get("elicitationId")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .collect()
}

/// Classifies a failed `initialize` (opening a session).
pub fn from_initialize(error: ClientInitializeError, limit: Duration) -> McpError {
    match error {
        ClientInitializeError::JsonRpcError(data) => McpError::Rpc {
            code: data.code.0,
            message: data.message.into_owned(),
        },
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => {
            from_initialize(*fallback, limit)
        }
        ClientInitializeError::ConnectionClosed(_) | ClientInitializeError::Cancelled => {
            McpError::ConnectionLost {
                source: Some(Box::new(error)),
            }
        }
        ClientInitializeError::TransportError { error, .. } => {
            // The transport error is a field here, not a `source()`, so it
            // becomes the source itself.
            let kind = kind_of(error.error.as_ref());
            attach(kind, Box::new(error), limit)
        }
        other => McpError::Protocol {
            source: Box::new(other),
        },
    }
}

fn attach(kind: Kind, source: BoxError, limit: Duration) -> McpError {
    match kind {
        Kind::NotAuthorized(challenge) => McpError::NotAuthorized {
            challenge,
            source: Some(source),
        },
        Kind::InsufficientScope(required, challenge) => McpError::InsufficientScope {
            required,
            challenge,
            source,
        },
        Kind::NameNotResolved => McpError::NameNotResolved { source },
        Kind::Refused => McpError::ConnectionRefused { source },
        Kind::Unreachable => McpError::Unreachable { source },
        Kind::Tls => McpError::Tls { source },
        Kind::Timeout => McpError::Timeout(limit),
        Kind::Status(status, retry_after) => McpError::Status {
            status,
            retry_after,
            source,
        },
        Kind::Protocol => McpError::Protocol { source },
        Kind::Lost => McpError::ConnectionLost {
            source: Some(source),
        },
        Kind::Guard(guard) => McpError::Guard(guard),
        Kind::RefreshFailed => McpError::RefreshFailed { source },
        Kind::Unknown => McpError::Other { source },
    }
}

/// Walks the chain below `error` for the first fact that decides.
fn kind_of(error: &(dyn Error + 'static)) -> Kind {
    let mut current = Some(error);
    let mut connect = false;
    while let Some(level) = current {
        if let Some(http) = level.downcast_ref::<HttpError>() {
            match http_kind(http) {
                Some(kind) => return kind,
                // `Client(reqwest::Error)` holds its cause as a field.
                None => {
                    if let HttpError::Client(inner) = http {
                        return reqwest_kind(inner);
                    }
                }
            }
        }
        if let Some(auth) = level.downcast_ref::<AuthError>()
            && let Some(kind) = auth_kind(auth)
        {
            return kind;
        }
        if let Some(http) = level.downcast_ref::<reqwest::Error>() {
            if http.is_timeout() {
                return Kind::Timeout;
            }
            connect |= http.is_connect();
        }
        if let Some(kind) = leaf_kind(level) {
            return kind;
        }
        current = level.source();
    }
    if connect {
        Kind::Unreachable
    } else {
        Kind::Unknown
    }
}

fn http_kind(error: &HttpError) -> Option<Kind> {
    Some(match error {
        HttpError::AuthRequired(challenge) => {
            Kind::NotAuthorized(Some(challenge.www_authenticate_header.clone()))
        }
        HttpError::InsufficientScope(scope) => Kind::InsufficientScope(
            scope.get_required_scope().map(str::to_owned),
            Some(scope.www_authenticate_header.clone()),
        ),
        HttpError::HttpStatus(status) => Kind::Status(status.status, status.retry_after.clone()),
        HttpError::UnexpectedServerResponse(text) => match status_prefix(text) {
            Some(status) => Kind::Status(status, None),
            None => Kind::Protocol,
        },
        HttpError::SessionExpired
        | HttpError::SessionRecoveryTimeout
        | HttpError::ReinitializationFailed(_)
        | HttpError::TransportChannelClosed
        | HttpError::UnexpectedEndOfStream => Kind::Lost,
        HttpError::UnexpectedContentType(_)
        | HttpError::Deserialize(_)
        | HttpError::ResponseBodyTooLarge { .. }
        | HttpError::MissingSessionIdInResponse
        | HttpError::ServerDoesNotSupportSse
        | HttpError::ServerDoesNotSupportDeleteSession => Kind::Protocol,
        HttpError::ControlRequestTimeout => Kind::Timeout,
        HttpError::Auth(auth) => return auth_kind(auth),
        _ => return None,
    })
}

fn auth_kind(error: &AuthError) -> Option<Kind> {
    match error {
        AuthError::AuthorizationRequired
        | AuthError::TokenRefreshRejected(_)
        | AuthError::TokenExpired => Some(Kind::NotAuthorized(None)),
        AuthError::InsufficientScope { required_scope, .. } => {
            Some(Kind::InsufficientScope(Some(required_scope.clone()), None))
        }
        AuthError::HttpError(inner) => Some(reqwest_kind(inner)),
        // A refresh that failed for a transient reason keeps the tokens:
        // not a reason to send the user a new link.
        AuthError::TokenRefreshFailed(_) => Some(Kind::RefreshFailed),
        _ => None,
    }
}

fn reqwest_kind(error: &reqwest::Error) -> Kind {
    if error.is_timeout() {
        return Kind::Timeout;
    }
    let mut current = error.source();
    while let Some(level) = current {
        if let Some(kind) = leaf_kind(level) {
            return kind;
        }
        current = level.source();
    }
    if error.is_connect() {
        Kind::Unreachable
    } else if error.is_body() || error.is_decode() {
        Kind::Lost
    } else {
        Kind::Unknown
    }
}

/// The causes at the bottom of a network failure.
fn leaf_kind(error: &(dyn Error + 'static)) -> Option<Kind> {
    if let Some(guard) = error.downcast_ref::<GuardError>() {
        return Some(Kind::Guard(guard.clone()));
    }
    if error.is::<ResolveError>() {
        return Some(Kind::NameNotResolved);
    }
    if error.is::<rustls::Error>() {
        return Some(Kind::Tls);
    }
    let io = error.downcast_ref::<std::io::Error>()?;
    // An io::Error's own `source()` skips the error it wraps; look inside.
    if let Some(inner) = io.get_ref()
        && let Some(kind) = leaf_kind(inner)
    {
        return Some(kind);
    }
    Some(match io.kind() {
        ErrorKind::ConnectionRefused => Kind::Refused,
        ErrorKind::TimedOut => Kind::Timeout,
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::AddrNotAvailable => Kind::Unreachable,
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => Kind::Lost,
        _ => return None,
    })
}

/// `HTTP 404 Not Found: <body>` → 404 (see the module doc).
fn status_prefix(text: &str) -> Option<u16> {
    let digits = text.strip_prefix("HTTP ")?.get(..3)?;
    digits.parse().ok().filter(|code| (100..600).contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rmcps_own_status_prefix_is_read() {
        assert_eq!(status_prefix("HTTP 404 Not Found: nope"), Some(404));
        assert_eq!(status_prefix("HTTP 401 Unauthorized: "), Some(401));
        assert_eq!(status_prefix("upstream said HTTP 500"), None);
        assert_eq!(status_prefix("HTTP 9xx"), None);
    }

    #[test]
    fn a_json_rpc_error_keeps_code_and_message() {
        let error = ServiceError::McpError(rmcp::model::ErrorData::invalid_params(
            "name: expected string",
            None,
        ));
        assert!(matches!(
            from_service(error, Duration::from_secs(1)),
            McpError::Rpc { code: -32602, message } if message == "name: expected string"
        ));
    }

    /// A real reqwest error whose resolver failed, as for a host that does
    /// not exist, without asking any DNS server.
    #[tokio::test]
    async fn a_host_that_does_not_resolve_is_named_as_such() {
        #[derive(Debug)]
        struct NoSuchHost;
        impl reqwest::dns::Resolve for NoSuchHost {
            fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
                let host = name.as_str().to_owned();
                Box::pin(async move {
                    Err(Box::new(ResolveError {
                        host,
                        source: std::io::Error::other("Name or service not known"),
                    }) as _)
                })
            }
        }
        let client = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(NoSuchHost))
            .build()
            .unwrap();
        let error = client
            .get("http://no-such-host.invalid/mcp")
            .send()
            .await
            .unwrap_err();
        let wrapped = HttpError::Client(error);
        assert!(matches!(kind_of(&wrapped), Kind::NameNotResolved));
    }
}
