//! Turning rmcp's layered transport errors into what a user needs to know.
//!
//! An rmcp failure is a chain (service error → transport wrapper →
//! streamable-HTTP error → reqwest → io) whose top-level text names Rust
//! types. The chain is walked for the facts that matter: did the
//! connection fail, did it time out, which HTTP status came back.

use std::error::Error;

use rmcp::transport::streamable_http_client::{HttpStatusError, StreamableHttpError};

use super::McpError;
use crate::net_guard::GuardError;

/// Classifies any error of an MCP operation. `is_auth` is rmcp's own
/// verdict (a 401 with a challenge, or no usable token).
pub fn classify(error: &(dyn Error + 'static), is_auth: bool, oauth: bool) -> McpError {
    if is_auth {
        return McpError::NotConnected;
    }
    let mut status = None;
    let mut deepest = error.to_string();
    let mut current = Some(error);
    while let Some(level) = current {
        if let Some(guard) = level.downcast_ref::<GuardError>() {
            return McpError::Unreachable(guard.to_string());
        }
        if let Some(http) = level.downcast_ref::<reqwest::Error>() {
            if http.is_timeout() {
                return McpError::Unreachable("the request timed out".to_owned());
            }
            if http.is_connect() {
                let cause = root(level);
                return McpError::Unreachable(format!("cannot connect ({})", lowercase(&cause)));
            }
        }
        if let Some(http) = level.downcast_ref::<HttpStatusError>() {
            status = Some(http.status);
        }
        if let Some(StreamableHttpError::<reqwest::Error>::UnexpectedServerResponse(text)) =
            level.downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            status = status.or_else(|| http_status(text));
        }
        status = status.or_else(|| http_status(&level.to_string()));
        deepest = level.to_string();
        current = level.source();
    }
    match status {
        Some(401) if oauth => McpError::NotConnected,
        Some(code @ (401 | 403)) => McpError::Refused(code),
        Some(404) => McpError::Server("HTTP 404: is the server URL in the config right?".into()),
        Some(code) => McpError::Server(format!("HTTP {code}")),
        None => McpError::Unreachable(lowercase(&deepest)),
    }
}

fn root(error: &(dyn Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn lowercase(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Finds "HTTP 401" style status codes in an error text.
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("HTTP ")?;
    let digits: String = text[at + 5..].chars().take(3).collect();
    digits.parse().ok().filter(|code| (100..600).contains(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn Error + 'static>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn statuses_deep_in_the_chain_are_found() {
        let chain = Layer(
            "Send message error Transport [Worker<...>] error",
            Some(Box::new(Layer(
                "unexpected server response: HTTP 401 Unauthorized: ",
                None,
            ))),
        );
        assert!(matches!(
            classify(&chain, false, false),
            McpError::Refused(401)
        ));
        assert!(matches!(
            classify(&chain, false, true),
            McpError::NotConnected
        ));
        let chain = Layer(
            "x",
            Some(Box::new(Layer("HTTP 503 Service Unavailable", None))),
        );
        assert!(matches!(classify(&chain, false, false), McpError::Server(s) if s == "HTTP 503"));
    }

    #[test]
    fn rmcp_auth_verdict_wins() {
        let chain = Layer("anything", None);
        assert!(matches!(
            classify(&chain, true, true),
            McpError::NotConnected
        ));
    }

    #[test]
    fn unknown_failures_keep_the_deepest_message() {
        let chain = Layer(
            "Wrapper",
            Some(Box::new(Layer("Transport channel closed", None))),
        );
        assert!(
            matches!(classify(&chain, false, false), McpError::Unreachable(s) if s == "transport channel closed")
        );
    }
}
