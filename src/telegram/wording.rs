//! Every sentence the bot writes in a chat, in one place: typed outcomes
//! and errors from the core become words here and nowhere else.
//!
//! Rules: one sentence for a failure, never a Rust type name, a stack of
//! causes or a URL's query string; foreign text (a server's error message)
//! is clipped and scrubbed; each failure says what the user can do next.

use std::time::Duration;

use rmcp::model::Tool;

use super::commands::{Command, Problem, Verb};
use super::render::{self, Listing};
use crate::config::{Config, ServerConfig};
use crate::gateway::{
    Busy, CallError, ConnectError, ConnectOffer, ConnectionSummary, DisconnectError, Disconnected,
    INVALID_PARAMS, Intruder, OAuthError, Revocation, ServerStatus, Standing,
};
use crate::net_guard::GuardError;
use crate::oauth::CallbackError;
use crate::text::foreign;
use teloxide::utils::command::BotCommands;

/// How much of a server's own error text reaches a chat.
const FOREIGN_CHARS: usize = 300;

pub const STORAGE_TROUBLE: &str = "Something went wrong on my side (stored data could not be read or written); the bot's admin can see the details in the log.";

pub fn start(config: &Config) -> String {
    let first = config
        .servers
        .first()
        .map(|s| s.id.as_str())
        .unwrap_or("<server>");
    format!(
        "Hi! I connect you to your accounts on MCP servers and run their tools from this chat.\n\n\
         1. /servers shows what is available.\n\
         2. /connect {first} links your account (you approve in the browser).\n\
         3. /tools {first} lists the tools, /call {first} <tool> {{json}} runs one.\n\n\
         /help lists every command."
    )
}

pub fn help() -> String {
    format!(
        "{}\n\nExample: /call demo greet {{\"name\": \"Alice\"}}",
        Command::descriptions()
    )
}

pub const PRIVATE_BOT: &str = "Sorry, this bot is private.";
pub const COMMANDS_ONLY: &str = "I understand commands only. Send /help.";
pub const SEND_HELP: &str = "Send /help to see what I can do.";

pub fn still_working(busy: &Busy) -> String {
    format!(
        "Still working on your {}; I'll answer that first. Send your next command after it, or /cancel to stop it.",
        foreign(&busy.running, 80)
    )
}

/// A request whose replica died before it finished (another replica
/// says so). It is never run again on its own: a tool may not be safe to
/// run twice.
pub fn interrupted(command: Option<&str>) -> String {
    match command {
        Some(command) => format!(
            "The bot restarted before it finished your {}; please send it again.",
            foreign(command, 40)
        ),
        None => "The bot restarted before it finished your last request; please send it again."
            .to_owned(),
    }
}

pub const CANCEL_BUTTON: &str = "Cancel";

pub const FORGET_QUESTION: &str = "This deletes everything I keep for you: your connections (revoked at each server that allows it), your personal tokens and the tools you allowed. Delete it all?";
pub const FORGET_BUTTON: &str = "Delete everything";
pub const FORGET_KEPT: &str = "Nothing was deleted.";

pub fn forgotten(unrevoked: &[std::sync::Arc<ServerConfig>]) -> String {
    if unrevoked.is_empty() {
        return "Done: I keep nothing of yours any more.".to_owned();
    }
    format!(
        "Done: I keep nothing of yours any more. {} did not confirm revoking the bot's access; you can remove it in their own settings.",
        unrevoked
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The status message of a call that takes a while.
pub fn running(label: &str, progress: Option<&crate::gateway::Progress>) -> String {
    let mut text = format!("⏳ Running {label}…");
    let Some(progress) = progress else {
        return text;
    };
    match progress.total.filter(|total| *total > 0.0) {
        Some(total) => {
            let share = (progress.progress / total).clamp(0.0, 1.0);
            let filled = (share * 10.0).round() as usize;
            text.push_str(&format!(
                "\n{}{} {}% ({} of {})",
                "▓".repeat(filled),
                "░".repeat(10 - filled),
                (share * 100.0).round(),
                number(progress.progress),
                number(total)
            ));
        }
        None => text.push_str(&format!("\nProgress: {}", number(progress.progress))),
    }
    if let Some(message) = progress.message.as_deref().filter(|m| !m.trim().is_empty()) {
        text.push_str(&format!("\n{}", foreign(message, 200)));
    }
    text
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.1}")
    }
}

