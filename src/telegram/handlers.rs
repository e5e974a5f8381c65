//! What the bot does for each request. Endpoints are thin: they call into
//! `oauth` and `mcp` and turn the outcome into messages.

use std::sync::Arc;

use teloxide::prelude::*;
use teloxide::types::{ChatKind, InlineKeyboardButton, InlineKeyboardMarkup, User};
use teloxide::utils::command::BotCommands;

use super::Ctx;
use super::commands::{self, Command, Parsed, Request};
use super::send;
use crate::config::ServerConfig;
use crate::mcp::{McpError, render};
use crate::oauth::FlowOwner;
use crate::text::clip;

pub type HandlerResult = Result<(), teloxide::RequestError>;

/// Every message from a user lands here.
pub async fn on_message(bot: Bot, msg: Message, ctx: Arc<Ctx>) -> HandlerResult {
    let Some(user) = msg.from.clone() else {
        return Ok(());
    };
    let Some(text) = msg.text() else {
        if msg.chat.is_private() {
            send::text(&bot, msg.chat.id, "I understand commands only. Send /help.").await?;
        }
        return Ok(());
    };
    let parsed = commands::parse(text, &ctx.bot_username, &ctx.config);
    let for_someone_else = matches!(
        parsed,
        Parsed::NotForUs
            | Parsed::Unknown {
                addressed: false,
                ..
            }
    );
    if for_someone_else && !msg.chat.is_private() {
        return Ok(());
    }
    if !ctx.is_allowed(user.id.0) {
        tracing::info!(
            user = user.id.0,
            "refused a user not in telegram.allowed_users"
        );
        send::text(&bot, msg.chat.id, "Sorry, this bot is private.").await?;
        return Ok(());
    }
    match parsed {
        Parsed::NotForUs => send::text(&bot, msg.chat.id, "Send /help to see what I can do.").await,
        Parsed::Invalid(hint) | Parsed::Unknown { hint, .. } => {
            send::text(&bot, msg.chat.id, &hint).await
        }
        Parsed::Request(request) => handle(bot, &msg, &user, request, &ctx).await,
    }
}

async fn handle(
    bot: Bot,
    msg: &Message,
    user: &User,
    request: Request,
    ctx: &Ctx,
) -> HandlerResult {
    let chat = msg.chat.id;
    let user_id = user.id.0;
    // Requests name servers the parser already checked against this config,
    // but a stale id must still get an answer, never a panic.
    let server_of = |id: &str| ctx.config.server(id);
    let unknown = |id: &str| format!("Unknown server \"{id}\". Send /servers to see them.");
    match request {
        Request::Start => send::text(&bot, chat, &start_text(ctx)).await,
        Request::Help => send::text(&bot, chat, &help_text()).await,
        Request::Servers => send::text(&bot, chat, &servers_text(ctx, user_id, false).await).await,
        Request::Status => send::text(&bot, chat, &servers_text(ctx, user_id, true).await).await,
        Request::Connect(server_id) => {
            let Some(server) = server_of(&server_id) else {
                return send::text(&bot, chat, &unknown(&server_id)).await;
            };
            let intro = match ctx.connector.is_connected(user_id, &server.id).await {
                Ok(true) => Some(format!(
                    "You are already connected to {}. The link below connects again (for example with another account).",
                    server.name
                )),
                _ => None,
            };
            offer_connect(&bot, msg, user, server, ctx, intro.as_deref()).await
        }
        Request::Disconnect(server_id) => {
            let Some(server) = server_of(&server_id) else {
                return send::text(&bot, chat, &unknown(&server_id)).await;
            };
            if !server.is_oauth() {
                let text = format!(
                    "{} does not use per-user sign-in; there is nothing to disconnect.",
                    server.name
                );
                return send::text(&bot, chat, &text).await;
            }
            ctx.hub.forget(user_id, &server.id).await;
            let text = match ctx.connector.disconnect(user_id, &server.id).await {
                Ok(true) => format!(
                    "Disconnected from {}. Your tokens are deleted.",
                    server.name
                ),
                Ok(false) => format!("You were not connected to {}.", server.name),
                Err(error) => {
                    tracing::error!(%error, "vault failure on disconnect");
                    "Something went wrong on my side; please try again later.".to_owned()
                }
            };
            send::text(&bot, chat, &text).await
        }
        Request::Tools(server_id) => {
            let Some(server) = server_of(&server_id) else {
                return send::text(&bot, chat, &unknown(&server_id)).await;
            };
            let _ = bot
                .send_chat_action(chat, teloxide::types::ChatAction::Typing)
                .await;
            match ctx.hub.list_tools(user_id, &server.id).await {
                Ok(tools) => {
                    let text = format!("Tools of {}:\n{}", server.name, render::tool_list(&tools));
                    send::text(&bot, chat, &text).await
                }
                Err(error) => mcp_failure(&bot, msg, user, server, ctx, error).await,
            }
        }
        Request::Call {
            server,
            tool,
            arguments,
        } => {
            let Some(server) = server_of(&server) else {
                return send::text(&bot, chat, &unknown(&server)).await;
            };
            let _ = bot
                .send_chat_action(chat, teloxide::types::ChatAction::Typing)
                .await;
            match ctx
                .hub
                .call_tool(user_id, &server.id, &tool, arguments)
                .await
            {
                Ok(result) => send::text(&bot, chat, &render::call_result(&result)).await,
                Err(error) => mcp_failure(&bot, msg, user, server, ctx, error).await,
            }
        }
    }
}

