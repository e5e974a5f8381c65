//! mcpgram: a Telegram bot that connects each Telegram user to their own
//! accounts on remote MCP servers and runs those servers' tools from chat.
//!
//! # Layout
//!
//! Data flows one way: `telegram` → (`oauth` | `mcp`) → `vault`. The HTTP
//! callback reaches a chat only through the [`notify::ChatNotifier`] port,
//! and nothing outside `telegram` knows Telegram exists.
//!
//! - [`config`]: the admin's TOML file, validated in one pass with every
//!   problem named by key; `${NAME}` secret references.
//! - [`secret`]: the redacting string type every token travels in.
//! - [`vault`]: age-encrypted storage, one file per Telegram user, written
//!   atomically.
//! - [`oauth`]: authorization-code flows with PKCE on top of rmcp's `auth`
//!   module: the pending-flow table (owner, expiry, single use), the
//!   vault-backed credential store, the client registration cache, and the
//!   callback that completes a flow.
//! - [`mcp`]: per-user MCP sessions over streamable HTTP, the transports for
//!   OAuth, static-header and open servers, and rendering of tool results.
//! - [`net_guard`]: which addresses an untrusted server may resolve to.
//! - [`telegram`]: commands, the dptree handler schema, message formatting
//!   and chunking, and the notifier the callback uses.
//! - [`notify`]: the port through which finished flows reach a chat.
//! - [`http`]: the axum router for the OAuth callback and health checks.
//! - [`app`]: wiring, running and graceful shutdown.
//! - [`text`]: clipping foreign text for chats and pages.
//! - [`logging`]: tracing setup that keeps secrets out of logs even at
//!   debug level.

pub mod app;
pub mod config;
pub mod http;
pub mod logging;
pub mod mcp;
pub mod net_guard;
pub mod notify;
pub mod oauth;
pub mod secret;
pub mod telegram;
pub mod text;
pub mod vault;
