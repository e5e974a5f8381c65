//! `mcpgram probe <url>` and `check-config --probe`: what a server's
//! authorization looks like from here, before any user connects, with a
//! verdict an admin can act on.

use std::process::ExitCode;

use crate::config::{Config, ServerAuth, ServerConfig};
use crate::oauth::{Probe, Registration, probe};

/// Probes each server; exit 1 when any cannot be used as configured.
pub async fn servers(config: &Config, servers: &[std::sync::Arc<ServerConfig>]) -> ExitCode {
    let mut usable = true;
    for server in servers {
        usable &= one(config, server).await;
    }
    if usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints what was found about `server`; whether it can be used as
/// configured.
async fn one(config: &Config, server: &ServerConfig) -> bool {
    let url = crate::logging::scrub(server.url.as_str());
    println!("{} ({url}):", server.id);
    let found = match probe(config, server).await {
        Ok(found) => found,
        Err(error) => {
            println!(
                "  verdict: cannot tell: {}",
                crate::logging::scrub(&crate::logging::chain(&error).to_string())
            );
            return false;
        }
    };
    let oauth = matches!(server.auth, ServerAuth::OAuth(_));
    for line in describe(&found) {
        println!("  {line}");
    }
    let (usable, verdict) = verdict(&found, oauth, server.user_token.is_some());
    println!("  verdict: {verdict}");
    usable
}

fn describe(found: &Probe) -> Vec<String> {
    let mut lines = vec![if found.challenged {
        "asks for authorization (HTTP 401)".to_owned()
    } else {
        "answers without authorization".to_owned()
    }];
    if !found.discovered {
        return lines;
    }
    lines.push(if found.assumed_endpoints {
        "authorization server: none described; the 2025-03-26 default endpoints at the server's root are assumed".to_owned()
    } else {
        format!(
            "authorization server: {}",
            found.issuer.as_deref().unwrap_or("(no issuer named)")
        )
    });
    if let Some(endpoint) = &found.authorization_endpoint {
        lines.push(format!("authorization endpoint: {endpoint}"));
    }
    if let Some(endpoint) = &found.token_endpoint {
        lines.push(format!("token endpoint: {endpoint}"));
    }
    lines.push(format!(
        "client: {}",
        match found.registration {
            Some(Registration::Preregistered) => "pre-registered (client_id in the config)",
            Some(Registration::MetadataDocument) =>
                "the bot's client ID metadata document (SEP-991)",
            Some(Registration::MetadataDocumentNeedsHosting) => {
                "client ID metadata documents, which need http.public_url (hosted)"
            }
            Some(Registration::Dynamic) => "dynamic registration (RFC 7591)",
            Some(Registration::None) | None => "no way offered: configure a client_id",
        }
    ));
    lines.push(format!(
        "scopes offered: {}",
        if found.scopes.is_empty() {
            "none advertised".to_owned()
        } else {
            found.scopes.join(" ")
        }
    ));
    lines.push(format!(
        "PKCE methods: {}",
        if found.pkce_methods.is_empty() {
            "none advertised".to_owned()
        } else {
            found.pkce_methods.join(" ")
        }
    ));
    lines.push(format!(
        "token revocation: {}",
        found
            .revocation_endpoint
            .as_deref()
            .unwrap_or("not offered (/disconnect deletes tokens here only)")
    ));
    lines
}

/// Whether the server is usable as configured, and why (not).
fn verdict(found: &Probe, oauth: bool, personal_token: bool) -> (bool, String) {
    if !found.discovered {
        return match (found.challenged, oauth, personal_token) {
            (_, true, _) => (
                false,
                "no authorization server found: [mcp.servers.oauth] cannot work with it".to_owned(),
            ),
            (true, false, false) => (
                false,
                "it wants authorization but describes none: give it a header ([mcp.servers.headers] or user_token)".to_owned(),
            ),
            _ => (true, "usable as configured".to_owned()),
        };
    }
    if !oauth {
        return (
            true,
            "it supports OAuth; add [mcp.servers.oauth] for each user to connect their own account"
                .to_owned(),
        );
    }
    if matches!(
        found.registration,
        Some(Registration::None | Registration::MetadataDocumentNeedsHosting) | None
    ) {
        return (
            false,
            "users cannot connect: the bot has no way to get a client; configure client_id (or host the bot for metadata documents)".to_owned(),
        );
    }
    if !found.assumed_endpoints && !found.pkce_methods.iter().any(|m| m == "S256") {
        return (
            false,
            "the authorization server does not advertise PKCE S256; MCP requires clients to refuse such a server".to_owned(),
        );
    }
    (true, "ready: users can /connect".to_owned())
}
