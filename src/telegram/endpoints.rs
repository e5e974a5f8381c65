//! One endpoint per request: call the core, hand the outcome to
//! [`wording`] and send it. Nothing here decides what a sentence says.
//!
//! Commands that reach out (connect, tools, call, disconnect, status) run
//! in a task of their own holding the user's [`Ticket`]: the user's update
//! queue moves on at once, and a further command is answered "still
//! working on …" instead of waiting, so no user can hold up another.

use std::future::Future;
use std::sync::{Arc, Mutex};

use teloxide::prelude::*;

use super::TgBot;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, Me, User};

use super::ask;
use super::commands::{self, BrowseTap, CallRequest, Problem, Request};
use super::dialogue::{Body, Dialogue, Dialogues, Ending, Purpose, Verb};
use super::notifier::Resumption;
use super::render;
use super::render::{Entry, Listing};
use super::results;
use super::running::{Running, Status};
use super::send::{self, LinkButton};
use super::typing::Typing;
use super::wording::{self, OfferReason};
use crate::config::ServerConfig;
use crate::gateway::{
    Busy, CallError, FlowLink, Gateway, MAX_STEP_UPS, Resume, ResumeOp, StartOptions, Watch,
    step_up_scopes,
};
use crate::logging::chain;
use crate::store::{ChatMessage, CommandTicket, FlowOwner};

pub type HandlerResult = Result<(), teloxide::RequestError>;

/// What the chats have going on: calls running, questions open.
#[derive(Clone)]
pub struct Chats {
    pub running: Arc<Running>,
    pub dialogues: Arc<Dialogues>,
}

/// Whether a command may run now: with the user's ticket, or not while
/// another of theirs is running.
#[derive(Clone)]
pub enum Admission {
    Go(Ticket),
    Busy(Busy),
}

/// A user's command ticket, passed through the schema to the endpoint that
/// moves it into the command's task.
#[derive(Clone)]
pub struct Ticket(Arc<Mutex<Option<CommandTicket>>>);

impl Ticket {
    fn take(&self) -> Option<CommandTicket> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Admits a request of `msg`'s sender, or says what is still running.
pub async fn admit(msg: Message, request: Request, gateway: Arc<Gateway>) -> Admission {
    match gateway
        .begin_command(sender(&msg), &commands::label(&request))
        .await
    {
        Ok(ticket) => Admission::Go(Ticket(Arc::new(Mutex::new(Some(ticket))))),
        Err(busy) => Admission::Busy(busy),
    }
}

/// The running command's hold on its user. Work drops it just before
/// sending its answer, so a user who replies to that answer at once never
/// hears "still working" about a command that has finished.
pub struct Done {
    _held: Option<CommandTicket>,
}

impl Done {
    pub fn release(self) {}
}

/// Commands running in tasks of their own: at shutdown the bot stops
/// taking updates, then waits for these (up to the configured grace).
pub static IN_FLIGHT: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

/// Runs a command's work in its own task; the work releases the ticket
/// ([`Done`]) before its final message, or on returning at the latest.
fn in_background<F, Fut>(ticket: Ticket, work: F) -> HandlerResult
where
    F: FnOnce(Done) -> Fut,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let done = Done {
        _held: ticket.take(),
    };
    let work = work(done);
    // The update that asked for it is handled once this work ends.
    let hold = super::journal::held();
    IN_FLIGHT.spawn(async move {
        if let Err(error) = work.await {
            crate::metrics::telegram_error();
            tracing::warn!(error = %chain(&error), "a reply could not be sent");
        }
        drop(hold);
    });
    Ok(())
}

/// Another command came while one runs: told once, then dropped, so a
/// flood costs no messages (and Telegram's per-chat limit is not hit).
pub async fn still_working(bot: TgBot, msg: Message, busy: Busy) -> HandlerResult {
    if busy.told {
        return Ok(());
    }
    send::text(&bot, msg.chat.id, &wording::still_working(&busy)).await
}

pub async fn refuse(bot: TgBot, msg: Message) -> HandlerResult {
    if let Some(user) = &msg.from {
        tracing::info!(
            user = user.id.0,
            "refused a user not in telegram.allowed_users"
        );
    }
    send::text(&bot, msg.chat.id, wording::PRIVATE_BOT).await
}

pub async fn not_text(bot: TgBot, msg: Message) -> HandlerResult {
    send::text(&bot, msg.chat.id, wording::COMMANDS_ONLY).await
}

/// Text that is not a command: the answer to an open question in the
/// private chat, or else a pointer to /help.
pub async fn plain_text(
    bot: TgBot,
    msg: Message,
    me: Me,
    gateway: Arc<Gateway>,
    chats: Chats,
    update: Update,
) -> HandlerResult {
    let user_id = sender(&msg);
    // A reply to a question another replica asked goes there.
    if msg.chat.is_private()
        && chats.dialogues.get(user_id).is_none()
        && gateway.hand_over(user_id, &update).await
    {
        return Ok(());
    }
    if msg.chat.is_private()
        && let (Some(open), Some(text)) = (chats.dialogues.get(user_id), msg.text())
    {
        let mut d = open.lock().await;
        // Whatever a reply to a token question holds, it leaves the chat.
        let deleted = match d.body {
            Body::Token => Some(bot.delete_message(msg.chat.id, msg.id).await),
            _ => None,
        };
        let field = ask::open_field(&d);
        let step = d.reply(text);
        let ending = ask::advance(&bot, &chats.dialogues, user_id, &mut d, step, field).await?;
        drop(d);
        if let Some(Err(error)) = &deleted {
            tracing::warn!(%error, "could not delete a message holding a token");
            send::text(&bot, msg.chat.id, wording::TOKEN_NOT_DELETED).await?;
        }
        if let Some(Ending::Token { server, token }) = ending {
            return keep_token(&bot, &msg, &gateway, &server, token).await;
        }
        return finish_dialogue(bot, me, gateway, chats, user_id, ending).await;
    }
    send::text(&bot, msg.chat.id, wording::SEND_HELP).await
}

