//! No acknowledged update is lost when a replica dies: each webhook is
//! written to the store's update journal before Telegram is answered 200
//! (Telegram never sends an acknowledged update again), held while it is
//! handled, and marked done when its handling ends, in a task of its own
//! included. Every replica renews its holds and sweeps for those of
//! replicas that stopped renewing: their users are told, in one
//! sentence, to send their request again.
//!
//! - [`intake`]: the layer in front of teloxide's webhook route.
//! - [`claiming`]: the schema's root, which holds the update for its
//!   handling ([`held`] hands the hold to a command's own task).
//! - [`keep_and_sweep`]: the renewals and the sweep.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashSet;
use serde::Deserialize;
use teloxide::dispatching::{DpHandlerDescription, UpdateHandler};
use teloxide::dptree::{self, HandlerDescription, HandlerSignature};
use teloxide::prelude::*;

use super::{TgBot, send, wording};
use crate::logging::chain;
use crate::secret::Secret;
use crate::store::{JournalEntry, UpdateJournal};

/// The largest update read: Telegram's are far smaller.
const MAX_UPDATE_BYTES: usize = 4 << 20;

/// How often finished updates too old to come again are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Updates recorded and queued for handling, not yet taken up.
pub struct Holds {
    journal: Arc<dyn UpdateJournal>,
    queued: DashSet<i64>,
}

impl Holds {
    pub fn new(journal: Arc<dyn UpdateJournal>) -> Arc<Self> {
        Arc::new(Self {
            journal,
            queued: DashSet::new(),
        })
    }

    /// The hold on `update_id` for its handling, if it was recorded.
    fn claim(&self, update_id: i64) -> Option<Arc<Hold>> {
        self.queued.remove(&update_id).map(|_| {
            Arc::new(Hold {
                update_id,
                journal: self.journal.clone(),
            })
        })
    }
}

/// An update being handled; its handling ends when the last clone goes.
pub struct Hold {
    update_id: i64,
    journal: Arc<dyn UpdateJournal>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.journal.finish(self.update_id);
    }
}

tokio::task_local! {
    /// The hold of the update whose handling runs in this task.
    static HANDLING: Option<Arc<Hold>>;
}

/// The update handled here, for work that goes on in a task of its own:
/// keep it there until the work ends.
pub fn held() -> Option<Arc<Hold>> {
    HANDLING.try_with(Clone::clone).ok().flatten()
}

/// The schema's root: runs the rest holding the update (found through
/// the [`Holds`] among the dependencies), so its handling is known to end
/// only when the rest is done and every task it started has let go.
pub fn claiming() -> UpdateHandler<teloxide::RequestError> {
    dptree::from_fn_with_description(
        DpHandlerDescription::entry(),
        |deps: DependencyMap, cont| async move {
            let hold = match (deps.try_get::<Update>(), deps.try_get::<Arc<Holds>>()) {
                (Some(update), Some(holds)) => holds.claim(i64::from(update.id.0)),
                _ => None,
            };
            HANDLING.scope(hold, cont(deps)).await
        },
        HandlerSignature::Entry,
    )
}

/// What [`intake`] needs.
#[derive(Clone)]
pub struct Intake {
    pub holds: Arc<Holds>,
    pub secret: Secret,
}

