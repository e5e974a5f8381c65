//! A tiny streamable-HTTP MCP server whose failures are scripted, for the
//! error paths no real server produces on demand (a given HTTP status, a
//! JSON-RPC error). It speaks just enough MCP: `initialize`, the
//! `initialized` notification, `tools/list` and `tools/call`.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the server does.
#[derive(Clone, Debug)]
pub enum Script {
    /// Every POST gets this status (and a short text body).
    Status(u16),
    /// Every POST gets 429 with this `Retry-After`.
    RateLimited(&'static str),
    /// Sessions open; `tools/call` answers with this JSON-RPC error.
    CallError { code: i64, message: &'static str },
}

pub struct ScriptedMcp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedMcp {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/mcp",
            post(move |body: axum::body::Bytes| {
                let script = script.clone();
                async move { answer(&script, &body) }
            })
            .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
            .delete(|| async { StatusCode::METHOD_NOT_ALLOWED }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

impl Drop for ScriptedMcp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(script: &Script, body: &[u8]) -> Response {
    match script {
        Script::Status(code) => {
            (StatusCode::from_u16(*code).unwrap(), "scripted failure").into_response()
        }
        Script::RateLimited(retry_after) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(retry_after));
            (StatusCode::TOO_MANY_REQUESTS, headers, "slow down").into_response()
        }
        Script::CallError { code, message } => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let Some(id) = request.get("id").cloned() else {
                return StatusCode::ACCEPTED.into_response();
            };
            let reply = match request["method"].as_str().unwrap_or_default() {
                "initialize" => json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": request["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "scripted", "version": "0.0.0"}
                }}),
                "tools/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
                    {"name": "echo", "inputSchema": {"type": "object"}}
                ]}}),
                _ => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                }
            };
            axum::Json(reply).into_response()
        }
    }
}