/// `/token <server>`: asks for the user's own token, in the private chat
/// only.
pub async fn token(
    bot: TgBot,
    msg: Message,
    chats: Chats,
    server: Arc<ServerConfig>,
) -> HandlerResult {
    if !msg.chat.is_private() {
        return send::text(&bot, msg.chat.id, wording::TOKEN_IN_PRIVATE).await;
    }
    if server.user_token.is_none() {
        return send::text(&bot, msg.chat.id, &wording::no_personal_token(&server)).await;
    }
    let user_id = sender(&msg);
    let d = Dialogue::new(
        msg.chat.id,
        server.clone(),
        wording::token_question(&server),
        Body::Token,
        Purpose::Token,
    );
    ask::start(&bot, &chats.dialogues, user_id, d)
        .await
        .map(|_| ())
}

/// Keeps a token the user sent (its message is deleted already).
async fn keep_token(
    bot: &TgBot,
    msg: &Message,
    gateway: &Gateway,
    server: &ServerConfig,
    token: crate::secret::Secret,
) -> HandlerResult {
    let text = match gateway
        .save_personal_token(sender(msg), server, &token)
        .await
    {
        Ok(()) => wording::token_saved(server),
        Err(error) => {
            tracing::error!(error = %chain(&error), "could not keep a personal token");
            wording::STORAGE_TROUBLE.to_owned()
        }
    };
    send::text(bot, msg.chat.id, &text).await
}

/// A tap on a dialogue's button.
pub async fn dialogue_tap(
    bot: TgBot,
    query: CallbackQuery,
    me: Me,
    gateway: Arc<Gateway>,
    chats: Chats,
    (id, verb): (String, Verb),
    update: Update,
) -> HandlerResult {
    let user_id = query.from.id.0;
    let open = chats.dialogues.get(user_id);
    if open.is_none() && gateway.hand_over(user_id, &update).await {
        return Ok(());
    }
    let Some(open) = open else {
        let _ = bot
            .answer_callback_query(query.id.clone())
            .text(wording::STALE_BUTTON)
            .await;
        return Ok(());
    };
    let mut d = open.lock().await;
    if d.id != id {
        drop(d);
        let _ = bot
            .answer_callback_query(query.id.clone())
            .text(wording::STALE_BUTTON)
            .await;
        return Ok(());
    }
    let _ = bot.answer_callback_query(query.id.clone()).await;
    let field = ask::open_field(&d);
    let step = d.apply(verb);
    let ending = ask::advance(&bot, &chats.dialogues, user_id, &mut d, step, field).await?;
    drop(d);
    finish_dialogue(bot, me, gateway, chats, user_id, ending).await
}

/// A guided call's Run: the call runs like a typed /call, in the private
/// chat where its arguments were given.
async fn finish_dialogue(
    bot: TgBot,
    me: Me,
    gateway: Arc<Gateway>,
    chats: Chats,
    user_id: u64,
    ending: Option<Ending>,
) -> HandlerResult {
    let chat = ChatId(user_id as i64);
    let (server, tool, arguments, always) = match ending {
        Some(Ending::Run {
            server,
            tool,
            arguments,
            always,
        }) => (server, tool, arguments, always),
        Some(Ending::Prompt {
            server,
            name,
            arguments,
        }) => return get_prompt(bot, gateway, chats, user_id, server, name, arguments).await,
        _ => return Ok(()),
    };
    if always && let Err(error) = gateway.allow_tool(user_id, &server, &tool).await {
        tracing::warn!(user = user_id, error = %chain(&error), "could not keep a consent");
    }
    let label = format!("/call {} {tool}", server.id);
    let ticket = match gateway.begin_command(user_id, &label).await {
        Ok(ticket) => ticket,
        Err(busy) => return send::text(&bot, chat, &wording::still_working(&busy)).await,
    };
    let ticket = Ticket(Arc::new(Mutex::new(Some(ticket))));
    let from = Origin {
        user_id,
        requester: String::new(),
        chat,
        private: true,
    };
    in_background(ticket, move |done| async move {
        let op = ResumeOp::CallTool {
            tool,
            arguments: Some(arguments),
        };
        let consented = Op {
            op,
            step_ups: 0,
            consented: true,
        };
        run_op(&bot, &from, &me, &gateway, &chats, &server, consented, done).await
    })
}

