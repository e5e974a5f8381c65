//! Why an MCP operation failed, classified from rmcp's typed errors, with
//! the original error kept as the source for the log. No words for users
//! here: each adapter has its own.

use std::time::Duration;

use crate::config::ServerConfig;
use crate::net_guard::GuardError;
use crate::oauth::OAuthError;
use crate::store::StoreError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// No usable token: never connected, expired beyond refresh, revoked,
    /// or the server refused it with a challenge.
    #[error("the user must authorize (again)")]
    NotAuthorized {
        /// The server's `WWW-Authenticate`, when it sent one: the next
        /// authorization starts from it.
        challenge: Option<String>,
        #[source]
        source: Option<BoxError>,
    },
    /// A 403 with `insufficient_scope`: the token lacks a permission.
    #[error("the token lacks scope {required:?}")]
    InsufficientScope {
        required: Option<String>,
        challenge: Option<String>,
        #[source]
        source: BoxError,
    },
    #[error("the server's host name does not resolve")]
    NameNotResolved {
        #[source]
        source: BoxError,
    },
    #[error("the server refused the connection")]
    ConnectionRefused {
        #[source]
        source: BoxError,
    },
    #[error("the server cannot be reached")]
    Unreachable {
        #[source]
        source: BoxError,
    },
    #[error("the TLS handshake with the server failed")]
    Tls {
        #[source]
        source: BoxError,
    },
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// An HTTP status the MCP transport could not use.
    #[error("the server answered HTTP {status}")]
    Status {
        status: u16,
        /// `Retry-After` as sent, for 429 and 503.
        retry_after: Option<String>,
        #[source]
        source: BoxError,
    },
    /// A JSON-RPC error object from the server; `message` is foreign text.
    #[error("the server answered with JSON-RPC error {code}")]
    Rpc { code: i32, message: String },
    /// Something that is not MCP came back (wrong content type, bad JSON,
    /// a body over the size limit, no common protocol version).
    #[error("the server's answer is not usable MCP")]
    Protocol {
        #[source]
        source: BoxError,
    },
    /// The connection or session went away under the request.
    #[error("the connection to the server was lost")]
    ConnectionLost {
        #[source]
        source: Option<BoxError>,
    },
    /// The access token needed renewing and the authorization server
    /// failed to renew it for a passing reason; the tokens are kept.
    #[error("the token could not be renewed just now")]
    RefreshFailed {
        #[source]
        source: BoxError,
    },
    #[error("refusing the server's address")]
    Guard(#[source] GuardError),
    #[error("the OAuth engine failed")]
    OAuth(#[from] OAuthError),
    #[error("the credential store failed")]
    Store(#[from] StoreError),
    /// The server does not list a tool of that name (or lists it with a
    /// definition clients must refuse), so it was not called.
    #[error("the server lists no usable tool named {name:?}")]
    UnknownTool { name: String },
    /// The arguments do not fit the tool's input schema, so the tool was
    /// not called; the problems are the schema validator's words.
    #[error("the arguments do not fit the input schema of {tool:?}")]
    InvalidArguments {
        tool: String,
        problems: Vec<super::Problem>,
    },
    /// The server needs the user to finish something in a browser first
    /// (a JSON-RPC `-32042` error, URL-mode elicitation's error path); the
    /// request may be sent again afterwards.
    #[error("the server asks the user to open a page first")]
    UrlRequired { pages: Vec<UrlPage> },
    /// The server takes each user's own token, and this user has given
    /// none (`/token`).
    #[error("the user has given no personal token for this server")]
    NoPersonalToken,
    /// The server refused the user's personal token (HTTP 401).
    #[error("the server refused the user's personal token")]
    PersonalTokenRefused {
        #[source]
        source: BoxError,
    },
    /// A static header from the config cannot be sent.
    #[error("the configured header {name} is not valid")]
    BadHeader { name: String },
    /// Anything else; the source says what.
    #[error("the MCP request failed")]
    Other {
        #[source]
        source: BoxError,
    },
}

/// A page the server asks the user to open; foreign text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPage {
    pub url: String,
    pub message: String,
    pub elicitation_id: String,
}

/// JSON-RPC's "URL elicitation required" (MCP 2025-11-25).
pub const URL_ELICITATION_REQUIRED: i32 = -32042;

/// JSON-RPC's "invalid params", which servers use for arguments that do
/// not match a tool's schema (and, some, for an unknown tool).
pub const INVALID_PARAMS: i32 = -32602;

impl McpError {
    /// A fixed word for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            McpError::NotAuthorized { .. } => "not_authorized",
            McpError::InsufficientScope { .. } => "insufficient_scope",
            McpError::NameNotResolved { .. }
            | McpError::ConnectionRefused { .. }
            | McpError::Unreachable { .. }
            | McpError::Tls { .. } => "unreachable",
            McpError::Timeout(_) => "timeout",
            McpError::Status { .. } => "http_status",
            McpError::Rpc { .. } => "rpc_error",
            McpError::UrlRequired { .. } => "url_required",
            McpError::Protocol { .. } => "protocol",
            McpError::ConnectionLost { .. } => "connection_lost",
            McpError::RefreshFailed { .. } => "refresh_failed",
            McpError::Guard(_) => "refused_address",
            McpError::OAuth(_) => "oauth",
            McpError::Store(_) => "store",
            McpError::UnknownTool { .. } => "unknown_tool",
            McpError::InvalidArguments { .. } => "invalid_arguments",
            McpError::NoPersonalToken | McpError::PersonalTokenRefused { .. } => "personal_token",
            McpError::BadHeader { .. } => "bad_header",
            McpError::Other { .. } => "other",
        }
    }

    /// Worth one more try on a fresh session: the old one may have died
    /// quietly (server restarted, idle connection closed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            McpError::ConnectionLost { .. } | McpError::ConnectionRefused { .. }
        )
    }

    /// The answer to `server/discover` of a server that may still speak
    /// the 2025 protocol: a client error other than an authorization
    /// demand or a rate limit, or something that is not a discovery result.
    pub fn may_be_an_older_generation(&self) -> bool {
        match self {
            McpError::Protocol { .. } => true,
            McpError::Status { status, .. } => {
                (400..500).contains(status) && !matches!(status, 401 | 403 | 429)
            }
            _ => false,
        }
    }

    /// Leaves the session usable (the server answered sensibly); anything
    /// else drops it so the next operation starts afresh.
    pub fn keeps_session(&self) -> bool {
        matches!(
            self,
            McpError::Rpc { .. }
                | McpError::UrlRequired { .. }
                | McpError::UnknownTool { .. }
                | McpError::InvalidArguments { .. }
                | McpError::RefreshFailed { .. }
        )
    }
}

impl McpError {
    /// A 401 without a challenge from an OAuth server still means the
    /// user's token is no good: they must authorize again.
    pub(crate) fn for_server(self, server: &ServerConfig) -> Self {
        match self {
            McpError::Status {
                status: 401,
                source,
                ..
            } if server.is_oauth() => McpError::NotAuthorized {
                challenge: None,
                source: Some(source),
            },
            McpError::Status {
                status: 401,
                source,
                ..
            } if server.user_token.is_some() => McpError::PersonalTokenRefused { source },
            McpError::NotAuthorized { source, .. } if server.user_token.is_some() => {
                McpError::PersonalTokenRefused {
                    source: source.unwrap_or_else(|| "HTTP 401".into()),
                }
            }
            other => other,
        }
    }
}

impl From<GuardError> for McpError {
    fn from(error: GuardError) -> Self {
        McpError::Guard(error)
    }
}