/// In front of teloxide's webhook route: an update is recorded before it
/// is queued and acknowledged. A store that fails answers 500, so
/// Telegram sends the update again (perhaps to another replica); an
/// update recorded before is a redelivery, acknowledged and dropped.
pub async fn intake(State(intake): State<Intake>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get("x-telegram-bot-api-secret-token")
        .map(|value| value.as_bytes());
    // Strangers write nothing: teloxide's route refuses them.
    if !presented.is_some_and(|p| constant_time_eq(p, intake.secret.expose().as_bytes())) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_UPDATE_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let Some(entry) = entry_of(&bytes) else {
        // Not an update we can name: teloxide's route has its say.
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    match intake.holds.journal.record(&entry).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(
                update = entry.update_id,
                "an update came again; handled once"
            );
            return StatusCode::OK.into_response();
        }
        Err(error) => {
            tracing::warn!(error = %chain(&error), "could not record an update; Telegram will send it again");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    intake.holds.queued.insert(entry.update_id);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() && intake.holds.queued.remove(&entry.update_id).is_some() {
        // Refused after all (this replica is stopping): Telegram sends it
        // again, and the record must not make that look like a repeat.
        if let Err(error) = intake.holds.journal.release(entry.update_id).await {
            tracing::warn!(error = %chain(&error), "could not release a refused update");
        }
    }
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The few fields of an update the journal keeps.
#[derive(Deserialize)]
struct Peek {
    update_id: i64,
    message: Option<PeekMessage>,
    callback_query: Option<PeekQuery>,
}

#[derive(Deserialize)]
struct PeekMessage {
    from: Option<PeekId>,
    chat: PeekChat,
    text: Option<String>,
}

#[derive(Deserialize)]
struct PeekChat {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PeekQuery {
    from: PeekId,
    message: Option<PeekQueryMessage>,
}

#[derive(Deserialize)]
struct PeekQueryMessage {
    chat: PeekId,
}

#[derive(Deserialize)]
struct PeekId {
    id: i64,
}

/// Who to tell and where, should the update's handling be cut short:
/// commands and anything said in a private chat, and button taps. The
/// text itself is never kept, only a command's name.
fn entry_of(bytes: &[u8]) -> Option<JournalEntry> {
    let peek: Peek = serde_json::from_slice(bytes).ok()?;
    let mut entry = JournalEntry {
        update_id: peek.update_id,
        user_id: None,
        chat_id: None,
        command: None,
    };
    if let Some(message) = peek.message {
        entry.user_id = message.from.map(|from| from.id as u64);
        let command = message.text.as_deref().and_then(command_name);
        if entry.user_id.is_some() && (command.is_some() || message.chat.kind == "private") {
            entry.chat_id = Some(message.chat.id);
        }
        entry.command = command;
    } else if let Some(query) = peek.callback_query {
        entry.user_id = Some(query.from.id as u64);
        entry.chat_id = Some(query.message.map_or(query.from.id, |m| m.chat.id));
    }
    Some(entry)
}

/// `/call` of `/call@mcpgram_bot demo …`: letters, digits and `_` only.
fn command_name(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?.strip_prefix('/')?;
    let name = word.split('@').next()?;
    (!name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then(|| format!("/{name}"))
}

/// Renews this replica's holds, takes the updates of replicas that died
/// and tells their users, and forgets old finished updates, until the
/// task is aborted.
pub async fn keep_and_sweep(bot: TgBot, journal: Arc<dyn UpdateJournal>) {
    let mut every = tokio::time::interval(journal.period());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purged = Instant::now();
    loop {
        every.tick().await;
        if let Err(error) = journal.renew().await {
            tracing::warn!(error = %chain(&error), "could not renew the hold on updates under way");
        }
        match journal.take_abandoned().await {
            Ok(abandoned) => tell(&bot, abandoned).await,
            Err(error) => {
                tracing::warn!(error = %chain(&error), "could not look for updates a stopped replica left");
            }
        }
        if purged.elapsed() >= PURGE_EVERY {
            purged = Instant::now();
            if let Err(error) = journal.purge().await {
                tracing::warn!(error = %chain(&error), "could not forget old updates");
            }
        }
    }
}

/// One message per chat, whatever number of its updates were cut short.
async fn tell(bot: &TgBot, abandoned: Vec<JournalEntry>) {
    if abandoned.is_empty() {
        return;
    }
    tracing::info!(
        updates = abandoned.len(),
        "took over updates a stopped replica had not finished"
    );
    let mut told = BTreeSet::new();
    for entry in abandoned {
        let Some(chat) = entry.chat_id else { continue };
        if !told.insert(chat) {
            continue;
        }
        let (bot, text) = (bot.clone(), wording::interrupted(entry.command.as_deref()));
        tokio::spawn(async move {
            if let Err(error) = send::text(&bot, ChatId(chat), &text).await {
                tracing::warn!(error = %chain(&error), "could not tell a user their request was cut short");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_keeps_its_name_only() {
        let update = br#"{"update_id": 9, "message": {"message_id": 1, "date": 0,
            "from": {"id": 5, "is_bot": false, "first_name": "A"},
            "chat": {"id": -100, "type": "group"},
            "text": "/call@mcpgram_bot demo echo {\"secret\": \"tok-SECRET\"}"}}"#;
        let entry = entry_of(update).unwrap();
        assert_eq!(
            entry,
            JournalEntry {
                update_id: 9,
                user_id: Some(5),
                chat_id: Some(-100),
                command: Some("/call".to_owned()),
            }
        );
    }

    #[test]
    fn a_private_reply_is_told_without_its_text() {
        let update = br#"{"update_id": 10, "message": {"message_id": 1, "date": 0,
            "from": {"id": 5, "is_bot": false, "first_name": "A"},
            "chat": {"id": 5, "type": "private"}, "text": "tok-SECRET"}}"#;
        let entry = entry_of(update).unwrap();
        assert_eq!((entry.chat_id, entry.command), (Some(5), None));
    }

    #[test]
    fn group_chatter_and_other_updates_are_told_nothing() {
        let chatter = br#"{"update_id": 11, "message": {"message_id": 1, "date": 0,
            "from": {"id": 5, "is_bot": false, "first_name": "A"},
            "chat": {"id": -100, "type": "group"}, "text": "hello all"}}"#;
        assert_eq!(entry_of(chatter).unwrap().chat_id, None);
        let edited = br#"{"update_id": 12, "edited_message": {}}"#;
        assert_eq!(entry_of(edited).unwrap().chat_id, None);
        assert!(entry_of(b"not json").is_none());
    }

    #[test]
    fn a_tap_is_told_where_its_button_is() {
        let tap = br#"{"update_id": 13, "callback_query": {"id": "q", "chat_instance": "c",
            "from": {"id": 5, "is_bot": false, "first_name": "A"},
            "message": {"message_id": 3, "date": 0, "chat": {"id": -7, "type": "group"}}}}"#;
        assert_eq!(entry_of(tap).unwrap().chat_id, Some(-7));
    }

    #[test]
    fn command_names_are_plain() {
        assert_eq!(command_name("/tools demo").as_deref(), Some("/tools"));
        assert_eq!(command_name("/connect@bot x").as_deref(), Some("/connect"));
        assert_eq!(command_name("/ca<ll> x"), None);
        assert_eq!(command_name("hello"), None);
        assert_eq!(command_name("/"), None);
    }
}