/// The server wants a page opened before the call: the URL is put to the
/// user as a URL question in the private chat; once they agree, the call
/// is offered again with a Run button.
async fn page_first(
    bot: &TgBot,
    chats: &Chats,
    server: &Arc<ServerConfig>,
    from: &Origin,
    tool: &str,
    arguments: Option<rmcp::model::JsonObject>,
    pages: Vec<crate::mcp::UrlPage>,
) -> HandlerResult {
    let chat = ChatId(from.user_id as i64);
    let Some(page) = pages.into_iter().next() else {
        return Ok(());
    };
    let request = rmcp::model::ElicitRequestParams::UrlElicitationParams {
        meta: None,
        message: page.message,
        url: page.url,
        elicitation_id: page.elicitation_id,
    };
    let answer = ask::elicit(
        bot.clone(),
        chats.dialogues.clone(),
        server.clone(),
        from.user_id,
        request,
    )
    .await;
    if answer.action != rmcp::model::ElicitationAction::Accept {
        return send::text(bot, chat, &wording::page_not_opened(server)).await;
    }
    send::text(bot, chat, &wording::retry_after_page(server, tool)).await?;
    let empty = Arc::new(crate::mcp::Schema::new(Arc::new(Default::default())));
    let d = Dialogue::new(
        chat,
        server.clone(),
        wording::retry_after_page(server, tool),
        Body::Form(crate::gateway::form::Form::filled(
            empty,
            arguments.unwrap_or_default(),
        )),
        Purpose::Call {
            tool: tool.to_owned(),
            consent: false,
        },
    );
    ask::start(bot, &chats.dialogues, from.user_id, d)
        .await
        .map(|_| ())
}

/// Asks the user to confirm a call of a tool that may change things,
/// showing its arguments: Run, Always allow, or Cancel. The question goes
/// to the private chat, whatever chat the call came from.
async fn ask_consent(
    bot: &TgBot,
    chats: &Chats,
    server: &Arc<ServerConfig>,
    from: &Origin,
    tool: &rmcp::model::Tool,
    arguments: Option<rmcp::model::JsonObject>,
) -> HandlerResult {
    let chat = ChatId(from.user_id as i64);
    let schema = Arc::new(crate::mcp::Schema::new(tool.input_schema.clone()));
    let d = Dialogue::new(
        chat,
        server.clone(),
        wording::consent_intro(server, &tool.name),
        Body::Form(crate::gateway::form::Form::filled(
            schema,
            arguments.unwrap_or_default(),
        )),
        Purpose::Call {
            tool: tool.name.to_string(),
            consent: true,
        },
    );
    let opened = ask::start(bot, &chats.dialogues, from.user_id, d).await?;
    if opened && !from.private {
        send::text(bot, from.chat, wording::CONFIRM_PRIVATELY).await?;
    }
    Ok(())
}

/// Gets a filled-in prompt and sends its messages to the private chat.
async fn get_prompt(
    bot: TgBot,
    gateway: Arc<Gateway>,
    chats: Chats,
    user_id: u64,
    server: Arc<ServerConfig>,
    name: String,
    arguments: rmcp::model::JsonObject,
) -> HandlerResult {
    let chat = ChatId(user_id as i64);
    let label = format!("/prompts {}", server.id);
    let ticket = match gateway.begin_command(user_id, &label).await {
        Ok(ticket) => Ticket(Arc::new(Mutex::new(Some(ticket)))),
        Err(busy) => {
            let text = wording::still_working(&busy);
            tokio::spawn(async move { send::text(&bot, chat, &text).await });
            return Ok(());
        }
    };
    in_background(ticket, move |done| async move {
        let mut call = chats.running.register(user_id);
        let label = wording::prompt_label(&server, &name);
        let status = Status::start(bot.clone(), chat, label, &call.id);
        let observer = status.observer(chats.dialogues.clone(), server.clone(), user_id);
        let getting = gateway.get_prompt(
            user_id,
            &server,
            &name,
            arguments,
            Some(Watch::new(observer)),
        );
        let got = tokio::select! {
            got = getting => Some(got),
            Ok(()) = &mut call.cancelled => None,
        };
        status.finish().await;
        done.release();
        match got {
            Some(Ok(result)) => send::outgoing(&bot, chat, results::prompt(&result)).await,
            Some(Err(error)) => {
                send::text(&bot, chat, &wording::call_failed(&server, &error)).await
            }
            None => send::text(&bot, chat, wording::LEFT).await,
        }
    })
}

/// Starts a guided call of `tool`: its arguments asked one by one in the
/// user's private chat, then Run.
async fn guide(
    bot: &TgBot,
    chats: &Chats,
    server: &Arc<ServerConfig>,
    user_id: u64,
    tool: &rmcp::model::Tool,
) -> HandlerResult {
    let chat = ChatId(user_id as i64);
    let schema = Arc::new(crate::mcp::Schema::new(tool.input_schema.clone()));
    let d = Dialogue::new(
        chat,
        server.clone(),
        wording::guided_intro(server, &tool.name),
        Body::Form(crate::gateway::form::Form::new(schema)),
        Purpose::Call {
            tool: tool.name.to_string(),
            consent: false,
        },
    );
    ask::start(bot, &chats.dialogues, user_id, d)
        .await
        .map(|_| ())
}

pub async fn unknown(bot: TgBot, msg: Message, (command, _): (String, bool)) -> HandlerResult {
    send::text(&bot, msg.chat.id, &wording::unknown_command(&command)).await
}

pub async fn problem(
    bot: TgBot,
    msg: Message,
    problem: Problem,
    gateway: Arc<Gateway>,
) -> HandlerResult {
    let text = wording::problem(&problem, gateway.config());
    send::text(&bot, msg.chat.id, &text).await
}

pub async fn start(bot: TgBot, msg: Message, gateway: Arc<Gateway>) -> HandlerResult {
    send::text(&bot, msg.chat.id, &wording::start(gateway.config())).await
}

pub async fn help(bot: TgBot, msg: Message) -> HandlerResult {
    send::text(&bot, msg.chat.id, &wording::help()).await
}

pub async fn servers(
    bot: TgBot,
    msg: Message,
    gateway: Arc<Gateway>,
    ticket: Ticket,
) -> HandlerResult {
    in_background(ticket, |done| async move {
        let statuses = gateway.status(sender(&msg)).await;
        done.release();
        send::text(&bot, msg.chat.id, &wording::servers(&statuses, false)).await
    })
}

