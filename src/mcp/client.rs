//! mcpgram as an MCP client: who it says it is, what it supports, and how
//! it answers a server's requests.

use std::sync::Arc;

use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationCapability, ErrorData, FormElicitationCapability, Implementation,
    ProgressNotificationParam, ProtocolVersion, UrlElicitationCapability,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient};
use serde_json::{Map, Value};

use super::watch::{Hooks, Progress};

/// How a server's `elicitation/create` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Elicitation {
    /// Not offered: servers are told the client cannot ask its user.
    #[default]
    Unsupported,
    /// Accepted at once with the schema's defaults (SEP-1034): for
    /// unattended front ends that take what the server proposes.
    AcceptDefaults,
    /// Put to the user of the running call (forms and URLs), through the
    /// call's observer.
    Ask,
}

#[derive(Debug, Clone, Default)]
pub struct McpClient {
    pub elicitation: Elicitation,
    /// The session's slot for its running call; set per session.
    pub(crate) hooks: Option<Arc<Hooks>>,
}

impl McpClient {
    pub fn new(elicitation: Elicitation) -> Self {
        Self {
            elicitation,
            hooks: None,
        }
    }

    /// This client for one session, reporting to `hooks`.
    pub(crate) fn for_session(&self, hooks: Arc<Hooks>) -> Self {
        Self {
            elicitation: self.elicitation,
            hooks: Some(hooks),
        }
    }
}

impl ClientHandler for McpClient {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation = match self.elicitation {
            Elicitation::Unsupported => None,
            Elicitation::AcceptDefaults => {
                Some(ElicitationCapability::new().with_form(FormElicitationCapability::new()))
            }
            Elicitation::Ask => Some(
                ElicitationCapability::new()
                    .with_form(FormElicitationCapability::new())
                    .with_url(UrlElicitationCapability::new()),
            ),
        };
        // The handshake names the newest version that has one
        // (2025-11-25); 2026-07-28 has no `initialize` at all.
        ClientConfig::new(
            capabilities,
            Implementation::new("mcpgram", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(hooks) = &self.hooks {
            let update = Progress {
                progress: params.progress,
                total: params.total,
                message: params.message,
            };
            hooks.progress(update);
        }
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if self.elicitation == Elicitation::Ask {
            let answer = match &self.hooks {
                Some(hooks) => hooks.elicit(request).await,
                None => None,
            };
            // Asked outside any call: nobody to put the question to.
            return Ok(answer.unwrap_or_else(|| ElicitResult::new(ElicitationAction::Decline)));
        }
        match (self.elicitation, request) {
            (
                Elicitation::AcceptDefaults,
                ElicitRequestParams::FormElicitationParams {
                    requested_schema, ..
                },
            ) => {
                let schema = serde_json::to_value(&requested_schema).unwrap_or_default();
                Ok(ElicitResult::new(ElicitationAction::Accept)
                    .with_content(Value::Object(with_defaults(&schema, Map::new()))))
            }
            _ => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }
}

/// `content` with every field the user left out that the schema gives a
/// default for filled in (SEP-1034: the client applies defaults before
/// answering).
pub fn with_defaults(schema: &Value, mut content: Map<String, Value>) -> Map<String, Value> {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if let Some(default) = property.get("default")
                && !content.contains_key(name)
            {
                content.insert(name.clone(), default.clone());
            }
        }
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "Ann"},
                "count": {"type": "integer", "default": 3},
                "note": {"type": "string"}
            }
        });
        let mut given = Map::new();
        given.insert("name".into(), "Bob".into());
        let filled = with_defaults(&schema, given);
        assert_eq!(filled["name"], "Bob");
        assert_eq!(filled["count"], 3);
        assert!(!filled.contains_key("note"));
    }
}
