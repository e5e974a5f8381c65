//! The Telegram adapter. Nothing else in the crate imports teloxide: the
//! rest of the bot sees [`Telegram`] and the
//! [`crate::gateway::ChatNotifier`] it provides.
//!
//! - [`schema`]: which message goes to which endpoint, as one table.
//! - [`commands`]: the command menu, reading arguments into requests, and
//!   the callback data of every button (always within 64 bytes).
//! - [`endpoints`]: one thin function per request, over the core.
//! - [`wording`]: every sentence the bot writes; [`render`]: browser pages
//!   and a tool's details; [`results`]: results, resources and prompts as
//!   messages (HTML, photos, audio, documents).
//! - [`running`]: a call while it runs (status, progress, Cancel);
//!   [`dialogue`] and [`ask`]: questions one at a time (guided calls,
//!   servers' elicitation, consent, `/token`).
//! - [`send`] and [`format`]: chunking, link buttons, no previews;
//!   [`pace`]: every message within Telegram's flood limits; [`typing`]:
//!   "typing…" for work that takes a while.
//! - [`notifier`]: tells a chat how its authorization flow ended.
//! - [`journal`]: every webhook update recorded before it is acknowledged,
//!   so one a dying replica leaves is answered by another.

pub mod ask;
pub mod commands;
pub mod dialogue;
pub mod endpoints;
pub mod format;
pub mod journal;
pub mod notifier;
pub mod pace;
pub mod render;
pub mod results;
pub mod running;
pub mod schema;
pub mod send;
pub mod typing;
pub mod wording;

use std::future::Future;
use std::sync::Arc;

use teloxide::error_handlers::LoggingErrorHandler;
use teloxide::prelude::*;
use teloxide::update_listeners;
use teloxide::utils::command::BotCommands;

use crate::config::TelegramConfig;
use crate::gateway::{ChatNotifier, Gateway};
use crate::logging::chain;

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("Telegram rejected the bot token (check telegram.token)")]
    Token(#[source] teloxide::RequestError),
    #[error("cannot reach the Telegram Bot API at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: teloxide::RequestError,
    },
    #[error("Telegram refused the command menu")]
    Commands(#[source] teloxide::RequestError),
    #[error("Telegram refused the webhook (check http.public_url)")]
    Webhook(#[source] teloxide::RequestError),
}

/// How long the dispatcher may take to stop once asked: its long poll
/// (10 s) and the handlers under way.
const DISPATCHER_STOP: std::time::Duration = std::time::Duration::from_secs(15);

/// The bot as every endpoint has it. Messages go through [`TgBot::paced`]
/// ([`pace`]: Telegram's flood limits, 429s waited out and sent again);
/// other calls (edits, callback answers, chat actions) go straight to
/// the Bot API through `Deref`.
#[derive(Clone)]
pub struct TgBot {
    bot: Bot,
    pace: Arc<pace::Pace>,
}

impl TgBot {
    pub fn new(bot: Bot, limits: pace::Limits) -> Self {
        Self {
            bot,
            pace: pace::Pace::new(limits),
        }
    }

    /// Sends a message-creating `request` to `chat` within the flood
    /// limits.
    pub async fn paced<R>(
        &self,
        chat: ChatId,
        request: R,
    ) -> Result<teloxide::requests::Output<R>, teloxide::RequestError>
    where
        R: teloxide::requests::Request<Err = teloxide::RequestError>,
    {
        self.pace.send(chat, request).await
    }
}

impl std::ops::Deref for TgBot {
    type Target = Bot;

    fn deref(&self) -> &Bot {
        &self.bot
    }
}

struct Probe(Bot);

impl crate::gateway::ready::Dependency for Probe {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match tokio::time::timeout(std::time::Duration::from_secs(5), self.0.get_me()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(chain(&error).to_string()),
                Err(_) => Err("getMe did not answer within 5 s".to_owned()),
            }
        })
    }
}

/// A bot that has checked its token with `getMe`.
pub struct Telegram {
    bot: TgBot,
    me: teloxide::types::Me,
    allowed: schema::AllowedUsers,
    /// Commands whose authorization just completed: the notifier queues
    /// them, [`Telegram::run`] runs them.
    resumes: notifier::Resumes,
    /// Calls running now, for their Cancel buttons.
    running: Arc<running::Running>,
    /// Questions open in private chats.
    dialogues: Arc<dialogue::Dialogues>,
}