pub async fn status(
    bot: TgBot,
    msg: Message,
    gateway: Arc<Gateway>,
    ticket: Ticket,
) -> HandlerResult {
    in_background(ticket, |done| async move {
        let user_id = sender(&msg);
        let statuses = gateway.status(user_id).await;
        let allowed = gateway.allowed_tools(user_id).await.unwrap_or_default();
        done.release();
        send::text(&bot, msg.chat.id, &wording::servers(&statuses, true)).await?;
        if allowed.is_empty() || !msg.chat.is_private() {
            return Ok(());
        }
        let (text, rows) = consents_page(&allowed);
        send::with_buttons(&bot, msg.chat.id, &text, rows)
            .await
            .map(|_| ())
    })
}

/// The tools a user allowed to run unasked, each with a button that
/// withdraws it (by its place in the sorted list: tool names can be long).
fn consents_page(allowed: &[(String, String)]) -> (String, Vec<Vec<(String, String)>>) {
    let rows = allowed
        .iter()
        .enumerate()
        .take(20)
        .map(|(index, (server, tool))| {
            vec![(
                wording::ask_again_button(server, tool),
                commands::withdraw_data(index),
            )]
        })
        .collect();
    (wording::CONSENTS.to_owned(), rows)
}

/// A tap on "Ask again" under /status.
pub async fn withdraw_tap(
    bot: TgBot,
    query: CallbackQuery,
    gateway: Arc<Gateway>,
    index: usize,
) -> HandlerResult {
    let user_id = query.from.id.0;
    let allowed = gateway.allowed_tools(user_id).await.unwrap_or_default();
    let Some((server, tool)) = allowed.get(index) else {
        let _ = bot
            .answer_callback_query(query.id.clone())
            .text(wording::STALE_BUTTON)
            .await;
        return Ok(());
    };
    let withdrawn = gateway.withdraw_consent(user_id, server, tool).await;
    let note = match withdrawn {
        Ok(_) => wording::will_ask_again(tool),
        Err(error) => {
            tracing::warn!(user = user_id, error = %chain(&error), "could not withdraw a consent");
            wording::STORAGE_TROUBLE.to_owned()
        }
    };
    let _ = bot.answer_callback_query(query.id.clone()).text(note).await;
    if let Some(message) = &query.message {
        let left = gateway.allowed_tools(user_id).await.unwrap_or_default();
        let (text, rows) = if left.is_empty() {
            (wording::NO_CONSENTS.to_owned(), Vec::new())
        } else {
            consents_page(&left)
        };
        send::edit_with_buttons(&bot, message.chat().id, message.id(), &text, rows).await?;
    }
    Ok(())
}

pub async fn connect(
    bot: TgBot,
    msg: Message,
    me: Me,
    gateway: Arc<Gateway>,
    server: Arc<ServerConfig>,
    ticket: Ticket,
) -> HandlerResult {
    in_background(ticket, |done| async move {
        let from = Origin::of_message(&msg);
        offer_connect(
            &bot,
            &from,
            &me,
            &gateway,
            &server,
            OfferReason::Asked,
            StartOptions::default(),
            done,
        )
        .await
    })
}

pub async fn disconnect(
    bot: TgBot,
    msg: Message,
    gateway: Arc<Gateway>,
    server: Arc<ServerConfig>,
    ticket: Ticket,
) -> HandlerResult {
    in_background(ticket, |done| async move {
        let text = match gateway.disconnect(sender(&msg), &server).await {
            Ok(outcome) => wording::disconnected(&server, outcome),
            Err(error) => wording::disconnect_failed(&server, &error),
        };
        done.release();
        send::text(&bot, msg.chat.id, &text).await
    })
}

/// `/tools`, `/resources`, `/prompts`: the first page of a browser.
pub async fn browse(
    bot: TgBot,
    msg: Message,
    me: Me,
    gateway: Arc<Gateway>,
    chats: Chats,
    (server, op): (Arc<ServerConfig>, ResumeOp),
    ticket: Ticket,
) -> HandlerResult {
    in_background(ticket, |done| async move {
        let from = Origin::of_message(&msg);
        let op = Op::new(op);
        run_op(&bot, &from, &me, &gateway, &chats, &server, op, done).await
    })
}

pub async fn call(
    bot: TgBot,
    msg: Message,
    me: Me,
    gateway: Arc<Gateway>,
    chats: Chats,
    call: CallRequest,
    ticket: Ticket,
) -> HandlerResult {
    in_background(ticket, |done| async move {
        let from = Origin::of_message(&msg);
        let CallRequest {
            server,
            tool,
            arguments,
        } = call;
        let op = ResumeOp::CallTool { tool, arguments };
        run_op(
            &bot,
            &from,
            &me,
            &gateway,
            &chats,
            &server,
            Op::new(op),
            done,
        )
        .await
    })
}

/// A command whose authorization just completed, run again in the chat
/// that sent it.
pub async fn resume(
    bot: TgBot,
    me: Me,
    gateway: Arc<Gateway>,
    chats: Chats,
    resumption: Resumption,
) {
    let Some(server) = gateway.find_server(&resumption.server_id) else {
        return;
    };
    let Resume {
        op,
        chat_id,
        requester,
        step_ups,
    } = resumption.resume;
    let from = Origin {
        user_id: resumption.owner.user_id,
        requester,
        chat: ChatId(chat_id),
        private: chat_id == resumption.owner.chat_id,
    };
    // The user may have started another command meanwhile: this one runs
    // all the same (it was asked for first), holding the ticket if free.
    let ticket = Ticket(Arc::new(Mutex::new(
        gateway
            .begin_command(from.user_id, &label_of(&server, &op))
            .await
            .ok(),
    )));
    let _ = in_background(ticket, move |done| async move {
        let op = Op {
            op,
            step_ups,
            consented: false,
        };
        run_op(&bot, &from, &me, &gateway, &chats, &server, op, done).await
    });
}

