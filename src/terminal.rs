//! The terminal adapter: commands an admin runs on the bot's host, driving
//! the same core as the chat. Output is for people; failures are one line
//! on stderr (the log above it has the causes) and exit code 1.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::app;
use crate::config::Config;
use crate::gateway::{CallError, Gateway, Silent};
use crate::logging::chain;
use crate::store::Stores;

/// The vault namespace of the terminal's own logins. Telegram user ids
/// start at 1, so 0 never belongs to a chat user.
pub const TERMINAL_USER: u64 = 0;

/// `mcpgram tools <server-id>`: the server's tools, one per line.
pub async fn tools(config: Config, server_id: &str) -> ExitCode {
    let gateway = match gateway(config).await {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let Some(server) = gateway.find_server(server_id) else {
        let ids: Vec<&str> = gateway
            .config()
            .servers
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        eprintln!(
            "mcpgram: no server \"{server_id}\" in the config (servers: {})",
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        );
        return ExitCode::FAILURE;
    };
    let listed = gateway.list_tools(TERMINAL_USER, &server).await;
    gateway.shutdown().await;
    match listed {
        Ok(mut tools) => {
            tools.sort_by(|a, b| a.name.cmp(&b.name));
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{} ({}): {} tool(s)",
                server.name,
                server.id,
                tools.len()
            );
            for tool in &tools {
                let summary = tool
                    .description
                    .as_deref()
                    .or(tool.title.as_deref())
                    .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()));
                let _ = match summary {
                    Some(summary) => writeln!(out, "  {}  {}", tool.name, summary),
                    None => writeln!(out, "  {}", tool.name),
                };
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "mcpgram: {}: {}",
                server.id,
                failure(&error, server.is_oauth())
            );
            ExitCode::FAILURE
        }
    }
}

async fn gateway(config: Config) -> Result<Gateway, ExitCode> {
    let config = Arc::new(config);
    let vault = app::open_vault(&config).await.map_err(|error| {
        eprintln!("mcpgram: {}", chain(&error));
        ExitCode::FAILURE
    })?;
    let stores = Stores::with_flows_in_memory(vault);
    // The terminal's commands complete no browser flows; the address is
    // the configured one, as for the bot.
    let redirect = app::redirect_uri(&config, config.http.listen);
    Ok(Gateway::new(config, stores, redirect, Arc::new(Silent)))
}

/// One line for an admin: what failed, in the error's own terms; the log
/// line above it (at warn level) has the causes.
fn failure(error: &CallError, oauth: bool) -> String {
    let line = match error {
        CallError::NotAuthorized { .. } if oauth => {
            "this server needs a per-user sign-in, and the terminal has none (a terminal login is not built yet)".to_owned()
        }
        other => other.to_string(),
    };
    crate::logging::scrub(&line)
}
