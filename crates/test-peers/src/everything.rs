//! `@modelcontextprotocol/server-everything`: the official server that
//! exercises every MCP feature (tools with images and structured content,
//! resources, prompts, long operations with progress, elicitation, sampling).

use crate::node_peer::{NodePeer, PeerSpec};

/// The "everything" server on loopback, streamable HTTP at
/// [`mcp_url`](Self::mcp_url), no authorization. Dropping it kills the
/// process.
pub struct EverythingServer {
    peer: NodePeer,
}

fn spec(extra_env: Vec<(String, String)>) -> PeerSpec {
    PeerSpec {
        name: "the MCP everything server",
        script: "everything.mjs",
        args: Vec::new(),
        env: |(mcp, _)| vec![("MCP_PORT".to_owned(), mcp.to_string())],
        ready: |(mcp, _)| {
            vec![format!(
                "MCP Streamable HTTP Server listening on port {mcp}"
            )]
        },
        extra_env,
    }
}

impl EverythingServer {
    pub async fn start() -> Self {
        Self::start_with_env(Vec::new()).await
    }

    /// With extra environment variables, which its `get-env` tool returns
    /// (a way to get a result of any size from a real server).
    pub async fn start_with_env(env: Vec<(String, String)>) -> Self {
        Self {
            peer: NodePeer::start(&spec(env)).await,
        }
    }

    pub fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.peer.ports().0)
    }

    pub fn output(&self) -> String {
        self.peer.output()
    }
}