fn label_of(server: &ServerConfig, op: &ResumeOp) -> String {
    match op {
        ResumeOp::ListTools => format!("/tools {}", server.id),
        ResumeOp::ListResources => format!("/resources {}", server.id),
        ResumeOp::ListPrompts => format!("/prompts {}", server.id),
        ResumeOp::CallTool { tool, .. } => format!("/call {} {tool}", server.id),
    }
}

/// An operation to run, and how far it got.
struct Op {
    op: ResumeOp,
    /// The step-ups it went through.
    step_ups: u8,
    /// The user pressed Run for it (a tool that may change things).
    consented: bool,
}

impl Op {
    fn new(op: ResumeOp) -> Self {
        Self {
            op,
            step_ups: 0,
            consented: false,
        }
    }
}

/// Lists tools or calls one, and answers in `from`'s chat; a missing or
/// insufficient authorization gets a connect link that runs `op` again
/// once approved. A tool that may change things waits for the user's Run.
#[allow(clippy::too_many_arguments)]
async fn run_op(
    bot: &TgBot,
    from: &Origin,
    me: &Me,
    gateway: &Gateway,
    chats: &Chats,
    server: &Arc<ServerConfig>,
    Op {
        op,
        step_ups,
        consented,
    }: Op,
    done: Done,
) -> HandlerResult {
    let outcome = match &op {
        ResumeOp::ListTools | ResumeOp::ListResources | ResumeOp::ListPrompts => {
            let listing = match &op {
                ResumeOp::ListResources => Listing::Resources,
                ResumeOp::ListPrompts => Listing::Prompts,
                _ => Listing::Tools,
            };
            let typing = Typing::start(bot, from.chat);
            let fetched = fetch(gateway, from.user_id, server, listing).await;
            drop(typing);
            match fetched {
                Ok(listed) => {
                    done.release();
                    let (text, rows) = browse_page(listing, server, &listed.entries(), 0);
                    return send::with_buttons(bot, from.chat, &text, rows)
                        .await
                        .map(|_| ());
                }
                Err(error) => Err(error),
            }
        }
        ResumeOp::CallTool { tool, arguments } => 'call: {
            if !consented {
                match gateway.find_tool(from.user_id, server, tool).await {
                    Ok(Some(found))
                        if gateway.needs_consent(from.user_id, server, &found).await =>
                    {
                        done.release();
                        return ask_consent(bot, chats, server, from, &found, arguments.clone())
                            .await;
                    }
                    Ok(_) => {}
                    Err(error) => break 'call Err(error),
                }
            }
            let mut call = chats.running.register(from.user_id);
            let label = wording::call_label(server, tool);
            let status = Status::start(bot.clone(), from.chat, label, &call.id);
            let observer = status.observer(chats.dialogues.clone(), server.clone(), from.user_id);
            let watch = Watch::new(observer);
            let calling =
                gateway.call_tool(from.user_id, server, tool, arguments.clone(), Some(watch));
            // Cancelled, the call is dropped: rmcp tells the server.
            let outcome = tokio::select! {
                outcome = calling => Some(outcome),
                Ok(()) = &mut call.cancelled => None,
            };
            status.finish().await;
            match outcome {
                Some(outcome) => outcome.map(|result| results::call_result(&result)),
                None => {
                    tracing::info!(user = from.user_id, server = %server.id, "a tool call was cancelled by its user");
                    done.release();
                    let text = wording::call_cancelled(server, tool);
                    return send::text(bot, from.chat, &text).await;
                }
            }
        }
    };
    let error = match outcome {
        Ok(messages) => {
            done.release();
            return send::outgoing(bot, from.chat, messages).await;
        }
        Err(error) => error,
    };
    let resume = |step_ups| Resume {
        op: op.clone(),
        chat_id: from.chat.0,
        requester: from.requester.clone(),
        step_ups,
    };
    // A page to open first (URL elicitation's error path): asked like a
    // server's URL question, then the call is offered again.
    if let (CallError::UrlRequired { pages }, ResumeOp::CallTool { tool, arguments }) =
        (&error, &op)
    {
        done.release();
        return page_first(
            bot,
            chats,
            server,
            from,
            tool,
            arguments.clone(),
            pages.clone(),
        )
        .await;
    }
    if server.is_oauth() {
        match &error {
            CallError::NotAuthorized { challenge, .. } => {
                let options = StartOptions {
                    challenge: challenge.clone(),
                    scopes: None,
                    resume: Some(resume(step_ups)),
                };
                let reason = OfferReason::NotConnected;
                return offer_connect(bot, from, me, gateway, server, reason, options, done).await;
            }
            CallError::InsufficientScope {
                required,
                challenge,
                ..
            } if step_ups < MAX_STEP_UPS => {
                let granted = gateway
                    .connection_summary(from.user_id, server)
                    .await
                    .ok()
                    .flatten()
                    .map(|summary| summary.scopes)
                    .unwrap_or_default();
                let scopes = step_up_scopes(&granted, required.as_deref());
                let options = StartOptions {
                    challenge: challenge.clone(),
                    scopes: Some(scopes.clone()),
                    resume: Some(resume(step_ups + 1)),
                };
                let reason = OfferReason::StepUp { scopes };
                return offer_connect(bot, from, me, gateway, server, reason, options, done).await;
            }
            CallError::InsufficientScope { required, .. } => {
                done.release();
                let text = wording::step_up_exhausted(server, required.as_deref());
                return send::text(bot, from.chat, &text).await;
            }
            _ => {}
        }
    }
    done.release();
    send::text(bot, from.chat, &wording::call_failed(server, &error)).await
}

