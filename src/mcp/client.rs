//! mcpgram as an MCP client: who it says it is, what it supports, and how
//! it answers a server's requests.

use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationCapability, ErrorData, FormElicitationCapability, Implementation, ProtocolVersion,
};
use rmcp::service::{RequestContext, RoleClient};
use serde_json::{Map, Value};

/// How a server's `elicitation/create` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Elicitation {
    /// Not offered: servers are told the client cannot ask its user.
    #[default]
    Unsupported,
    /// Accepted at once with the schema's defaults (SEP-1034): for
    /// unattended front ends that take what the server proposes.
    AcceptDefaults,
}

#[derive(Debug, Clone, Default)]
pub struct McpClient {
    pub elicitation: Elicitation,
}

impl ClientHandler for McpClient {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        if self.elicitation != Elicitation::Unsupported {
            capabilities.elicitation =
                Some(ElicitationCapability::new().with_form(FormElicitationCapability::new()));
        }
        // The handshake names the newest version that has one
        // (2025-11-25); 2026-07-28 has no `initialize` at all.
        ClientConfig::new(
            capabilities,
            Implementation::new("mcpgram", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
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
