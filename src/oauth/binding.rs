//! Binding the browser that completes a flow to the Telegram user who
//! asked for it (login CSRF).
//!
//! Without it, a link forwarded to someone else attaches *their* account
//! to the requester's chat. Hosted, the connect button opens the bot's own
//! start page instead of the authorization server:
//!
//! - with Telegram Login (`telegram.login_url`), Telegram signs who tapped;
//!   only the requester gets through;
//! - otherwise the page names the requester, and only a POST from that
//!   page (never a GET: previews and crawlers GET) lets a browser through.
//!
//! Either way the browser let through gets an HttpOnly, SameSite=Lax cookie
//! bound to the flow, and the callback refuses a browser without it, so
//! the authorization server's URL is useless anywhere else. On loopback
//! (personal use) the link goes straight to the authorization server:
//! Telegram refuses `localhost` buttons, and `state` plus delivery in the
//! private chat are the binding.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Connector;
use super::callback::FlowRef;
use super::telegram_login::{self, LoginError, TelegramLogin};
use crate::config::Config;
use crate::secret::Secret;
use crate::store::{BindError, PendingFlow, StoreError, TakeError};

/// How a flow's browser is bound, from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Loopback,
    StartPage,
    TelegramLogin,
}

impl Binding {
    pub fn of(config: &Config) -> Self {
        match (config.is_hosted(), config.telegram.login_url) {
            (false, _) => Binding::Loopback,
            (true, false) => Binding::StartPage,
            (true, true) => Binding::TelegramLogin,
        }
    }
}

/// The cookie that ties a browser to a flow.
#[derive(Debug)]
pub struct BindingCookie {
    pub name: String,
    pub value: Secret,
    pub max_age: Duration,
    /// Sent over https only (the bot is hosted behind https).
    pub secure: bool,
}

/// The cookie's name: one per flow, so two flows in one browser (two
/// servers) do not overwrite each other.
pub fn cookie_name(start_id: &str) -> String {
    format!("mcpgram-flow-{}", start_id.get(..16).unwrap_or(start_id))
}

fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// What the start page shows before the browser is let through.
#[derive(Debug, Clone)]
pub struct StartPage {
    pub flow: FlowRef,
    pub requester: String,
    pub expires_in: Duration,
}

