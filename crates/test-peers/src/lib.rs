//! The outside world of mcpgram's integration tests, apart from Telegram:
//! third-party MCP and OAuth servers started on loopback from the npm
//! packages pinned in `tests/peers`, a minimal HTTP "browser", a real one
//! (Chromium over WebDriver), https fronts (for hosted mode, and an HTTP/2
//! one as a CDN serves an MCP server), and a throwaway PostgreSQL cluster.
//!
//! A crate of its own so it is compiled once, not once per test binary.

pub mod browser;
pub mod chromium;
mod everything;
mod fast;
pub mod form_browser;
pub mod h2_front;
mod mrtr;
mod node_peer;
mod oidc;
pub mod postgres;
pub mod reset_front;
pub mod round_robin;
pub mod tls_front;
mod ts_demo;

pub use chromium::{Browser, Chromedriver};
pub use everything::EverythingServer;
pub use fast::FastServer;
pub use h2_front::H2Front;
pub use mrtr::MrtrServer;
pub use oidc::OidcMcpServer;
pub use tls_front::TlsFront;
pub use ts_demo::TsDemoServer;