/// How a running call is named in its status: "echo on Everything".
pub fn call_label(server: &ServerConfig, tool: &str) -> String {
    format!("{} on {}", foreign(tool, 64), server.name)
}

pub fn call_cancelled(server: &ServerConfig, tool: &str) -> String {
    format!(
        "Stopped {}: {} was told to cancel it.",
        foreign(tool, 64),
        server.name
    )
}

pub const NOTHING_TO_CANCEL: &str = "Nothing of yours is running.";

pub const CANCELLING: &str = "Cancelling…";

pub fn unknown_command(command: &str) -> String {
    format!(
        "Unknown command {}. Send /help to see what I can do.",
        foreign(command, 40)
    )
}

fn usage(verb: Verb) -> &'static str {
    match verb {
        Verb::Connect => "Usage: /connect <server>",
        Verb::Token => "Usage: /token <server>",
        Verb::Tools => "Usage: /tools <server>",
        Verb::Resources => "Usage: /resources <server>",
        Verb::Prompts => "Usage: /prompts <server>",
        Verb::Disconnect => "Usage: /disconnect <server>",
        Verb::Call => "Usage: /call <server> <tool> {\"arg\": \"value\"}",
    }
}

fn server_list(config: &Config) -> String {
    if config.servers.is_empty() {
        return "No servers are configured.".to_owned();
    }
    let ids: Vec<&str> = config.servers.iter().map(|s| s.id.as_str()).collect();
    format!("Servers: {}.", ids.join(", "))
}

/// The one-line answer to a malformed command.
pub fn problem(problem: &Problem, config: &Config) -> String {
    match problem {
        Problem::Usage(verb) => format!("{}. {}", usage(*verb), server_list(config)),
        Problem::UnknownServer { typed, verb } => format!(
            "Unknown server \"{}\". {} {}",
            foreign(typed, 40),
            server_list(config),
            usage(*verb)
        ),
        Problem::MissingTool { server } => {
            format!("{}. See the tools with /tools {server}.", usage(Verb::Call))
        }
        Problem::BadJson { detail } => format!(
            "The arguments are not valid JSON ({}). Example: {{\"name\": \"Alice\"}}",
            foreign(detail, 120)
        ),
        Problem::NotAnObject => {
            "Tool arguments must be a JSON object, e.g. {\"name\": \"Alice\"}.".to_owned()
        }
    }
}

pub fn servers(statuses: &[ServerStatus], only_status: bool) -> String {
    if statuses.is_empty() {
        return "No servers are configured.".to_owned();
    }
    let lines: Vec<String> = statuses
        .iter()
        .map(|status| {
            let server = &status.server;
            let standing = match status.standing {
                Standing::NoSignIn => "no sign-in needed".to_owned(),
                Standing::Connected => match (&status.summary, only_status) {
                    (Some(summary), true) => connection_details(summary),
                    _ => "connected".to_owned(),
                },
                Standing::NotConnected => format!("not connected — /connect {}", server.id),
                Standing::Expired => format!("connection expired — /connect {}", server.id),
                Standing::Unreadable if server.user_token.is_some() => {
                    format!(
                        "unknown (stored data unreadable) — /token {} to renew",
                        server.id
                    )
                }
                Standing::Unreadable => {
                    format!(
                        "unknown (stored data unreadable) — /connect {} to renew",
                        server.id
                    )
                }
                Standing::TokenGiven => "your token is kept".to_owned(),
                Standing::NoToken => format!("no token given — /token {}", server.id),
            };
            format!("• {} ({}): {standing}", server.name, server.id)
        })
        .collect();
    let title = if only_status {
        "Your connections:"
    } else {
        "Servers:"
    };
    format!("{title}\n{}", lines.join("\n"))
}