/// A browser let through: set the cookie, send it to the authorization
/// server.
#[derive(Debug)]
pub struct Bound {
    pub flow: FlowRef,
    pub cookie: BindingCookie,
    pub authorize_url: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("no pending flow has this start id")]
    Unknown,
    #[error("the flow expired")]
    Expired { flow: FlowRef },
    #[error("another browser already took this flow")]
    TakenByAnotherBrowser { flow: FlowRef },
    /// Telegram signed someone else than the requester.
    #[error("Telegram user {} opened another user's link", .clicked.user_id)]
    NotTheRequester {
        flow: FlowRef,
        clicked: TelegramLogin,
    },
    #[error("the Telegram login data are not usable")]
    Login(#[source] LoginError),
    /// The form was posted from another site (a forged, auto-submitted
    /// form): only the bot's own page may let a browser through.
    #[error("the start form came from another site")]
    CrossSite,
    #[error("the flow store failed")]
    Store(#[source] StoreError),
}

impl BrowserError {
    /// The flow concerned, when it was found.
    pub fn flow(&self) -> Option<&FlowRef> {
        match self {
            BrowserError::Expired { flow }
            | BrowserError::TakenByAnotherBrowser { flow }
            | BrowserError::NotTheRequester { flow, .. } => Some(flow),
            _ => None,
        }
    }
}

impl From<TakeError> for BrowserError {
    fn from(error: TakeError) -> Self {
        match error {
            TakeError::Unknown => BrowserError::Unknown,
            TakeError::Expired { owner, server_id } => BrowserError::Expired {
                flow: FlowRef { owner, server_id },
            },
            TakeError::Store(error) => BrowserError::Store(error),
        }
    }
}

fn flow_ref(flow: &PendingFlow) -> FlowRef {
    FlowRef {
        owner: flow.owner,
        server_id: flow.server_id.clone(),
    }
}

impl Connector {
    pub fn binding(&self) -> Binding {
        Binding::of(&self.config)
    }

    /// The start page of a flow; looking at it changes nothing.
    pub async fn start_page(&self, start_id: &str) -> Result<StartPage, BrowserError> {
        let flow = self.stores.flows.by_start_id(start_id).await?;
        Ok(StartPage {
            requester: flow.requester.clone(),
            expires_in: flow.remaining(),
            flow: flow_ref(&flow),
        })
    }

    /// The requester confirmed on the start page (a POST): lets this
    /// browser through, once. `same_origin` says the form was posted from
    /// the bot's own page; `presented` is the flow's cookie if the browser
    /// has it already (a second click on the same page).
    pub async fn bind_browser(
        &self,
        start_id: &str,
        same_origin: bool,
        presented: Option<String>,
    ) -> Result<Bound, BrowserError> {
        if !same_origin {
            return Err(BrowserError::CrossSite);
        }
        self.bind(start_id, presented).await
    }

    /// Telegram Login signed who tapped the button: lets their browser
    /// through if they are the requester.
    pub async fn bind_telegram_login(
        &self,
        start_id: &str,
        fields: &BTreeMap<String, String>,
        presented: Option<String>,
    ) -> Result<Bound, BrowserError> {
        let flow = self.stores.flows.by_start_id(start_id).await?;
        let login = telegram_login::verify(fields, self.config.telegram.token.expose())
            .map_err(BrowserError::Login)?;
        if login.user_id != flow.owner.user_id {
            return Err(BrowserError::NotTheRequester {
                flow: flow_ref(&flow),
                clicked: login,
            });
        }
        self.bind(start_id, presented).await
    }

    async fn bind(&self, start_id: &str, presented: Option<String>) -> Result<Bound, BrowserError> {
        let flow = self.stores.flows.by_start_id(start_id).await?;
        let secure = self
            .config
            .http
            .public_url
            .as_ref()
            .is_some_and(|url| url.scheme() == "https");
        let cookie = |value: String, flow: &PendingFlow| BindingCookie {
            name: cookie_name(flow.start_id.as_str()),
            value: Secret::new(value),
            max_age: flow.remaining(),
            secure,
        };
        // The same browser again (a reload, a second click): same cookie.
        if let (Some(bound), Some(presented)) = (&flow.binding, presented)
            && *bound == digest(&presented)
        {
            return Ok(Bound {
                flow: flow_ref(&flow),
                authorize_url: flow.authorize_url.clone(),
                cookie: cookie(presented, &flow),
            });
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let value = URL_SAFE_NO_PAD.encode(bytes);
        let bound = self
            .stores
            .flows
            .bind(start_id, &digest(&value))
            .await
            .map_err(|error| match error {
                BindError::Take(error) => error.into(),
                BindError::AlreadyBound { owner, server_id } => {
                    BrowserError::TakenByAnotherBrowser {
                        flow: FlowRef { owner, server_id },
                    }
                }
            })?;
        tracing::info!(server = %bound.server_id, user = bound.owner.user_id, "a browser took the flow");
        Ok(Bound {
            flow: flow_ref(&bound),
            authorize_url: bound.authorize_url.clone(),
            cookie: cookie(value, &bound),
        })
    }

    /// Whether the browser of a callback is the one the flow was bound to.
    pub(super) fn is_bound_browser(
        &self,
        flow: &PendingFlow,
        cookie: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> bool {
        if self.binding() == Binding::Loopback {
            return true;
        }
        let presented = cookie(&cookie_name(flow.start_id.as_str()));
        match (&flow.binding, presented) {
            (Some(bound), Some(presented)) => *bound == digest(&presented),
            _ => false,
        }
    }
}
