//! One endpoint per request: call the core, hand the outcome to
//! [`wording`] and send it. Nothing here decides what a sentence says.

use std::sync::Arc;

use teloxide::prelude::*;
use teloxide::types::{ChatAction, InlineKeyboardButton, InlineKeyboardMarkup, Me};

use super::commands::{self, CallRequest, Problem};
use super::send;
use super::wording::{self, OfferReason};
use crate::config::ServerConfig;
use crate::gateway::{CallError, Gateway};
use crate::store::FlowOwner;

pub type HandlerResult = Result<(), teloxide::RequestError>;

pub async fn refuse(bot: Bot, msg: Message) -> HandlerResult {
    if let Some(user) = &msg.from {
        tracing::info!(
            user = user.id.0,
            "refused a user not in telegram.allowed_users"
        );
    }
    send::text(&bot, msg.chat.id, wording::PRIVATE_BOT).await
}

pub async fn not_text(bot: Bot, msg: Message) -> HandlerResult {
    send::text(&bot, msg.chat.id, wording::COMMANDS_ONLY).await
}

pub async fn plain_text(bot: Bot, msg: Message) -> HandlerResult {
    send::text(&bot, msg.chat.id, wording::SEND_HELP).await
}

pub async fn unknown(bot: Bot, msg: Message, (command, _): (String, bool)) -> HandlerResult {
    send::text(&bot, msg.chat.id, &wording::unknown_command(&command)).await
}

pub async fn problem(
    bot: Bot,
    msg: Message,
    problem: Problem,
    gateway: Arc<Gateway>,
) -> HandlerResult {
    let text = wording::problem(&problem, gateway.config());
    send::text(&bot, msg.chat.id, &text).await
}

pub async fn start(bot: Bot, msg: Message, gateway: Arc<Gateway>) -> HandlerResult {
    send::text(&bot, msg.chat.id, &wording::start(gateway.config())).await
}

pub async fn help(bot: Bot, msg: Message) -> HandlerResult {
    send::text(&bot, msg.chat.id, &wording::help()).await
}

pub async fn servers(bot: Bot, msg: Message, gateway: Arc<Gateway>) -> HandlerResult {
    let statuses = gateway.status(sender(&msg)).await;
    send::text(&bot, msg.chat.id, &wording::servers(&statuses, false)).await
}

pub async fn status(bot: Bot, msg: Message, gateway: Arc<Gateway>) -> HandlerResult {
    let statuses = gateway.status(sender(&msg)).await;
    send::text(&bot, msg.chat.id, &wording::servers(&statuses, true)).await
}

pub async fn connect(
    bot: Bot,
    msg: Message,
    me: Me,
    gateway: Arc<Gateway>,
    server: Arc<ServerConfig>,
) -> HandlerResult {
    offer_connect(&bot, &msg, &me, &gateway, &server, OfferReason::Asked).await
}

pub async fn disconnect(
    bot: Bot,
    msg: Message,
    gateway: Arc<Gateway>,
    server: Arc<ServerConfig>,
) -> HandlerResult {
    let text = match gateway.disconnect(sender(&msg), &server).await {
        Ok(outcome) => wording::disconnected(&server, outcome),
        Err(error) => wording::disconnect_failed(&server, &error),
    };
    send::text(&bot, msg.chat.id, &text).await
}

pub async fn tools(
    bot: Bot,
    msg: Message,
    me: Me,
    gateway: Arc<Gateway>,
    server: Arc<ServerConfig>,
) -> HandlerResult {
    typing(&bot, &msg);
    match gateway.list_tools(sender(&msg), &server).await {
        Ok(tools) => send::text(&bot, msg.chat.id, &wording::tools(&server, &tools)).await,
        Err(error) => failed(&bot, &msg, &me, &gateway, &server, error).await,
    }
}

pub async fn call(
    bot: Bot,
    msg: Message,
    me: Me,
    gateway: Arc<Gateway>,
    call: CallRequest,
) -> HandlerResult {
    typing(&bot, &msg);
    let CallRequest {
        server,
        tool,
        arguments,
    } = call;
    match gateway
        .call_tool(sender(&msg), &server, &tool, arguments)
        .await
    {
        Ok(result) => send::text(&bot, msg.chat.id, &wording::call_result(&result)).await,
        Err(error) => failed(&bot, &msg, &me, &gateway, &server, error).await,
    }
}

/// A failed MCP operation: a connect link when the user must authorize,
/// one sentence otherwise.
async fn failed(
    bot: &Bot,
    msg: &Message,
    me: &Me,
    gateway: &Gateway,
    server: &Arc<ServerConfig>,
    error: CallError,
) -> HandlerResult {
    if server.is_oauth() && matches!(error, CallError::NotAuthorized { .. }) {
        return offer_connect(bot, msg, me, gateway, server, OfferReason::NotConnected).await;
    }
    send::text(bot, msg.chat.id, &wording::call_failed(server, &error)).await
}

/// Starts a flow and sends its link to the user's private chat. In a group
/// the link is never posted: the group gets a pointer instead.
async fn offer_connect(
    bot: &Bot,
    msg: &Message,
    me: &Me,
    gateway: &Gateway,
    server: &Arc<ServerConfig>,
    reason: OfferReason,
) -> HandlerResult {
    let chat = msg.chat.id;
    if !server.is_oauth() {
        return send::text(bot, chat, &wording::no_sign_in(server)).await;
    }
    let user_id = sender(msg);
    // The flow belongs to the private chat: that is where the link goes
    // and where its outcome is told, whatever chat the command came from.
    let private_chat = ChatId(user_id as i64);
    let owner = FlowOwner {
        user_id,
        chat_id: private_chat.0,
    };
    typing(bot, msg);
    let offer = match gateway.start_connect(owner, server).await {
        Ok(offer) => offer,
        Err(error) => {
            return send::text(bot, chat, &wording::connect_not_started(server, &error)).await;
        }
    };
    let sent = send::link(
        bot,
        private_chat,
        &wording::connect_offer(&offer, reason),
        &wording::connect_button(server),
        offer.authorize_url.expose(),
    )
    .await;
    if msg.chat.is_private() {
        return sent;
    }
    match sent {
        Ok(()) => send::text(bot, chat, wording::SENT_PRIVATELY).await,
        Err(error) if send::is_forbidden(&error) => {
            let deep_link = format!(
                "https://t.me/{}?start={}",
                me.username(),
                commands::start_payload_for_connect(&server.id)
            );
            let Ok(url) = deep_link.parse() else {
                return send::text(bot, chat, wording::OPEN_PRIVATE_CHAT).await;
            };
            let markup = InlineKeyboardMarkup::new([[InlineKeyboardButton::url(
                wording::START_PRIVATE_CHAT_BUTTON,
                url,
            )]]);
            bot.send_message(chat, wording::START_PRIVATE_CHAT)
                .reply_markup(markup)
                .await
                .map(|_| ())
        }
        Err(error) => Err(error),
    }
}

/// The sender's Telegram user id; the schema lets only messages with a
/// sender through.
fn sender(msg: &Message) -> u64 {
    msg.from.as_ref().map(|user| user.id.0).unwrap_or_default()
}

/// "typing…" in the chat, without waiting for Telegram: the MCP request
/// must not wait for a round trip to the Bot API.
fn typing(bot: &Bot, msg: &Message) {
    let (bot, chat) = (bot.clone(), msg.chat.id);
    tokio::spawn(async move {
        let _ = bot.send_chat_action(chat, ChatAction::Typing).await;
    });
}