/// "connected as granted by <issuer host>; scopes …; access token
/// renews in 4 minutes (refresh token held)".
fn connection_details(summary: &ConnectionSummary) -> String {
    let mut parts = vec!["connected".to_owned()];
    if let Some(host) = summary
        .issuer
        .as_deref()
        .and_then(|issuer| url::Url::parse(issuer).ok())
        .and_then(|url| url.host_str().map(str::to_owned))
    {
        parts[0] = format!("connected via {}", foreign(&host, 60));
    }
    parts.push(if summary.scopes.is_empty() {
        "scopes: the server's default".to_owned()
    } else {
        format!("scopes: {}", foreign(&summary.scopes.join(" "), 200))
    });
    let expiry = match (summary.expires_in, summary.refreshable) {
        (Some(left), true) if left.is_zero() => {
            "access token expired; renews on next use".to_owned()
        }
        (Some(left), true) => format!("access token renews in {}", in_words(left)),
        (Some(left), false) if left.is_zero() => {
            "access token expired; connect again to renew".to_owned()
        }
        (Some(left), false) => format!("access token expires in {}", in_words(left)),
        (None, _) => "access token with no stated expiry".to_owned(),
    };
    parts.push(expiry);
    parts.push(
        if summary.refreshable {
            "refresh token held"
        } else {
            "no refresh token"
        }
        .to_owned(),
    );
    parts.join("; ")
}

/// Why a connect link is being offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferReason {
    /// The user asked with /connect.
    Asked,
    /// A command needed an authorization the user does not have (never
    /// connected, or the connection expired); it runs once they have.
    NotConnected,
    /// A command needs more scopes than were granted; it runs again once
    /// they are.
    StepUp { scopes: Vec<String> },
}

pub fn connect_offer(offer: &ConnectOffer, reason: &OfferReason) -> String {
    let name = &offer.server.name;
    let intro = match (reason, offer.before) {
        (OfferReason::NotConnected, Standing::Expired) => format!(
            "Your {name} connection has expired. Connect again and your command will run right after.\n\n"
        ),
        (OfferReason::NotConnected, _) => format!(
            "You are not connected to {name}. Connect and your command will run right after.\n\n"
        ),
        (OfferReason::StepUp { scopes }, _) => format!(
            "{name} needs more permission ({}). Approve it and your command will run again.\n\n",
            foreign(&scopes.join(" "), 200)
        ),
        (OfferReason::Asked, Standing::Connected) => format!(
            "You are already connected to {name}. The link below connects again (for example with another account).\n\n"
        ),
        (OfferReason::Asked, Standing::Unreadable) => format!(
            "Your stored connection to {name} could not be read; connecting again replaces it.\n\n"
        ),
        (OfferReason::Asked, _) => String::new(),
    };
    format!(
        "{intro}Connect your {name} account: open the link below and approve access. It works once and expires in {}.",
        in_words(offer.expires_in)
    )
}

pub fn connect_button(server: &ServerConfig) -> String {
    format!("Connect {}", server.name)
}

pub const SENT_PRIVATELY: &str = "I've sent you a private message with the link.";
pub const START_PRIVATE_CHAT: &str =
    "Start a private chat with me first; I'll send the link there.";
pub const START_PRIVATE_CHAT_BUTTON: &str = "Open a private chat";
pub const OPEN_PRIVATE_CHAT: &str = "Open a private chat with me and send /connect there.";

pub fn connect_not_started(server: &ServerConfig, error: &ConnectError) -> String {
    let name = &server.name;
    match error {
        ConnectError::NoSignIn => no_sign_in(server),
        ConnectError::TooFast(wait) => format!(
            "You asked for connect links too often; try again in {}.",
            in_words(*wait + Duration::from_secs(1))
        ),
        ConnectError::OAuth(OAuthError::TooManyFlows(max)) => {
            format!("You already have {max} connect links waiting; use or let them expire first.")
        }
        ConnectError::OAuth(error) => format!(
            "Cannot connect to {name} right now: {}.",
            oauth_reason(error)
        ),
    }
}

/// A command whose server kept asking for more scopes after several
/// authorizations.
pub fn step_up_exhausted(server: &ServerConfig, required: Option<&str>) -> String {
    format!(
        "{} still needs more permission{} after {} authorizations, so I stopped asking. Your account may not be allowed it; ask the server's admin.",
        server.name,
        required
            .map(|scope| format!(" ({})", foreign(scope, 120)))
            .unwrap_or_default(),
        crate::gateway::MAX_STEP_UPS
    )
}