impl Telegram {
    pub async fn connect(config: &TelegramConfig) -> Result<Self, TelegramError> {
        crate::tls::install();
        let bot = Bot::new(config.token.expose()).set_api_url(config.api_url.clone());
        let me = bot.get_me().await.map_err(|error| match error {
            teloxide::RequestError::Api(_) => TelegramError::Token(error),
            other => TelegramError::Unreachable {
                url: config.api_url.to_string(),
                source: other,
            },
        })?;
        bot.set_my_commands(commands::Command::bot_commands())
            .await
            .map_err(TelegramError::Commands)?;
        tracing::info!(bot = %me.username(), "connected to Telegram");
        let bot = TgBot::new(
            bot,
            pace::Limits {
                overall_per_second: config.messages_per_second,
                ..pace::Limits::default()
            },
        );
        Ok(Self {
            bot,
            me,
            allowed: schema::AllowedUsers(config.allowed_users.clone().into()),
            resumes: notifier::Resumes::new(),
            running: Arc::default(),
            dialogues: Arc::default(),
        })
    }

    /// `/readyz`'s check of the Bot API: `getMe` answers.
    pub fn probe(&self) -> Arc<dyn crate::gateway::ready::Dependency> {
        Arc::new(Probe(self.bot.bot.clone()))
    }

    /// The calls running on this replica, for cancels that reach another.
    pub fn running(&self) -> Arc<running::Running> {
        self.running.clone()
    }

    pub fn notifier(&self) -> Arc<dyn ChatNotifier> {
        Arc::new(notifier::TelegramNotifier::new(
            self.bot.clone(),
            self.resumes.sender(),
        ))
    }