async fn mcp_failure(
    bot: &Bot,
    msg: &Message,
    user: &User,
    server: &ServerConfig,
    ctx: &Ctx,
    error: McpError,
) -> HandlerResult {
    match error {
        McpError::NotConnected if server.is_oauth() => {
            let intro = format!("You are not connected to {}.", server.name);
            offer_connect(bot, msg, user, server, ctx, Some(&intro)).await
        }
        McpError::NotConnected | McpError::Refused(_) => {
            let text = format!(
                "{} refused the bot's credentials; ask the bot's admin to check its config.",
                server.name
            );
            send::text(bot, msg.chat.id, &text).await
        }
        error => {
            tracing::warn!(server = %server.id, user = user.id.0, error = ?error, "MCP operation failed");
            let text = format!("{}: {}", server.name, clip(&error.to_string(), ERROR_CHARS));
            send::text(bot, msg.chat.id, &text).await
        }
    }
}

/// Starts a flow and sends its link to the user's private chat. In a group
/// the link is never posted: the group gets a pointer instead.
async fn offer_connect(
    bot: &Bot,
    msg: &Message,
    user: &User,
    server: &ServerConfig,
    ctx: &Ctx,
    intro: Option<&str>,
) -> HandlerResult {
    let chat = msg.chat.id;
    if !server.is_oauth() {
        let text = format!(
            "{} needs no sign-in; try /tools {}.",
            server.name, server.id
        );
        return send::text(bot, chat, &text).await;
    }
    let private = matches!(msg.chat.kind, ChatKind::Private(_));
    let private_chat = ChatId(user.id.0 as i64);
    let owner = FlowOwner {
        user_id: user.id.0,
        chat_id: private_chat.0,
    };
    let _ = bot
        .send_chat_action(chat, teloxide::types::ChatAction::Typing)
        .await;
    let flow = match ctx.connector.start(owner, server).await {
        Ok(flow) => flow,
        Err(error) => {
            tracing::warn!(server = %server.id, error = ?error, "could not start authorization");
            let text = format!(
                "Cannot connect to {} right now: {}",
                server.name,
                clip(&error.to_string(), ERROR_CHARS)
            );
            return send::text(bot, chat, &text).await;
        }
    };
    let mut text = String::new();
    if let Some(intro) = intro {
        text.push_str(intro);
        text.push_str("\n\n");
    }
    text.push_str(&format!(
        "Connect your {} account: open the link below and approve access. It works once and expires in 10 minutes.",
        server.name
    ));
    let label = format!("Connect {}", server.name);
    let sent = send::link(
        bot,
        private_chat,
        &text,
        &label,
        flow.authorize_url.expose(),
    )
    .await;
    if private {
        return sent;
    }
    match sent {
        Ok(()) => send::text(bot, chat, "I've sent you a private message with the link.").await,
        Err(error) if send::is_forbidden(&error) => {
            let deep_link = format!(
                "https://t.me/{}?start={}",
                ctx.bot_username,
                commands::start_payload_for_connect(&server.id)
            );
            let Ok(url) = deep_link.parse() else {
                return send::text(
                    bot,
                    chat,
                    "Open a private chat with me and send /connect there.",
                )
                .await;
            };
            let markup = InlineKeyboardMarkup::new([[InlineKeyboardButton::url(
                "Open a private chat",
                url,
            )]]);
            bot.send_message(
                chat,
                "Start a private chat with me first; I'll send the link there.",
            )
            .reply_markup(markup)
            .await
            .map(|_| ())
        }
        Err(error) => Err(error),
    }
}

/// Errors can quote whole response bodies of remote servers; a chat gets
/// the first few hundred characters.
const ERROR_CHARS: usize = 300;

fn start_text(ctx: &Ctx) -> String {
    let first = ctx
        .config
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

fn help_text() -> String {
    format!(
        "{}\n\nExample: /call demo greet {{\"name\": \"Alice\"}}",
        Command::descriptions()
    )
}

async fn servers_text(ctx: &Ctx, user_id: u64, only_status: bool) -> String {
    if ctx.config.servers.is_empty() {
        return "No servers are configured.".to_owned();
    }
    let mut lines = Vec::new();
    for server in &ctx.config.servers {
        let state = if !server.is_oauth() {
            "no sign-in needed".to_owned()
        } else {
            match ctx.connector.is_connected(user_id, &server.id).await {
                Ok(true) => "connected".to_owned(),
                Ok(false) => format!("not connected — /connect {}", server.id),
                Err(error) => {
                    tracing::error!(%error, "vault failure");
                    "unknown (storage error)".to_owned()
                }
            }
        };
        lines.push(format!("• {} ({}): {}", server.name, server.id, state));
    }
    let title = if only_status {
        "Your connections:"
    } else {
        "Servers:"
    };
    format!("{title}\n{}", lines.join("\n"))
}