pub fn no_sign_in(server: &ServerConfig) -> String {
    if server.user_token.is_some() {
        return format!(
            "{} takes your own token instead of a sign-in; send /token {} to give it.",
            server.name, server.id
        );
    }
    format!(
        "{} needs no sign-in; try /tools {}.",
        server.name, server.id
    )
}

fn oauth_reason(error: &OAuthError) -> String {
    match error {
        OAuthError::NotOAuthServer | OAuthError::NoMetadata => {
            "the server does not offer OAuth sign-in (ask the bot's admin to check its config)"
                .to_owned()
        }
        OAuthError::Discovery(_) => {
            "its sign-in details could not be read from the server".to_owned()
        }
        OAuthError::Timeout(limit) => format!(
            "its authorization server did not answer within {} s",
            limit.as_secs()
        ),
        OAuthError::Registration(_) => {
            "its authorization server refused to register this bot as a client".to_owned()
        }
        OAuthError::Authorize(_) => "the sign-in request could not be prepared".to_owned(),
        OAuthError::Exchange(_) => {
            "the authorization server did not accept the approval".to_owned()
        }
        OAuthError::IssuerMismatch(_) => {
            "the approval came from a different authorization server than expected".to_owned()
        }
        OAuthError::Guard(guard) => guard_reason(guard).to_owned(),
        OAuthError::Store(_) => "stored data could not be read or written".to_owned(),
        OAuthError::TooManyFlows(max) => format!("{max} connect links are already waiting"),
        OAuthError::Client(_) => "the bot could not set up its connection".to_owned(),
        OAuthError::Enterprise(_) => {
            "the organisation's identity provider or the server's authorization server refused the bot's identity (ask the bot's admin)".to_owned()
        }
    }
}

fn guard_reason(error: &GuardError) -> &'static str {
    match error {
        GuardError::Forbidden { .. } => {
            "its address is on a private network, which this bot does not contact (ask the bot's admin)"
        }
        GuardError::NoHost => "its configured address has no host (ask the bot's admin)",
    }
}

pub fn disconnected(server: &ServerConfig, outcome: Disconnected) -> String {
    match outcome {
        Disconnected::Removed(Revocation::Revoked) => format!(
            "Disconnected from {}: the server revoked the bot's access and your tokens are deleted.",
            server.name
        ),
        Disconnected::Removed(Revocation::NotSupported) => format!(
            "Disconnected from {0}: your tokens are deleted here. {0} offers no way for the bot to revoke them, so they stay valid there until they expire; you can remove the bot's access in {0}'s own settings.",
            server.name
        ),
        Disconnected::Removed(Revocation::Failed) => format!(
            "Disconnected from {0}: your tokens are deleted here, but {0} did not confirm revoking them; you can remove the bot's access in {0}'s own settings.",
            server.name
        ),
        Disconnected::TokenRemoved => format!(
            "Your token for {0} is deleted here. The bot cannot revoke it; if you no longer need it, revoke it in {0}'s own settings.",
            server.name
        ),
        Disconnected::WasNotConnected => format!("You were not connected to {}.", server.name),
    }
}

pub fn disconnect_failed(server: &ServerConfig, error: &DisconnectError) -> String {
    match error {
        DisconnectError::NoSignIn => format!(
            "{} does not use per-user sign-in; there is nothing to disconnect.",
            server.name
        ),
        DisconnectError::Store(_) => STORAGE_TROUBLE.to_owned(),
    }
}

pub const PREVIOUS_PAGE: &str = "◀ Previous";
pub const NEXT_PAGE: &str = "Next ▶";

/// The command of a browser, without its slash.
pub fn listing_command(listing: Listing) -> &'static str {
    match listing {
        Listing::Tools => "tools",
        Listing::Resources => "resources",
        Listing::Prompts => "prompts",
    }
}

pub fn gone(server: &ServerConfig, listing: Listing) -> String {
    let what = match listing {
        Listing::Tools => "tool",
        Listing::Resources => "resource",
        Listing::Prompts => "prompt",
    };
    format!(
        "{} no longer offers that {what}; /{} {} shows the current list.",
        server.name,
        listing_command(listing),
        server.id
    )
}

