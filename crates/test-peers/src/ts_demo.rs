//! The TypeScript SDK's example server with its demo OAuth provider.

use crate::node_peer::{NodePeer, PeerSpec};

/// The TypeScript SDK's example server with its demo OAuth provider, on loopback.
///
/// `node -r tests/peers/bind-loopback.cjs .../simpleStreamableHttp.js --oauth`: MCP (streamable HTTP)
/// at [`mcp_url`](Self::mcp_url), its demo authorization server at [`auth_url`](Self::auth_url)
/// (dynamic client registration, PKCE S256, an `/authorize` that approves at once with a 302 to the
/// redirect URI, no refresh tokens). Both listen on 127.0.0.1 only. Every value is kept in the
/// process's memory, so each test should start its own server (registration is also rate-limited
/// per client IP). Dropping the value kills the process and reaps it.
pub struct TsDemoServer {
    peer: NodePeer,
}

const EXAMPLE: &str =
    "node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js";

fn spec(oauth: bool) -> PeerSpec {
    PeerSpec {
        name: "the MCP TypeScript SDK example server",
        script: EXAMPLE,
        args: oauth.then(|| "--oauth".to_owned()).into_iter().collect(),
        env: |(mcp, auth)| {
            vec![
                ("MCP_PORT".to_owned(), mcp.to_string()),
                ("MCP_AUTH_PORT".to_owned(), auth.to_string()),
            ]
        },
        ready: if oauth {
            |(mcp, auth)| {
                vec![
                    format!("MCP Streamable HTTP Server listening on port {mcp}"),
                    format!("OAuth Authorization Server listening on port {auth}"),
                ]
            }
        } else {
            |(mcp, _)| {
                vec![format!(
                    "MCP Streamable HTTP Server listening on port {mcp}"
                )]
            }
        },
        extra_env: Vec::new(),
    }
}

impl TsDemoServer {
    /// Starts the server with `--oauth` on free loopback ports.
    pub async fn start() -> TsDemoServer {
        Self {
            peer: NodePeer::start(&spec(true)).await,
        }
    }

    /// The same example server without `--oauth`: open to anyone, no
    /// authorization server.
    pub async fn start_open() -> TsDemoServer {
        Self {
            peer: NodePeer::start(&spec(false)).await,
        }
    }

    /// Stops this server and starts a fresh one on the same ports: the
    /// same URLs, but every client registration and token forgotten, as a
    /// restart of this in-memory server does.
    pub async fn restart(self) -> TsDemoServer {
        let ports = self.peer.ports();
        drop(self);
        Self::start_on(ports).await
    }

    /// A server with OAuth on these (MCP, authorization) ports, e.g. those
    /// of one that was stopped.
    pub async fn start_on(ports: (u16, u16)) -> TsDemoServer {
        Self {
            peer: NodePeer::start_on(&spec(true), ports).await,
        }
    }

    /// `http://localhost:PORT/mcp`, exactly as the server names itself as a protected resource.
    pub fn mcp_url(&self) -> String {
        format!("http://localhost:{}/mcp", self.mcp_port())
    }

    /// `http://localhost:AUTH_PORT` (the server's metadata spells its issuer with a trailing `/`).
    pub fn auth_url(&self) -> String {
        format!("http://localhost:{}", self.auth_port())
    }

    pub fn mcp_port(&self) -> u16 {
        self.peer.ports().0
    }

    pub fn auth_port(&self) -> u16 {
        self.peer.ports().1
    }

    /// The child's combined stdout/stderr so far (for failure messages).
    pub fn output(&self) -> String {
        self.peer.output()
    }
}