/// What a browser lists, as the server listed it.
enum Listed {
    Tools(Vec<rmcp::model::Tool>),
    Resources(Vec<rmcp::model::Resource>),
    Prompts(Vec<rmcp::model::Prompt>),
}

impl Listed {
    fn entries(&self) -> Vec<Entry> {
        match self {
            Listed::Tools(tools) => render::tool_entries(tools),
            Listed::Resources(resources) => render::resource_entries(resources),
            Listed::Prompts(prompts) => render::prompt_entries(prompts),
        }
    }
}

async fn fetch(
    gateway: &Gateway,
    user_id: u64,
    server: &ServerConfig,
    listing: Listing,
) -> Result<Listed, CallError> {
    Ok(match listing {
        Listing::Tools => Listed::Tools(gateway.list_tools(user_id, server).await?),
        Listing::Resources => Listed::Resources(gateway.list_resources(user_id, server).await?),
        Listing::Prompts => Listed::Prompts(gateway.list_prompts(user_id, server).await?),
    })
}

/// A page of a browser: its text and its keyboard (a button per entry,
/// then the page turns).
fn browse_page(
    listing: Listing,
    server: &ServerConfig,
    entries: &[Entry],
    page: usize,
) -> (String, Vec<Vec<(String, String)>>) {
    let page = render::list_page(listing, &server.name, entries, page);
    let mut rows: Vec<Vec<(String, String)>> = page
        .buttons
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .map(|(label, index)| {
                    (
                        label.clone(),
                        commands::pick_data(listing, &server.id, *index),
                    )
                })
                .collect()
        })
        .collect();
    let mut turns = Vec::new();
    if let Some(previous) = page.previous {
        turns.push((
            wording::PREVIOUS_PAGE.to_owned(),
            commands::page_data(listing, &server.id, previous),
        ));
    }
    if let Some(next) = page.next {
        turns.push((
            wording::NEXT_PAGE.to_owned(),
            commands::page_data(listing, &server.id, next),
        ));
    }
    if !turns.is_empty() {
        rows.push(turns);
    }
    (page.text, rows)
}

/// A tap in a browser: turn the page in place, show a tool's parameters,
/// send a resource, fill in a prompt, or start a guided call. The list is
/// asked again (the session is warm), so a tap on an old message acts on
/// the server's entries as they are now.
pub async fn browse_tap(
    bot: TgBot,
    query: CallbackQuery,
    me: Me,
    gateway: Arc<Gateway>,
    chats: Chats,
    tap: BrowseTap,
) -> HandlerResult {
    let _ = bot.answer_callback_query(query.id.clone()).await;
    let Some(message) = query.message.as_ref() else {
        return Ok(());
    };
    let (chat, message_id) = (message.chat().id, message.id());
    let user_id = query.from.id.0;
    let server = tap.server().clone();
    let listing = tap.listing();
    let label = format!("/{} {}", wording::listing_command(listing), server.id);
    let ticket = match gateway.begin_command(user_id, &label).await {
        Ok(ticket) => ticket,
        Err(busy) if busy.told => return Ok(()),
        Err(busy) => return send::text(&bot, chat, &wording::still_working(&busy)).await,
    };
    let ticket = Ticket(Arc::new(Mutex::new(Some(ticket))));
    in_background(ticket, move |done| async move {
        let listed = match fetch(&gateway, user_id, &server, listing).await {
            Ok(listed) => listed,
            Err(error) => {
                done.release();
                return send::text(&bot, chat, &wording::call_failed(&server, &error)).await;
            }
        };
        match (tap, listed) {
            (BrowseTap::Page { page, .. }, listed) => {
                done.release();
                let (text, rows) = browse_page(listing, &server, &listed.entries(), page);
                send::edit_with_buttons(&bot, chat, message_id, &text, rows).await
            }
            (BrowseTap::Pick { index, .. }, Listed::Tools(tools)) => {
                done.release();
                match render::sorted(&tools).get(index) {
                    Some(tool) => {
                        let text = render::tool_details(&server.id, tool);
                        let run = commands::run_data(&server.id, index);
                        let rows = vec![vec![(wording::RUN_TOOL_BUTTON.to_owned(), run)]];
                        send::with_buttons(&bot, chat, &text, rows)
                            .await
                            .map(|_| ())
                    }
                    None => send::text(&bot, chat, &wording::gone(&server, listing)).await,
                }
            }
            (BrowseTap::Run { index, .. }, Listed::Tools(tools)) => {
                done.release();
                match render::sorted(&tools).get(index) {
                    Some(tool) => guide(&bot, &chats, &server, user_id, tool).await,
                    None => send::text(&bot, chat, &wording::gone(&server, listing)).await,
                }
            }
            (BrowseTap::Pick { index, .. }, Listed::Resources(resources)) => {
                let Some(resource) = render::sorted_resources(&resources).get(index).copied()
                else {
                    done.release();
                    return send::text(&bot, chat, &wording::gone(&server, listing)).await;
                };
                let typing = Typing::start(&bot, chat);
                let read = gateway
                    .read_resource(user_id, &server, &resource.uri, None)
                    .await;
                drop(typing);
                done.release();
                match read {
                    Ok(read) => {
                        send::outgoing(&bot, chat, results::resource_contents(&read.contents)).await
                    }
                    Err(error) => {
                        send::text(&bot, chat, &wording::call_failed(&server, &error)).await
                    }
                }
            }
            (BrowseTap::Pick { index, .. }, Listed::Prompts(prompts)) => {
                done.release();
                match render::sorted_prompts(&prompts).get(index) {
                    Some(prompt) => {
                        fill_prompt(&bot, &me, &gateway, &chats, &server, user_id, prompt).await
                    }
                    None => send::text(&bot, chat, &wording::gone(&server, listing)).await,
                }
            }
            _ => Ok(()),
        }
    })
}