/// How a prompt being fetched is named in its status.
pub fn prompt_label(server: &ServerConfig, name: &str) -> String {
    format!("the prompt {} of {}", foreign(name, 64), server.name)
}

pub fn prompt_intro(server: &ServerConfig, name: &str) -> String {
    format!(
        "Filling in the prompt {} of {}.",
        foreign(name, 64),
        server.name
    )
}

pub fn tools(server: &ServerConfig, tools: &[Tool]) -> String {
    format!("Tools of {}:\n{}", server.name, render::tool_list(tools))
}

/// One sentence for a failed MCP operation.
pub fn call_failed(server: &ServerConfig, error: &CallError) -> String {
    let name = &server.name;
    match error {
        CallError::NotAuthorized { .. } if server.is_oauth() => format!(
            "Your {name} connection is no longer valid; send /connect {} to connect again.",
            server.id
        ),
        CallError::NotAuthorized { .. } => credentials_refused(server, None),
        CallError::InsufficientScope { required, .. } => format!(
            "{name} refused: your connection lacks the permission this needs{}. Send /connect {} to grant it.",
            required
                .as_deref()
                .map(|scope| format!(" ({})", foreign(scope, 80)))
                .unwrap_or_default(),
            server.id
        ),
        CallError::NameNotResolved { .. } => {
            format!("{name} cannot be reached: its host name does not resolve.")
        }
        CallError::ConnectionRefused { .. } => {
            format!("{name} cannot be reached: nothing answers at its address (is it running?).")
        }
        CallError::Unreachable { .. } => {
            format!(
                "{name} cannot be reached right now because of a network error; try again later."
            )
        }
        CallError::Tls { .. } => format!(
            "{name} cannot be reached securely: the TLS handshake failed (is its certificate valid?)."
        ),
        CallError::Timeout(limit) => {
            format!("{name} did not answer within {} s.", limit.as_secs())
        }
        CallError::Status {
            status: status @ (401 | 403),
            ..
        } => credentials_refused(server, Some(*status)),
        CallError::Status { status: 404, .. } => format!(
            "{name} answered HTTP 404 (not found): the server's address in the bot's config may be wrong."
        ),
        CallError::Status {
            status: 429,
            retry_after,
            ..
        } => format!(
            "{name} is limiting how often it may be asked; try again {}.",
            retry_after
                .as_deref()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|secs| format!("in {}", in_words(Duration::from_secs(secs))))
                .unwrap_or_else(|| "later".to_owned())
        ),
        CallError::Status { status, .. } if *status >= 500 => {
            format!("{name} had an internal error (HTTP {status}); try again later.")
        }
        CallError::Status { status, .. } => {
            format!("{name} refused the request (HTTP {status}).")
        }
        CallError::Rpc { code, message } if *code == INVALID_PARAMS => format!(
            "{name} did not accept the request: {}.",
            foreign(message, FOREIGN_CHARS).trim_end_matches('.')
        ),
        CallError::Rpc { message, .. } => format!(
            "{name} answered with an error: {}.",
            foreign(message, FOREIGN_CHARS).trim_end_matches('.')
        ),
        CallError::Protocol { .. } => format!(
            "{name} sent an answer this bot cannot read (not valid MCP); the bot's admin can see the details in the log."
        ),
        CallError::ConnectionLost { .. } => {
            format!("The connection to {name} was lost; please try again.")
        }
        CallError::Guard(guard) => format!("{name} cannot be used: {}.", guard_reason(guard)),
        CallError::RefreshFailed { .. } => format!(
            "{name}'s authorization server could not renew your access just now; your connection is kept, so try again in a moment."
        ),
        CallError::OAuth(error) => {
            format!("{name} cannot be used right now: {}.", oauth_reason(error))
        }
        CallError::Store(_) => STORAGE_TROUBLE.to_owned(),
        CallError::UnknownTool { name: tool } => format!(
            "{name} has no usable tool named {}; /tools {} lists the ones it has.",
            foreign(tool, 64),
            server.id
        ),
        CallError::InvalidArguments { tool, problems } => format!(
            "{} was not called: its arguments do not fit {name}'s description of them.\n{}\nTap the tool in /tools {} to see its parameters.",
            foreign(tool, 64),
            problems
                .iter()
                .map(|problem| format!("• {}", foreign(&problem.to_string(), 200)))
                .collect::<Vec<_>>()
                .join("\n"),
            server.id
        ),
        CallError::UrlRequired { pages } => format!(
            "{name} needs you to finish something on a web page first{}; then try again.",
            pages
                .first()
                .map(|page| format!(
                    " ({}): {}",
                    foreign(&page.message, 200).trim_end_matches('.'),
                    page.url
                ))
                .unwrap_or_default()
        ),
        CallError::NoPersonalToken => format!(
            "{name} needs your own token; send /token {} to give it.",
            server.id
        ),
        CallError::PersonalTokenRefused { .. } => format!(
            "{name} refused your token; send /token {} to give a new one.",
            server.id
        ),
        CallError::BadHeader { .. } => format!(
            "{name} is misconfigured in this bot (a header value is invalid); ask the bot's admin."
        ),
        CallError::Other { .. } => {
            format!("The request to {name} failed; please try again later.")
        }
    }
}