    /// Receives updates until `shutdown` completes: by long polling, or
    /// through `webhook` (its route is handed to the HTTP server, which
    /// serves it from the slot).
    pub async fn run(
        self,
        gateway: Arc<Gateway>,
        shutdown: impl Future<Output = ()> + Send + 'static,
        webhook: Option<Webhook>,
        grace: std::time::Duration,
    ) -> Result<(), TelegramError> {
        if let Some(mut waiting) = self.resumes.take_receiver() {
            let (bot, me, gateway) = (self.bot.clone(), self.me.clone(), gateway.clone());
            let chats = endpoints::Chats {
                running: self.running.clone(),
                dialogues: self.dialogues.clone(),
            };
            tokio::spawn(async move {
                while let Some(resumption) = waiting.recv().await {
                    let (bot, me, gateway) = (bot.clone(), me.clone(), gateway.clone());
                    endpoints::resume(bot, me, gateway, chats.clone(), resumption).await;
                }
            });
        }
        // Replies that reached another replica than this one, which holds
        // their user's dialogue, handled as if straight from Telegram.
        self.dialogues.announce_to(gateway.handoffs());
        let (handed, mut handed_over) = tokio::sync::mpsc::unbounded_channel();
        let listening = gateway.handoffs().listen(Box::new(move |update| {
            let _ = handed.send(update);
        }));
        let handling = {
            let deps = dptree::deps![
                self.bot.clone(),
                gateway.clone(),
                self.allowed.clone(),
                endpoints::Chats {
                    running: self.running.clone(),
                    dialogues: self.dialogues.clone(),
                },
                self.me.clone(),
                self.bot.bot.clone()
            ];
            tokio::spawn(async move {
                let handler = schema::schema();
                while let Some(value) = handed_over.recv().await {
                    // From text: teloxide reads an update from a `Value`
                    // as an unknown kind.
                    let update: Update = match serde_json::from_str(&value.to_string()) {
                        Ok(update) => update,
                        Err(error) => {
                            tracing::warn!(%error, "a handed-over update is unreadable; dropped");
                            continue;
                        }
                    };
                    let mut deps = deps.clone();
                    deps.insert(update);
                    if let std::ops::ControlFlow::Break(Err(error)) = handler.dispatch(deps).await {
                        crate::metrics::telegram_error();
                        tracing::warn!(error = %chain(&error), "a reply could not be sent");
                    }
                }
            })
        };
        let pace = self.bot.pace.clone();
        let shrinker = tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                every.tick().await;
                pace.shrink();
            }
        });
        let journal = gateway.update_journal();
        let holds = journal::Holds::new(journal.clone());
        // Renewed until the commands under way have ended, below.
        let sweeping = webhook
            .as_ref()
            .map(|_| tokio::spawn(journal::keep_and_sweep(self.bot.clone(), journal.clone())));
        let mut dispatcher = Dispatcher::builder(self.bot.bot.clone(), schema::schema())
            .dependencies(dptree::deps![
                self.bot.clone(),
                gateway,
                holds.clone(),
                self.allowed,
                endpoints::Chats {
                    running: self.running,
                    dialogues: self.dialogues,
                }
            ])
            // One queue per user, not per chat: a slow server holds up only
            // the user who called it, even in a shared group.
            .distribution_function(|update: &Update| update.from().map(|user| user.id))
            .default_handler(|_| async {})
            .error_handler(Arc::new(|error: teloxide::RequestError| async move {
                crate::metrics::telegram_error();
                tracing::warn!(error = %chain(&error), "a reply could not be sent");
            }))
            .build();
        let token = dispatcher.shutdown_token();
        let (asked, stop_asked) = tokio::sync::oneshot::channel::<()>();
        let stopper = tokio::spawn(async move {
            shutdown.await;
            let _ = asked.send(());
            // `shutdown` fails while the dispatcher is not running yet;
            // the task is aborted once it has stopped.
            loop {
                match token.shutdown() {
                    Ok(done) => return done.await,
                    Err(_idle) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        });
        let dispatching = async {
            match webhook {
                None => {
                    // Deletes any webhook first: switching back to polling works.
                    let listener = update_listeners::polling_default(self.bot.bot.clone()).await;
                    dispatcher
                        .try_dispatch_with_listener(
                            listener,
                            LoggingErrorHandler::with_custom_text("polling Telegram failed"),
                        )
                        .await
                        .map_err(|source| TelegramError::Unreachable {
                            url: "the Bot API".to_owned(),
                            source,
                        })
                }
                Some(webhook) => {
                    let mut options = update_listeners::webhooks::Options::new(
                        // Unused: the HTTP server is the bot's own.
                        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                        webhook.url.clone(),
                    )
                    .path(WEBHOOK_PATH.to_owned());
                    options.secret_token = Some(webhook.secret.expose().to_owned());
                    let (listener, stopped, router) =
                        update_listeners::webhooks::axum_no_setup(options);
                    // Recorded before acknowledged, renewed while handled.
                    let router = router.layer(axum::middleware::from_fn_with_state(
                        journal::Intake {
                            holds,
                            secret: webhook.secret.clone(),
                        },
                        journal::intake,
                    ));
                    *webhook.slot.write().unwrap_or_else(|p| p.into_inner()) = Some(router);
                    // Once the dispatcher stops the listener, the route goes,
                    // and with it the sender of the update queue: the queue
                    // ends and the dispatcher can finish.
                    let slot = webhook.slot.clone();
                    tokio::spawn(async move {
                        stopped.await;
                        slot.write().unwrap_or_else(|p| p.into_inner()).take();
                    });
                    // Set here, not deleted at shutdown: another replica may be
                    // taking the updates by then.
                    let set = self
                        .bot
                        .set_webhook(webhook.url.clone())
                        .secret_token(webhook.secret.expose().to_owned())
                        .await;
                    match set {
                        Ok(_) => {
                            tracing::info!("receiving updates by webhook");
                            dispatcher
                                .dispatch_with_listener(
                                    listener,
                                    LoggingErrorHandler::with_custom_text(
                                        "webhook listener failed",
                                    ),
                                )
                                .await;
                            Ok(())
                        }
                        Err(source) => Err(TelegramError::Webhook(source)),
                    }
                }
            }
        };
        // Once asked to stop, the dispatcher ends after the listener's
        // last long poll and the handlers under way; should it not, within
        // a bound, the commands under way are seen to all the same.
        let overdue = async {
            match stop_asked.await {
                Ok(()) => tokio::time::sleep(DISPATCHER_STOP).await,
                Err(_) => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = dispatching => result,
            () = overdue => {
                tracing::warn!(
                    secs = DISPATCHER_STOP.as_secs(),
                    "the update listener did not stop in time; going on without it"
                );
                Ok(())
            }
        };
        stopper.abort();
        shrinker.abort();
        if let Some(listening) = listening {
            listening.abort();
        }
        handling.abort();
        // No more updates: let the commands under way finish and answer.
        endpoints::IN_FLIGHT.close();
        let running = endpoints::IN_FLIGHT.len();
        if running > 0 {
            tracing::info!(
                running,
                grace_secs = grace.as_secs(),
                "waiting for commands under way"
            );
            if tokio::time::timeout(grace, endpoints::IN_FLIGHT.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    left = endpoints::IN_FLIGHT.len(),
                    "commands still running at the end of the grace period are stopped"
                );
            }
        }
        if let Some(sweeping) = sweeping {
            sweeping.abort();
        }
        // What ended is written before the process goes, so no other
        // replica takes it for cut short.
        journal.flush().await;
        result
    }
}

/// Where Telegram POSTs updates in webhook mode, under `http.public_url`.
pub const WEBHOOK_PATH: &str = "/telegram/webhook";

/// Webhook delivery: the public URL to register, the secret Telegram must
/// send back, and the slot the HTTP server takes the route from.
pub struct Webhook {
    pub url: url::Url,
    pub secret: crate::secret::Secret,
    pub slot: Arc<std::sync::RwLock<Option<axum::Router>>>,
}