/// A prompt's arguments asked like a guided call's; a prompt without any
/// is fetched at once.
async fn fill_prompt(
    bot: &TgBot,
    me: &Me,
    gateway: &Arc<Gateway>,
    chats: &Chats,
    server: &Arc<ServerConfig>,
    user_id: u64,
    prompt: &rmcp::model::Prompt,
) -> HandlerResult {
    let chat = ChatId(user_id as i64);
    let arguments = prompt.arguments.clone().unwrap_or_default();
    if arguments.is_empty() {
        let ending = Ending::Prompt {
            server: server.clone(),
            name: prompt.name.clone(),
            arguments: Default::default(),
        };
        return finish_dialogue(
            bot.clone(),
            me.clone(),
            gateway.clone(),
            chats.clone(),
            user_id,
            Some(ending),
        )
        .await;
    }
    let schema = Arc::new(crate::mcp::Schema::new(Arc::new(prompt_schema(&arguments))));
    let d = Dialogue::new(
        chat,
        server.clone(),
        wording::prompt_intro(server, &prompt.name),
        Body::Form(crate::gateway::form::Form::new(schema)),
        Purpose::Prompt {
            name: prompt.name.clone(),
        },
    );
    ask::start(bot, &chats.dialogues, user_id, d)
        .await
        .map(|_| ())
}

/// A prompt's arguments as the schema of an object of strings.
fn prompt_schema(arguments: &[rmcp::model::PromptArgument]) -> rmcp::model::JsonObject {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for argument in arguments {
        let mut property = serde_json::Map::new();
        property.insert("type".into(), "string".into());
        if let Some(title) = &argument.title {
            property.insert("title".into(), title.clone().into());
        }
        if let Some(description) = &argument.description {
            property.insert("description".into(), description.clone().into());
        }
        properties.insert(argument.name.clone(), property.into());
        if argument.required == Some(true) {
            required.push(serde_json::Value::from(argument.name.clone()));
        }
    }
    let mut schema = serde_json::Map::new();
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), properties.into());
    schema.insert("required".into(), required.into());
    schema
}

/// `/cancel`: leaves the sender's open dialogue (a server's question is
/// answered "cancel"), or else stops their running call. It bypasses the
/// one-command gate, which the call it stops is holding.
pub async fn cancel(
    bot: TgBot,
    msg: Message,
    chats: Chats,
    gateway: Arc<Gateway>,
    update: Update,
) -> HandlerResult {
    let user_id = sender(&msg);
    if let Some(open) = chats.dialogues.get(user_id) {
        let mut d = open.lock().await;
        let step = d.apply(Verb::Cancel);
        ask::advance(&bot, &chats.dialogues, user_id, &mut d, step, None).await?;
        return Ok(());
    }
    // A dialogue another replica holds is left there.
    if gateway.hand_over(user_id, &update).await {
        return Ok(());
    }
    // The call may run on another replica, which then says it stopped.
    if !chats.running.cancel(user_id, None) && !gateway.cancel_elsewhere(user_id, None).await {
        send::text(&bot, msg.chat.id, wording::NOTHING_TO_CANCEL).await?;
    }
    Ok(())
}

/// `/forget`: asks first, with buttons (only the asker's tap counts).
pub async fn forget(bot: TgBot, msg: Message) -> HandlerResult {
    let rows = vec![vec![
        (
            wording::FORGET_BUTTON.to_owned(),
            commands::FORGET_CONFIRMED.to_owned(),
        ),
        (
            wording::CANCEL_BUTTON.to_owned(),
            commands::FORGET_KEPT.to_owned(),
        ),
    ]];
    send::with_buttons(&bot, msg.chat.id, wording::FORGET_QUESTION, rows)
        .await
        .map(|_| ())
}

/// A tap on /forget's buttons: the tapping user's own data only.
pub async fn forget_tap(
    bot: TgBot,
    query: CallbackQuery,
    gateway: Arc<Gateway>,
    confirmed: bool,
) -> HandlerResult {
    let _ = bot.answer_callback_query(query.id.clone()).await;
    let Some(message) = query.message.as_ref() else {
        return Ok(());
    };
    let (chat, id) = (message.chat().id, message.id());
    if !confirmed {
        return send::edit_with_buttons(&bot, chat, id, wording::FORGET_KEPT, Vec::new()).await;
    }
    let user_id = query.from.id.0;
    let Ok(ticket) = gateway.begin_command(user_id, "/forget").await else {
        return Ok(());
    };
    let ticket = Ticket(Arc::new(Mutex::new(Some(ticket))));
    in_background(ticket, move |done| async move {
        let text = match gateway.forget_user(user_id).await {
            Ok(unrevoked) => wording::forgotten(&unrevoked),
            Err(error) => {
                tracing::error!(user = user_id, error = %chain(&error), "could not forget a user");
                wording::STORAGE_TROUBLE.to_owned()
            }
        };
        done.release();
        send::edit_with_buttons(&bot, chat, id, &text, Vec::new()).await
    })
}

