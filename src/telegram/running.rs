//! A tool call while it runs, as the chat sees it: "typing…" all along;
//! once the call takes a while or the server reports progress, one status
//! message with a Cancel button, edited with the progress at a pace
//! Telegram accepts and removed when the call ends. Cancel (the button or
//! `/cancel`) drops the call, which tells the server.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::future::BoxFuture;
use rmcp::model::{ElicitRequestParams, ElicitResult};
use teloxide::prelude::*;
use teloxide::types::MessageId;
use tokio::sync::{oneshot, watch};

use super::TgBot;
use super::dialogue::Dialogues;
use super::typing::Typing;
use super::{ask, send, wording};
use crate::config::ServerConfig;
use crate::gateway::{CallObserver, Progress};

/// A call quicker than this gets no status message at all.
const SHOW_AFTER: Duration = Duration::from_millis(1500);

/// At most one edit of the status message per this much time: the last
/// progress in between is the one shown.
const EDIT_EVERY: Duration = Duration::from_millis(1500);

/// callback_data prefix of a Cancel button; the id is 16 hex digits.
const CANCEL_PREFIX: &str = "cancel:";

/// The calls running now, by id, so a Cancel button (or `/cancel`) finds
/// its call.
#[derive(Default)]
pub struct Running {
    calls: DashMap<String, Entry>,
}

struct Entry {
    user_id: u64,
    cancel: oneshot::Sender<()>,
}

/// A registered call: its id, and what fires when the user cancels it.
pub struct Registered {
    pub id: String,
    pub cancelled: oneshot::Receiver<()>,
    running: Arc<Running>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.running.calls.remove(&self.id);
    }
}

impl Running {
    pub fn register(self: &Arc<Self>, user_id: u64) -> Registered {
        let id = hex::encode(rand::random::<[u8; 8]>());
        let (cancel, cancelled) = oneshot::channel();
        self.calls.insert(id.clone(), Entry { user_id, cancel });
        Registered {
            id,
            cancelled,
            running: self.clone(),
        }
    }

    /// Cancels the call `id` if `user_id` started it; with no id, every
    /// call of `user_id`. Whether anything was cancelled.
    pub fn cancel(&self, user_id: u64, id: Option<&str>) -> bool {
        let ids: Vec<String> = match id {
            Some(id) => vec![id.to_owned()],
            None => self
                .calls
                .iter()
                .filter(|e| e.user_id == user_id)
                .map(|e| e.key().clone())
                .collect(),
        };
        let mut any = false;
        for id in ids {
            if let Some((_, entry)) = self.calls.remove_if(&id, |_, e| e.user_id == user_id) {
                any |= entry.cancel.send(()).is_ok();
            }
        }
        any
    }
}

pub fn cancel_data(id: &str) -> String {
    format!("{CANCEL_PREFIX}{id}")
}

/// The call id of a Cancel button's callback data.
pub fn cancel_tap(data: &str) -> Option<String> {
    let id = data.strip_prefix(CANCEL_PREFIX)?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// The status of one call in one chat, kept by a task of its own.
pub struct Status {
    bot: TgBot,
    progress: watch::Sender<Option<Progress>>,
    finished: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Status {
    /// Starts showing the call `label` in `chat`; `call_id` is for its
    /// Cancel button.
    pub fn start(bot: TgBot, chat: ChatId, label: String, call_id: &str) -> Self {
        let (progress, updates) = watch::channel(None);
        let (finished, finish) = oneshot::channel();
        let cancel = cancel_data(call_id);
        let task = tokio::spawn(show(bot.clone(), chat, label, cancel, updates, finish));
        Self {
            bot,
            progress,
            finished: Some(finished),
            task,
        }
    }

    /// The observer to give `user_id`'s call to `server`: progress goes to
    /// the status, the server's questions to a dialogue.
    pub fn observer(
        &self,
        dialogues: Arc<Dialogues>,
        server: Arc<ServerConfig>,
        user_id: u64,
    ) -> Arc<dyn CallObserver> {
        Arc::new(ChatObserver {
            progress: self.progress.clone(),
            bot: self.bot.clone(),
            dialogues,
            server,
            user_id,
        })
    }

    /// Ends the status: its message (if any) is removed before this returns,
    /// so the result comes after it.
    pub async fn finish(mut self) {
        if let Some(finished) = self.finished.take() {
            let _ = finished.send(());
        }
        let _ = (&mut self.task).await;
    }
}

struct ChatObserver {
    progress: watch::Sender<Option<Progress>>,
    bot: TgBot,
    dialogues: Arc<Dialogues>,
    server: Arc<ServerConfig>,
    user_id: u64,
}

impl CallObserver for ChatObserver {
    fn progress(&self, update: Progress) {
        self.progress.send_replace(Some(update));
    }

    fn elicit(&self, request: ElicitRequestParams) -> BoxFuture<'static, ElicitResult> {
        ask::elicit(
            self.bot.clone(),
            self.dialogues.clone(),
            self.server.clone(),
            self.user_id,
            request,
        )
    }
}

async fn show(
    bot: TgBot,
    chat: ChatId,
    label: String,
    cancel: String,
    mut updates: watch::Receiver<Option<Progress>>,
    mut finish: oneshot::Receiver<()>,
) {
    let typing = Typing::start(&bot, chat);
    // Quiet until the call has taken a while or reported progress.
    tokio::select! {
        _ = &mut finish => {
            drop(typing);
            return;
        }
        _ = updates.changed() => {}
        () = tokio::time::sleep(SHOW_AFTER) => {}
    }
    let mut message: Option<MessageId> = None;
    let rows = || vec![vec![(wording::CANCEL_BUTTON.to_owned(), cancel.clone())]];
    let text = wording::running(&label, updates.borrow_and_update().as_ref());
    match send::with_buttons(&bot, chat, &text, rows()).await {
        Ok(sent) => message = Some(sent.id),
        Err(error) => tracing::debug!(%error, "could not show a call's status"),
    }
    let mut shown = text;
    loop {
        tokio::select! {
            _ = &mut finish => break,
            changed = updates.changed() => {
                if changed.is_err() {
                    // The observer is gone: wait for the end.
                    let _ = (&mut finish).await;
                    break;
                }
            }
        }
        let text = wording::running(&label, updates.borrow_and_update().as_ref());
        if let Some(id) = message
            && text != shown
        {
            if let Err(error) = send::edit_with_buttons(&bot, chat, id, &text, rows()).await {
                tracing::debug!(%error, "could not update a call's status");
            }
            shown = text;
            // Telegram's pace for edits; progress meanwhile is kept.
            tokio::select! {
                _ = &mut finish => break,
                () = tokio::time::sleep(EDIT_EVERY) => {}
            }
        }
    }
    drop(typing);
    if let Some(id) = message
        && let Err(error) = bot.delete_message(chat, id).await
    {
        tracing::debug!(%error, "could not remove a call's status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_data_round_trips_and_fits() {
        let running = Arc::new(Running::default());
        let call = running.register(7);
        let data = cancel_data(&call.id);
        assert!(data.len() <= 64);
        assert_eq!(cancel_tap(&data).as_deref(), Some(call.id.as_str()));
        assert_eq!(cancel_tap("cancel:zz"), None);
    }

    #[test]
    fn only_the_caller_cancels() {
        let running = Arc::new(Running::default());
        let mut call = running.register(7);
        assert!(!running.cancel(8, Some(&call.id)));
        assert!(call.cancelled.try_recv().is_err());
        assert!(running.cancel(7, None));
        assert!(call.cancelled.try_recv().is_ok());
        drop(call);
        assert!(running.calls.is_empty());
    }
}