fn credentials_refused(server: &ServerConfig, status: Option<u16>) -> String {
    format!(
        "{} refused the bot's credentials{}; ask the bot's admin to check its config.",
        server.name,
        status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
    )
}

pub fn link_misused(server: Option<&ServerConfig>, server_id: &str, by: &Intruder) -> String {
    let name = server.map_or(server_id, |s| s.name.as_str());
    let who = match by {
        Intruder::TelegramUser { user_id, name } => match name {
            Some(name) => format!("Telegram user {} (id {user_id})", foreign(name, 40)),
            None => format!("Telegram user id {user_id}"),
        },
        Intruder::OtherBrowser => "A browser other than yours".to_owned(),
    };
    format!(
        "{who} tried to use your link to connect {name}. It was not used: nothing of theirs is connected to your chat. If that was you on another device, open the link from this chat there."
    )
}

pub fn link_expired(server: Option<&ServerConfig>, server_id: &str) -> String {
    let name = server.map_or(server_id, |s| s.name.as_str());
    format!("Your link to connect {name} expired unused. Tap below for a new one.")
}

pub const NEW_LINK_BUTTON: &str = "New link";

pub fn connected(server: &ServerConfig, resuming: bool) -> String {
    if resuming {
        format!("Connected to {}. Running your command now…", server.name)
    } else {
        format!("Connected to {}. Try /tools {}.", server.name, server.id)
    }
}

/// A flow found by its callback that did not connect. `server` is `None`
/// when the server left the config in the meantime.
pub fn connect_failed(
    server: Option<&ServerConfig>,
    server_id: &str,
    error: &CallbackError,
) -> String {
    let name = server.map_or(server_id, |s| s.name.as_str());
    format!(
        "Connecting to {name} failed: {}. Send /connect {server_id} to try again.",
        callback_reason(error)
    )
}

/// Why a callback failed, as a clause.
fn callback_reason(error: &CallbackError) -> String {
    match error {
        CallbackError::MissingState => "the link is incomplete".to_owned(),
        CallbackError::UnknownState => {
            "the link was already used, replaced by a newer one, or never issued".to_owned()
        }
        CallbackError::Expired { .. } => "the link expired".to_owned(),
        CallbackError::Denied {
            error, description, ..
        } => match description {
            Some(description) => format!(
                "the authorization server refused: {} ({})",
                foreign(error, 100),
                foreign(description, 200)
            ),
            None => format!("the authorization server refused: {}", foreign(error, 100)),
        },
        CallbackError::MissingCode { .. } => "the authorization server sent no code".to_owned(),
        CallbackError::WrongBrowser { .. } => {
            "the link was finished in another browser than the one it was opened in".to_owned()
        }
        CallbackError::UnknownServer { .. } => "the server is no longer configured".to_owned(),
        CallbackError::Exchange { source, .. } => oauth_reason(source),
        CallbackError::Store { .. } => "the bot could not store the tokens".to_owned(),
    }
}

