//! mcpgram's integration tests, one module per component, in one test
//! binary: linking the bot's whole dependency tree once instead of once
//! per file keeps the suite quick to build.
//!
//! Run one component with e.g. `cargo test --test it e2e`.

mod support;

mod bot_behaviour;
mod call_failures;
mod cli;
mod e2e_connect_and_call;
mod flows;
mod hosted;
mod lifecycle;
mod mrtr;
mod oauth_callback;
mod oidc;
mod operations;
mod personal_tokens;
mod replica_chat;
mod replica_death;
mod replicas;
mod sessions;
mod tools_ux;
mod webhook;
