//! The whole update handling as one table: which message goes to which
//! endpoint. Filters run top to bottom; the first branch that matches wins.

use std::sync::Arc;

use teloxide::dispatching::UpdateHandler;
use teloxide::dptree::{self, case};
use teloxide::prelude::*;
use teloxide::types::Me;

use super::commands::{self, Parsed, Request};
use super::endpoints::{self, Admission};
use crate::config::ServerConfig;
use crate::gateway::Gateway;

/// Who may use the bot; empty means everyone.
#[derive(Clone)]
pub struct AllowedUsers(pub Arc<[u64]>);

impl AllowedUsers {
    fn admits(&self, msg: &Message) -> bool {
        msg.from.as_ref().is_some_and(|u| self.admits_user(u.id.0))
    }

    fn admits_user(&self, user_id: u64) -> bool {
        self.0.is_empty() || self.0.contains(&user_id)
    }
}

pub fn schema() -> UpdateHandler<teloxide::RequestError> {
    // Held from here until its handling ends (see `journal`).
    super::journal::claiming().branch(messages()).branch(
        Update::filter_callback_query()
            .filter(|query: CallbackQuery, allowed: AllowedUsers| {
                allowed.admits_user(query.from.id.0)
            })
            .branch(dptree::filter_map(cancel_tap).endpoint(endpoints::cancel_tap))
            .branch(dptree::filter_map(dialogue_tap).endpoint(endpoints::dialogue_tap))
            .branch(dptree::filter_map(withdraw_tap).endpoint(endpoints::withdraw_tap))
            .branch(dptree::filter_map(forget_tap).endpoint(endpoints::forget_tap))
            .branch(dptree::filter_map(new_link).endpoint(endpoints::new_link))
            .branch(dptree::filter_map(browse_tap).endpoint(endpoints::browse_tap)),
    )
}

/// A tap on /forget's buttons: confirmed or not.
fn forget_tap(query: CallbackQuery) -> Option<bool> {
    match query.data.as_deref()? {
        commands::FORGET_CONFIRMED => Some(true),
        commands::FORGET_KEPT => Some(false),
        _ => None,
    }
}

/// A tap on "Ask again" under /status.
fn withdraw_tap(query: CallbackQuery) -> Option<usize> {
    commands::withdraw_tap(query.data.as_deref()?)
}

/// A tap on a dialogue's button.
fn dialogue_tap(query: CallbackQuery) -> Option<(String, super::dialogue::Verb)> {
    super::dialogue::tap(query.data.as_deref()?)
}

/// A tap on a running call's Cancel button.
fn cancel_tap(query: CallbackQuery) -> Option<String> {
    super::running::cancel_tap(query.data.as_deref()?)
}

/// A tap in a browser (tools, resources, prompts).
fn browse_tap(query: CallbackQuery, gateway: Arc<Gateway>) -> Option<commands::BrowseTap> {
    commands::browse_tap(query.data.as_deref()?, &gateway)
}

fn messages() -> UpdateHandler<teloxide::RequestError> {
    Update::filter_message()
        // Channel posts and service messages have no sender to answer.
        .filter(|msg: Message| msg.from.is_some())
        .branch(
            dptree::filter(|msg: Message| msg.text().is_none() && msg.chat.is_private())
                .endpoint(endpoints::not_text),
        )
        .filter_map(parse)
        .branch(
            dptree::filter(|msg: Message, allowed: AllowedUsers| !allowed.admits(&msg))
                .endpoint(endpoints::refuse),
        )
        .branch(case![Parsed::Text].endpoint(endpoints::plain_text))
        .branch(case![Parsed::Unknown { command, addressed }].endpoint(endpoints::unknown))
        .branch(case![Parsed::Invalid(problem)].endpoint(endpoints::problem))
        .branch(
            case![Parsed::Request(request)]
                .branch(case![Request::Start].endpoint(endpoints::start))
                .branch(case![Request::Help].endpoint(endpoints::help))
                .branch(case![Request::Cancel].endpoint(endpoints::cancel))
                .branch(case![Request::Token(server)].endpoint(endpoints::token))
                .branch(case![Request::Forget].endpoint(endpoints::forget))
                // One command at a time per user; the rest run in tasks of
                // their own, holding the ticket.
                .map_async(endpoints::admit)
                .branch(case![Admission::Busy(busy)].endpoint(endpoints::still_working))
                .branch(
                    case![Admission::Go(ticket)]
                        .branch(case![Request::Servers].endpoint(endpoints::servers))
                        .branch(case![Request::Status].endpoint(endpoints::status))
                        .branch(case![Request::Connect(server)].endpoint(endpoints::connect))
                        .branch(dptree::filter_map(browsing).endpoint(endpoints::browse))
                        .branch(case![Request::Call(call)].endpoint(endpoints::call))
                        .branch(case![Request::Disconnect(server)].endpoint(endpoints::disconnect)),
                ),
        )
}

/// `/tools`, `/resources` or `/prompts`: the server and what to list.
fn browsing(request: Request) -> Option<(Arc<ServerConfig>, crate::gateway::ResumeOp)> {
    use crate::gateway::ResumeOp;
    match request {
        Request::Tools(server) => Some((server, ResumeOp::ListTools)),
        Request::Resources(server) => Some((server, ResumeOp::ListResources)),
        Request::Prompts(server) => Some((server, ResumeOp::ListPrompts)),
        _ => None,
    }
}

/// The server a "New link" button asks for.
fn new_link(query: CallbackQuery, gateway: Arc<Gateway>) -> Option<Arc<ServerConfig>> {
    commands::new_link_server(query.data.as_deref()?, &gateway)
}

/// Reads a text message as a command. Messages that are not for this bot
/// stop here: in a group, plain text, commands for other bots and unknown
/// commands not addressed to us by name are other people's business.
fn parse(msg: Message, me: Me, gateway: Arc<Gateway>) -> Option<Parsed> {
    let text = msg.text()?;
    let parsed = commands::parse(text, me.username(), &gateway);
    let for_someone_else = matches!(
        parsed,
        Parsed::Text
            | Parsed::ForAnotherBot
            | Parsed::Unknown {
                addressed: false,
                ..
            }
    );
    if for_someone_else && !msg.chat.is_private() {
        return None;
    }
    Some(match parsed {
        // In a private chat, another bot's command is just text to us.
        Parsed::ForAnotherBot => Parsed::Text,
        other => other,
    })
}
