//! Logging in from the terminal: a callback on loopback (RFC 8252), the
//! authorization URL printed for a person, or followed by the command
//! itself (`--open-with-http`) for servers that approve without one.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{AuthOptions, TERMINAL_USER};
use crate::config::{Config, ServerConfig};
use crate::gateway::{ChatNotifier, ConnectionSummary, FlowReport, Gateway, Notice, StartOptions};
use crate::http::{self, HttpState};
use crate::logging::chain;
use crate::store::FlowOwner;

#[derive(Debug, Clone, Default)]
pub struct LoginOptions {
    /// Follow the authorization URL with an HTTP client instead of asking
    /// a person to open it.
    pub open_with_http: bool,
    /// `tools` and `call`: log in when the server asks for it.
    pub login: bool,
    /// The callback's port (default: any free one).
    pub port: Option<u16>,
    pub auth: AuthOptions,
    /// How servers' elicitation requests are answered.
    pub elicitation: crate::mcp::client::Elicitation,
}

/// How a flow the terminal started ended.
#[derive(Debug)]
pub enum Outcome {
    Connected,
    Failed(String),
}

/// What a finished login reports.
pub struct LoginResult {
    pub report: FlowReport,
    pub summary: Option<ConnectionSummary>,
}

/// The loopback callback: its listener until served, and where finished
/// flows are reported.
pub struct Callback {
    listener: std::sync::Mutex<Option<TcpListener>>,
    redirect: String,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Callback {
    pub async fn bind(config: &Config) -> Result<(Self, mpsc::UnboundedReceiver<Outcome>), String> {
        let listener = TcpListener::bind(config.http.listen)
            .await
            .map_err(|error| {
                format!(
                    "cannot listen on {} for the callback: {error}",
                    config.http.listen
                )
            })?;
        let bound = listener
            .local_addr()
            .map_err(|error| format!("no callback address: {error}"))?;
        let (outcomes, done) = mpsc::unbounded_channel();
        Ok((
            Self {
                listener: std::sync::Mutex::new(Some(listener)),
                redirect: crate::app::redirect_uri(config, bound),
                outcomes,
            },
            done,
        ))
    }

    pub fn redirect_uri(&self) -> String {
        self.redirect.clone()
    }

    pub fn notifier(&self) -> Arc<dyn ChatNotifier> {
        Arc::new(TerminalNotifier {
            outcomes: self.outcomes.clone(),
        })
    }

    /// Serves the callback (the bot's own HTTP adapter) in the background.
    pub fn serve(&self, gateway: Arc<Gateway>) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(listener) = listener {
            tokio::spawn(async move {
                let _ = axum::serve(
                    listener,
                    http::router(
                        HttpState {
                            gateway,
                            dependencies: Vec::new(),
                            webhook: None,
                        },
                        false,
                    ),
                )
                .await;
            });
        }
    }

    /// One flow, start to end.
    pub async fn run(
        &self,
        gateway: &Gateway,
        server: &Arc<ServerConfig>,
        options: &LoginOptions,
        start: StartOptions,
        done: &mut mpsc::UnboundedReceiver<Outcome>,
    ) -> Result<LoginResult, String> {
        let owner = FlowOwner {
            user_id: TERMINAL_USER,
            chat_id: 0,
        };
        let offer = gateway
            .start_connect_with(owner, "the terminal", server, start)
            .await
            .map_err(|error| format!("cannot start signing in: {}", chain(&error)))?;
        let url = offer.link.url().expose();
        if options.open_with_http {
            follow(url).await?;
        } else {
            eprintln!("Open this address in a browser to sign in:\n\n{url}\n");
        }
        let outcome = tokio::time::timeout(offer.expires_in, done.recv())
            .await
            .map_err(|_| "the sign-in was not completed in time".to_owned())?;
        match outcome {
            Some(Outcome::Connected) => Ok(LoginResult {
                report: offer.report,
                summary: gateway
                    .connection_summary(TERMINAL_USER, server)
                    .await
                    .ok()
                    .flatten(),
            }),
            Some(Outcome::Failed(why)) => Err(why),
            None => Err("the callback stopped".to_owned()),
        }
    }
}

/// Opens `url` as a browser would for a server that approves at once:
/// GETs it and follows redirects, ending at the callback.
async fn follow(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|error| format!("no HTTP client: {error}"))?;
    client.get(url).send().await.map(|_| ()).map_err(|error| {
        format!(
            "following the authorization URL failed: {}",
            crate::logging::scrub(&chain(&error).to_string())
        )
    })
}

/// Reports finished flows to the waiting command.
struct TerminalNotifier {
    outcomes: mpsc::UnboundedSender<Outcome>,
}

#[async_trait::async_trait]
impl ChatNotifier for TerminalNotifier {
    async fn notify(&self, notice: Notice<'_>) {
        let outcome = match notice {
            Notice::Connected { .. } => Outcome::Connected,
            Notice::ConnectFailed { error, .. } => Outcome::Failed(format!(
                "signing in failed: {}",
                crate::logging::scrub(&chain(error).to_string())
            )),
            Notice::LinkMisused { .. } => {
                Outcome::Failed("signing in was finished in another browser".to_owned())
            }
            Notice::LinkExpired { .. } => Outcome::Failed("the sign-in link expired".to_owned()),
        };
        let _ = self.outcomes.send(outcome);
    }
}
