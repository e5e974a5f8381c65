//! Completing a flow when the authorization server redirects back.

use serde::Deserialize;

use super::pending::TakeError;
use super::{Connector, FlowOwner};
use crate::secret::Secret;
use crate::text::clip;

/// The redirect's query (RFC 6749 §4.1.2, RFC 9207 `iss`).
#[derive(Deserialize, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl std::fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackParams")
            .field("code", &self.code.as_ref().map(|_| "[redacted]"))
            .field("state", &self.state.as_ref().map(|_| "[redacted]"))
            .field("iss", &self.iss)
            .field("error", &self.error)
            .finish()
    }
}

/// A finished flow: `owner` now holds tokens for `server_id`.
#[derive(Debug, Clone)]
pub struct Connected {
    pub owner: FlowOwner,
    pub server_id: String,
    pub server_name: String,
}

/// Why a callback did not connect anything. Variants that know the flow's
/// owner carry it, so the chat can be told too.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error(
        "This page needs the code and state the authorization server sends; it cannot be opened directly."
    )]
    MissingState,
    #[error(
        "This link is not valid: it was already used, replaced by a newer one, or never issued. Send /connect in Telegram to get a new one."
    )]
    UnknownState,
    #[error("This link expired. Send /connect {server_id} in Telegram to get a new one.")]
    Expired { owner: FlowOwner, server_id: String },
    #[error("The authorization server refused: {reason}")]
    Denied {
        owner: FlowOwner,
        server_id: String,
        server_name: String,
        reason: String,
    },
    #[error("Connecting failed: {reason}")]
    Exchange {
        owner: FlowOwner,
        server_id: String,
        server_name: String,
        reason: String,
    },
}

/// What a failed flow's owner is told in their chat.
pub struct ChatReport<'a> {
    pub owner: FlowOwner,
    pub server_id: &'a str,
    pub server_name: &'a str,
    pub reason: String,
}

impl CallbackError {
    /// The report for the flow's owner; `None` when no flow was found, so
    /// there is nobody to tell.
    pub fn chat_report(&self) -> Option<ChatReport<'_>> {
        let (owner, server_id, server_name, reason) = match self {
            CallbackError::Denied {
                owner,
                server_id,
                server_name,
                reason,
            } => (
                owner,
                server_id,
                server_name,
                format!("the authorization server refused: {reason}"),
            ),
            CallbackError::Exchange {
                owner,
                server_id,
                server_name,
                reason,
            } => (owner, server_id, server_name, reason.clone()),
            CallbackError::Expired { owner, server_id } => {
                (owner, server_id, server_id, "the link expired".to_owned())
            }
            CallbackError::MissingState | CallbackError::UnknownState => return None,
        };
        Some(ChatReport {
            owner: *owner,
            server_id,
            server_name,
            reason,
        })
    }
}

/// How much of an authorization server's error text reaches a chat or page.
const REASON_CHARS: usize = 200;

impl Connector {
    /// Finds the flow by `state` (consuming it), then exchanges the code;
    /// the tokens land in the owner's vault namespace.
    pub async fn complete(&self, params: CallbackParams) -> Result<Connected, CallbackError> {
        let state = params
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(CallbackError::MissingState)?;
        let flow = self.pending.take(state).map_err(|error| match error {
            TakeError::Unknown => CallbackError::UnknownState,
            TakeError::Expired { owner, server_id } => CallbackError::Expired { owner, server_id },
        })?;
        let (owner, server_id) = (flow.owner, flow.server_id);
        let payload = flow.payload;
        let server_name = payload.server_name.clone();

        if let Some(error) = params.error.as_deref() {
            let reason = match params.error_description.as_deref() {
                Some(description) => format!(
                    "{} ({})",
                    clip(error, REASON_CHARS),
                    clip(description, REASON_CHARS)
                ),
                None => clip(error, REASON_CHARS),
            };
            tracing::info!(server = %server_id, user = owner.user_id, error = %clip(error, REASON_CHARS), "authorization refused");
            return Err(CallbackError::Denied {
                owner,
                server_id,
                server_name,
                reason,
            });
        }
        let Some(code) = params.code.map(Secret::new).filter(|c| !c.is_empty()) else {
            return Err(CallbackError::Exchange {
                owner,
                server_id,
                server_name,
                reason: "the authorization server sent no code".to_owned(),
            });
        };

        // Saved first: refreshing the tokens later needs this exact client.
        let store = self.store(owner.user_id, &server_id);
        if let Err(error) = store.save_client(&payload.client).await {
            tracing::error!(server = %server_id, user = owner.user_id, %error, "saving client record failed");
            return Err(CallbackError::Exchange {
                owner,
                server_id,
                server_name,
                reason: "the bot could not store the tokens".to_owned(),
            });
        }
        let exchanged = payload
            .session
            .handle_callback_with_issuer(code.expose(), &payload.rmcp_state, params.iss.as_deref())
            .await;
        if let Err(error) = exchanged {
            tracing::warn!(server = %server_id, user = owner.user_id, %error, "code exchange failed");
            return Err(CallbackError::Exchange {
                owner,
                server_id,
                server_name,
                reason: clip(&error.to_string(), REASON_CHARS),
            });
        }
        tracing::info!(server = %server_id, user = owner.user_id, "connected");
        Ok(Connected {
            owner,
            server_id,
            server_name,
        })
    }
}