/// A tap on a running call's Cancel button; only its caller may.
pub async fn cancel_tap(
    bot: TgBot,
    query: CallbackQuery,
    chats: Chats,
    gateway: Arc<Gateway>,
    id: String,
) -> HandlerResult {
    let user_id = query.from.id.0;
    let cancelled = chats.running.cancel(user_id, Some(&id))
        || gateway.cancel_elsewhere(user_id, Some(&id)).await;
    let mut answer = bot.answer_callback_query(query.id.clone());
    if cancelled {
        answer = answer.text(wording::CANCELLING);
    }
    let _ = answer.await;
    Ok(())
}

/// A tap on "New link" under an expired one.
pub async fn new_link(
    bot: TgBot,
    query: CallbackQuery,
    me: Me,
    gateway: Arc<Gateway>,
    server: Arc<ServerConfig>,
) -> HandlerResult {
    let _ = bot.answer_callback_query(query.id.clone()).await;
    let Some(chat) = query.message.as_ref().map(|m| m.chat().clone()) else {
        return Ok(());
    };
    let from = Origin::of_user(&query.from, chat.id, chat.is_private());
    let Ok(ticket) = gateway
        .begin_command(from.user_id, &format!("/connect {}", server.id))
        .await
    else {
        return Ok(());
    };
    let ticket = Ticket(Arc::new(Mutex::new(Some(ticket))));
    in_background(ticket, |done| async move {
        offer_connect(
            &bot,
            &from,
            &me,
            &gateway,
            &server,
            OfferReason::Asked,
            StartOptions::default(),
            done,
        )
        .await
    })
}

/// Who asked, and where.
struct Origin {
    user_id: u64,
    /// How the start page names them.
    requester: String,
    chat: ChatId,
    private: bool,
}

impl Origin {
    fn of_message(msg: &Message) -> Self {
        match &msg.from {
            Some(user) => Self::of_user(user, msg.chat.id, msg.chat.is_private()),
            None => Self {
                user_id: 0,
                requester: String::new(),
                chat: msg.chat.id,
                private: msg.chat.is_private(),
            },
        }
    }

    fn of_user(user: &User, chat: ChatId, private: bool) -> Self {
        let requester = match &user.username {
            Some(username) => format!("@{username}"),
            None => user.full_name(),
        };
        Self {
            user_id: user.id.0,
            requester,
            chat,
            private,
        }
    }
}

/// Starts a flow and sends its link to the user's private chat. In a group
/// the link is never posted: the group gets a pointer instead.
#[allow(clippy::too_many_arguments)]
async fn offer_connect(
    bot: &TgBot,
    from: &Origin,
    me: &Me,
    gateway: &Gateway,
    server: &Arc<ServerConfig>,
    reason: OfferReason,
    options: StartOptions,
    done: Done,
) -> HandlerResult {
    if !server.is_oauth() {
        done.release();
        return send::text(bot, from.chat, &wording::no_sign_in(server)).await;
    }
    // The flow belongs to the private chat: that is where the link goes
    // and where its outcome is told, whatever chat the command came from.
    let private_chat = ChatId(from.user_id as i64);
    let owner = FlowOwner {
        user_id: from.user_id,
        chat_id: private_chat.0,
    };
    // A known server's link is ready in milliseconds (discovery's answers
    // are kept), so usually without "typing…".
    let typing = Typing::start(bot, from.chat);
    let offer = gateway
        .start_connect_with(owner, &from.requester, server, options)
        .await;
    drop(typing);
    done.release();
    let offer = match offer {
        Ok(offer) => offer,
        Err(error) => {
            return send::text(
                bot,
                from.chat,
                &wording::connect_not_started(server, &error),
            )
            .await;
        }
    };
    let label = wording::connect_button(server);
    let button = match &offer.link {
        FlowLink::TelegramLogin(url) => LinkButton::Login {
            label: &label,
            url: url.expose(),
        },
        FlowLink::Direct(url) | FlowLink::StartPage(url) => LinkButton::Url {
            label: &label,
            url: url.expose(),
        },
    };
    let sent = send::link(
        bot,
        private_chat,
        &wording::connect_offer(&offer, &reason),
        button,
    )
    .await;
    if let Ok(message) = &sent {
        gateway
            .link_sent(
                &offer.flow_id,
                ChatMessage {
                    chat_id: private_chat.0,
                    message_id: message.id.0,
                },
            )
            .await;
    }
    if from.private {
        return sent.map(|_| ());
    }
    match sent {
        Ok(_) => send::text(bot, from.chat, wording::SENT_PRIVATELY).await,
        Err(error) if send::is_forbidden(&error) => {
            let deep_link = format!(
                "https://t.me/{}?start={}",
                me.username(),
                commands::start_payload_for_connect(&server.id)
            );
            let Ok(url) = deep_link.parse() else {
                return send::text(bot, from.chat, wording::OPEN_PRIVATE_CHAT).await;
            };
            let markup = InlineKeyboardMarkup::new([[InlineKeyboardButton::url(
                wording::START_PRIVATE_CHAT_BUTTON,
                url,
            )]]);
            bot.paced(
                from.chat,
                bot.send_message(from.chat, wording::START_PRIVATE_CHAT)
                    .reply_markup(markup),
            )
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