/// "10 minutes", "1 hour", "45 seconds".
pub fn in_words(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = match secs {
        0..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        _ => (secs / 3600, "hour"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

// Dialogues: guided calls and a server's questions.

pub const DECLINE_BUTTON: &str = "Decline";
pub const OPEN_PAGE_BUTTON: &str = "Open the page";
pub const SEND_BUTTON: &str = "Send";
pub const RUN_BUTTON: &str = "Run";
pub const YES: &str = "Yes";
pub const NO: &str = "No";
pub const DONE_BUTTON: &str = "Done";
pub const USE_DEFAULT_BUTTON: &str = "Use default";
pub const SKIP_BUTTON: &str = "Skip";
pub const SKIP_REST_BUTTON: &str = "Skip the rest";
pub const RUN_TOOL_BUTTON: &str = "Run it…";
pub const GET_PROMPT_BUTTON: &str = "Get it";
pub const ALWAYS_ALLOW_BUTTON: &str = "Always allow";
pub const CONSENTS: &str =
    "Tools you allowed to run without asking first (tap one to be asked again):";
pub const NO_CONSENTS: &str = "Every tool that may change things will ask you first again.";

pub fn ask_again_button(server_id: &str, tool: &str) -> String {
    format!("Ask again: {} ({})", crate::text::clip(tool, 40), server_id)
}

pub fn will_ask_again(tool: &str) -> String {
    format!("I'll ask before {} runs.", crate::text::clip(tool, 60))
}
pub const CONFIRM_PRIVATELY: &str =
    "This tool may change things, so I've asked you in our private chat to confirm it first.";

/// Asked before a call of a tool that may change things.
pub fn consent_intro(server: &ServerConfig, tool: &str) -> String {
    format!(
        "{} may change things on {} (its server says so).",
        foreign(tool, 64),
        server.name
    )
}

pub fn elicit_intro(server: &ServerConfig, message: &str) -> String {
    format!("{} asks: {}", server.name, foreign_block(message, 600))
}

pub fn guided_intro(server: &ServerConfig, tool: &str) -> String {
    format!("Calling {}.", call_label(server, tool))
}

/// The open question of a dialogue, or its last step.
pub fn dialogue_question(dialogue: &super::dialogue::Dialogue) -> String {
    use super::dialogue::{Body, Purpose};
    use crate::gateway::form::Kind;
    let form = match &dialogue.body {
        Body::Form(form) => form,
        Body::Url { .. } | Body::Token => return dialogue.intro.clone(),
    };
    let Some(field) = form.current() else {
        let values = serde_json::Value::Object(form.values().clone());
        let shown = crate::text::clip(&values.to_string(), 1500);
        let problems = form.problems();
        return match (&dialogue.purpose, problems.is_empty()) {
            (Purpose::Token, _) => dialogue.intro.clone(),
            (_, false) => format!(
                "{}\n\nThese answers do not fit together:\n{}",
                dialogue.intro,
                problems
                    .iter()
                    .map(|p| format!("• {}", foreign(p, 200)))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            (Purpose::Elicit(_), true) if form.is_empty() => {
                format!("{}\n\nAnswer {}?", dialogue.intro, dialogue.server.name)
            }
            (Purpose::Elicit(_), true) => format!(
                "{}\n\nYour answers: {shown}\n\nSend them to {}?",
                dialogue.intro, dialogue.server.name
            ),
            (Purpose::Prompt { name }, true) => format!(
                "Get the prompt {} of {} with {shown}?",
                foreign(name, 64),
                dialogue.server.name
            ),
            (Purpose::Call { tool, consent }, true) => {
                let label = call_label(&dialogue.server, tool);
                let run = if form.values().is_empty() {
                    format!("Run {label}?")
                } else {
                    format!("Run {label} with {shown}?")
                };
                if *consent {
                    format!("{}\n\n{run}", dialogue.intro)
                } else {
                    run
                }
            }
        };
    };
    let (number, of) = form.position();
    let name = match &field.title {
        Some(title) => format!("{} ({})", foreign(title, 60), foreign(&field.name, 40)),
        None => foreign(&field.name, 60),
    };
    let mut text = format!("{}\n\n{number}/{of} · {name}", dialogue.intro);
    if let Some(description) = &field.description {
        text.push_str(&format!(" — {}", foreign(description, 300)));
    }
    let mut facts = Vec::new();
    if !field.required {
        facts.push("optional".to_owned());
    }
    if let Some(format) = &field.format {
        facts.push(format!("format {}", foreign(format, 30)));
    }
    if let Some(default) = &field.default {
        facts.push(format!("default {}", foreign(&default.to_string(), 60)));
    }
    if !facts.is_empty() {
        text.push_str(&format!("\n({})", facts.join(", ")));
    }
    let how = match &field.kind {
        Kind::Text => "Reply with the text.",
        Kind::Integer => "Reply with a whole number.",
        Kind::Number => "Reply with a number.",
        Kind::Boolean => "Tap Yes or No.",
        Kind::Choice(_) => "Tap one.",
        Kind::Several(_) => "Tap each one you want, then Done.",
        Kind::Json => "Reply with a JSON value.",
    };
    text.push('\n');
    text.push_str(how);
    text
}

/// A URL-mode elicitation, as HTML: the whole URL, and its host in bold
/// so a look-alike domain stands out.
pub fn url_question(intro: &str, url: &str, host: &str) -> String {
    use teloxide::utils::html;
    format!(
        "{}\n\nThe page: {}\nIt is on <b>{}</b>. Nothing opens until you tap the button.",
        html::escape(intro),
        html::escape(url),
        html::escape(host)
    )
}

pub fn open_host_button(host: &str) -> String {
    format!("Open {}", crate::text::clip(host, 40))
}

pub fn answer_refused(problems: &[String]) -> String {
    format!(
        "That does not fit: {}. Try again.",
        problems
            .iter()
            .map(|p| foreign(p, 200).trim_end_matches('.').to_owned())
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// Shown under an answered question.
pub fn answered(value: &str) -> String {
    format!("✔ {}", crate::text::clip(value, 200))
}

pub const SKIPPED: &str = "✔ (skipped)";
pub const TOKEN_RECEIVED: &str = "✔ Received; your message with it is deleted.";

pub fn token_question(server: &ServerConfig) -> String {
    format!(
        "Send me your token for {} as your next message. I'll delete your message as soon as I have it and keep the token encrypted, for you alone. /cancel stops.",
        server.name
    )
}

pub fn token_saved(server: &ServerConfig) -> String {
    format!(
        "Your token for {} is saved; /tools {} uses it. /disconnect {} deletes it.",
        server.name, server.id, server.id
    )
}

pub fn no_personal_token(server: &ServerConfig) -> String {
    format!("{} takes no personal token.", server.name)
}

pub const TOKEN_IN_PRIVATE: &str =
    "Send /token in our private chat only: never paste a token into a group.";

pub const TOKEN_NOT_DELETED: &str =
    "I could not delete your message with the token; please delete it yourself.";
pub const ANSWERS_SENT: &str = "✔ Sent.";
pub const DECLINED: &str = "✖ Declined.";
pub const LEFT: &str = "✖ Cancelled.";
pub const QUESTION_EXPIRED: &str = "✖ This question expired.";
pub const STALE_BUTTON: &str = "This is no longer open.";
pub const QUESTION_OPEN: &str =
    "A server is waiting for your answer to its question first; answer it or send /cancel.";

pub fn retry_after_page(server: &ServerConfig, tool: &str) -> String {
    format!(
        "When you have finished on that page, run {} again.",
        call_label(server, tool)
    )
}

pub fn page_not_opened(server: &ServerConfig) -> String {
    format!("Not run: {} needs that page first.", server.name)
}

pub fn page_opened(host: &str) -> String {
    format!(
        "✔ You agreed to open the page on {}; tap the button when you are ready.",
        crate::text::clip(host, 60)
    )
}

/// Foreign text that may keep its line breaks.
fn foreign_block(text: &str, limit: usize) -> String {
    let scrubbed = crate::logging::scrub(text);
    let mut chars = scrubbed.chars().filter(|c| *c == '\n' || !c.is_control());
    let mut out: String = chars.by_ref().take(limit).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_words() {
        assert_eq!(in_words(Duration::from_secs(600)), "10 minutes");
        assert_eq!(in_words(Duration::from_secs(1)), "1 second");
        assert_eq!(in_words(Duration::from_secs(7200)), "2 hours");
    }
}
