//! A fast MCP server for throughput measurements: rmcp's own server (the
//! official Rust SDK) over streamable HTTP, stateless with JSON answers,
//! in the test process. Its tools do next to nothing, so what a load test
//! measures is the client side, not a Node.js event loop.

use std::net::SocketAddr;
use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

/// `sum {a, b}` answers "The sum of a and b is a+b."; `echo {text}` its text.
#[derive(Clone)]
struct Tools {
    list: Arc<Vec<Tool>>,
}

impl Tools {
    fn new() -> Self {
        let schema = |value: serde_json::Value| -> Arc<JsonObject> {
            Arc::new(value.as_object().cloned().expect("an object schema"))
        };
        let read_only = || ToolAnnotations::new().read_only(true);
        let sum = Tool::new(
            "sum",
            "Adds two numbers",
            schema(serde_json::json!({
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"]
            })),
        )
        .annotate(read_only());
        let echo = Tool::new(
            "echo",
            "Says the text back",
            schema(serde_json::json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"]
            })),
        )
        .annotate(read_only());
        Self {
            list: Arc::new(vec![sum, echo]),
        }
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.list.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        let text = match request.name.as_ref() {
            "sum" => {
                let number = |key: &str| arguments.get(key).and_then(|v| v.as_f64());
                let (Some(a), Some(b)) = (number("a"), number("b")) else {
                    return Err(ErrorData::invalid_params("a and b must be numbers", None));
                };
                format!("The sum of {a} and {b} is {}.", a + b)
            }
            "echo" => arguments
                .get("text")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool named {other}"),
                    None,
                ));
            }
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// The server, on a loopback port, until dropped.
pub struct FastServer {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl FastServer {
    pub async fn start() -> Self {
        let stop = CancellationToken::new();
        let mut config = StreamableHttpServerConfig::default();
        config.legacy_session_mode = false;
        config.json_response = true;
        config.sse_keep_alive = None;
        config.cancellation_token = stop.child_token();
        let tools = Tools::new();
        let service = StreamableHttpService::new(
            move || Ok(tools.clone()),
            Arc::new(NeverSessionManager::default()),
            config,
        );
        let router = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fast MCP server");
        let addr = listener.local_addr().expect("its address");
        let shutdown = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .expect("the fast MCP server runs");
        });
        Self { addr, stop }
    }

    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

impl Drop for FastServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
