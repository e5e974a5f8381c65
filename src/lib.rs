//! mcpgram: a Telegram bot that connects each Telegram user to their own
//! accounts on remote MCP servers and runs those servers' tools from chat.
//!
//! # Layout
//!
//! Data flows one way: adapters (`telegram`, `http`, `terminal`) →
//! `gateway` (the use cases) → (`oauth` | `mcp`) → `store` → `vault`.
//! Each adapter has one place where outcomes become its own words; the core
//! returns typed outcomes and errors that keep their causes for the log.
//!
//! - [`gateway`]: the application core. Start and complete a connect, list
//!   tools, resources and prompts, call a tool (watched: progress and the
//!   server's questions), consents, personal tokens, disconnect, status;
//!   the [`gateway::ChatNotifier`] port through which a finished flow
//!   reaches its chat; [`gateway::form`], a JSON-Schema object filled in
//!   one checked value at a time.
//! - [`oauth`]: authorization-code flows with PKCE on rmcp's `auth` module:
//!   flows kept as data and owned by who asked, registration reuse, the
//!   callback that completes a flow, the per-slot credentials rmcp refreshes.
//! - [`mcp`]: per-user MCP sessions over streamable HTTP (no lock across a
//!   network call, closed when idle), the transports for OAuth,
//!   static-header, personal-token and open servers, arguments checked
//!   against tools' schemas, the hooks a running call reports through, and
//!   the classification of rmcp's errors into [`mcp::McpError`].
//! - [`store`]: the storage ports (pending flows, credentials, client
//!   registrations, refresh locks, command guards, consents, personal
//!   tokens, the journal of updates being handled), their embedded
//!   implementations, and PostgreSQL for several replicas.
//! - [`vault`]: age-encrypted files, one per Telegram user, written
//!   atomically, and a journal of sealed records that come and go
//!   (pending flows).
//! - [`telegram`]: the chat adapter: the dptree schema, commands, endpoints,
//!   browsers, dialogues, running calls, rich results, the chat's wording,
//!   the notifier, and the webhook's journal (an update is recorded before
//!   it is acknowledged, so another replica answers it if this one dies).
//! - [`http`]: the browser adapter: the OAuth callback page and health
//!   checks.
//! - [`terminal`]: the admin's adapter (`mcpgram tools <server>`).
//! - [`app`]: wiring, running and graceful shutdown.
//! - [`config`]: the admin's TOML file, validated in one pass with every
//!   problem named by key; `${NAME}` secret references.
//! - [`metrics`]: counters, histograms and gauges for `/metrics`.
//! - [`net_guard`]: which addresses an untrusted server may resolve to.
//! - [`open_files`]: the open-files limit, raised at start-up (a warm
//!   session holds a connection of its own).
//! - [`secret`]: the redacting string type every token travels in.
//! - [`text`]: foreign text clipped and scrubbed for chats and pages.
//! - [`tls`]: the one TLS stack every HTTP client shares.
//! - [`logging`]: tracing setup that keeps secrets out of logs even at
//!   debug level; error chains for log lines.

pub mod app;
pub mod config;
pub mod gateway;
pub mod http;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod net_guard;
pub mod oauth;
pub mod open_files;
pub mod secret;
pub mod store;
pub mod telegram;
pub mod terminal;
pub mod text;
pub mod tls;
pub mod vault;
