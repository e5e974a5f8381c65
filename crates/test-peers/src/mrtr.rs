//! `tests/peers/mrtr-mcp.mjs`: an MCP server of protocol revision
//! 2026-07-28 only, written with the official TypeScript SDK v2
//! (`@modelcontextprotocol/server`), whose tool asks the user through a
//! multi-round-trip `input_required` result (SEP-2322).

use serde_json::Value;

use crate::node_peer::{NodePeer, PeerSpec};

/// The server on loopback, streamable HTTP at [`mcp_url`](Self::mcp_url),
/// stateless, 2026-07-28 only (no `initialize`), no authorization. Its one
/// tool, `book_table` (no arguments, no annotations), first answers
/// `input_required` with a form elicitation under the key `booking`
/// (`guests`: integer 1..12 titled "Guests"; `time`: "18:00" or "20:00")
/// and an opaque `requestState`; the retry carrying the answer and the
/// state unchanged completes with "Booked a table for G at T.", or "No
/// booking made." when declined, "Booking cancelled." when cancelled.
/// Dropping it kills the process.
pub struct MrtrServer {
    peer: NodePeer,
}

fn spec() -> PeerSpec {
    PeerSpec {
        name: "the MRTR MCP server",
        script: "mrtr-mcp.mjs",
        args: Vec::new(),
        env: |(mcp, _)| vec![("MCP_PORT".to_owned(), mcp.to_string())],
        ready: |(mcp, _)| vec![format!("MRTR MCP Server listening on port {mcp}")],
        extra_env: Vec::new(),
    }
}

impl MrtrServer {
    pub async fn start() -> Self {
        Self {
            peer: NodePeer::start(&spec()).await,
        }
    }

    pub fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.peer.ports().0)
    }

    /// What the server saw: `rounds`, one per `tools/call` of `book_table`
    /// as its handler got it (`requestState`, the echoed string or null;
    /// `inputResponses`, or null; `dropped`, the keys of responses the SDK
    /// dropped as malformed), `minted` (the states it handed out, in
    /// order) and `protocolVersions` (the `MCP-Protocol-Version` header of
    /// every POST, null when missing).
    pub async fn stats(&self) -> Value {
        reqwest::get(format!("http://127.0.0.1:{}/stats", self.peer.ports().0))
            .await
            .expect("stats answer")
            .json()
            .await
            .expect("stats are JSON")
    }

    pub fn output(&self) -> String {
        self.peer.output()
    }
}
