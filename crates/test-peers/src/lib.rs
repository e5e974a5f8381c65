//! The outside world of mcpgram's integration tests, apart from Telegram:
//! third-party MCP and OAuth servers started on loopback from the npm
//! packages pinned in `tests/peers`, and a minimal browser.
//!
//! A crate of its own so it is compiled once, not once per test binary.

pub mod browser;
mod ts_demo;

pub use ts_demo::TsDemoServer;
