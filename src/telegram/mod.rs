//! Everything that speaks Telegram. Nothing else in the crate imports
//! teloxide: the rest of the bot sees [`Telegram`] and the
//! [`crate::notify::ChatNotifier`] it provides.
//!
//! - [`commands`]: the command menu and argument parsing.
//! - [`handlers`]: one endpoint per request, thin over `oauth` and `mcp`.
//! - [`send`] and [`format`]: chunking, link buttons, no previews.
//! - [`notifier`]: tells a chat how its authorization flow ended.

pub mod commands;
pub mod format;
pub mod handlers;
pub mod notifier;
pub mod send;

use std::future::Future;
use std::sync::Arc;

use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::utils::command::BotCommands;

use crate::config::{Config, TelegramConfig};
use crate::mcp::McpHub;
use crate::notify::ChatNotifier;
use crate::oauth::Connector;

/// What every handler needs.
pub struct Ctx {
    pub config: Arc<Config>,
    pub connector: Arc<Connector>,
    pub hub: Arc<McpHub>,
    pub bot_username: String,
}

impl Ctx {
    fn is_allowed(&self, user_id: u64) -> bool {
        let allowed = &self.config.telegram.allowed_users;
        allowed.is_empty() || allowed.contains(&user_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("Telegram rejected the bot token (check telegram.token): {0}")]
    Token(String),
    #[error("cannot reach the Telegram Bot API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Telegram refused the command menu: {0}")]
    Commands(String),
}

/// A bot that has checked its token with `getMe`.
pub struct Telegram {
    bot: Bot,
    username: String,
}

impl Telegram {
    pub async fn connect(config: &TelegramConfig) -> Result<Self, TelegramError> {
        let bot = Bot::new(config.token.expose()).set_api_url(config.api_url.clone());
        let me = bot.get_me().await.map_err(|error| match error {
            teloxide::RequestError::Api(api) => TelegramError::Token(api.to_string()),
            other => TelegramError::Unreachable {
                url: config.api_url.to_string(),
                reason: other.to_string(),
            },
        })?;
        let username = me.username.clone().unwrap_or_default();
        bot.set_my_commands(commands::Command::bot_commands())
            .await
            .map_err(|error| TelegramError::Commands(error.to_string()))?;
        tracing::info!(bot = %username, "connected to Telegram");
        Ok(Self { bot, username })
    }

    pub fn notifier(&self) -> Arc<dyn ChatNotifier> {
        Arc::new(notifier::TelegramNotifier::new(self.bot.clone()))
    }

    /// Long-polls for updates until `shutdown` completes.
    pub async fn run(
        self,
        config: Arc<Config>,
        connector: Arc<Connector>,
        hub: Arc<McpHub>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let ctx = Arc::new(Ctx {
            config,
            connector,
            hub,
            bot_username: self.username.clone(),
        });
        let mut dispatcher = Dispatcher::builder(self.bot, schema())
            .dependencies(dptree::deps![ctx])
            // One queue per user, not per chat: a slow server holds up only
            // the user who called it, even in a shared group.
            .distribution_function(|update: &Update| update.from().map(|user| user.id))
            .default_handler(|_| async {})
            .build();
        let token = dispatcher.shutdown_token();
        let stopper = tokio::spawn(async move {
            shutdown.await;
            // `shutdown` fails while the dispatcher is not running yet;
            // the task is aborted once it has stopped.
            loop {
                match token.shutdown() {
                    Ok(done) => return done.await,
                    Err(_idle) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
        });
        dispatcher.dispatch().await;
        stopper.abort();
    }
}

fn schema() -> UpdateHandler<teloxide::RequestError> {
    Update::filter_message().endpoint(handlers::on_message)
}
