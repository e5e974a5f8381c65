//! Questions put to a user one at a time in their private chat: a guided
//! tool call (the tool's arguments), or a server's elicitation (its form,
//! or a URL to open). Each user has at most one dialogue; a reply that is
//! not a command, or a tap on one of its buttons, goes to it. `/cancel`
//! leaves it.
//!
//! The dialogue is state and rules only; [`super::endpoints`] sends what
//! it says to send.

use std::sync::Arc;

use dashmap::DashMap;
use rmcp::model::{ElicitResult, ElicitationAction, JsonObject};
use serde_json::Value;
use teloxide::types::{ChatId, MessageId};
use tokio::sync::{Mutex, oneshot};

use crate::config::ServerConfig;
use crate::gateway::form::{Form, Kind, Refused};

/// callback_data prefix of a dialogue's buttons: "q:<8 hex>:<verb>".
const PREFIX: &str = "q:";

pub struct Dialogue {
    pub id: String,
    /// The user's private chat.
    pub chat: ChatId,
    pub server: Arc<ServerConfig>,
    /// What the dialogue is for, as the user reads it first (foreign
    /// text already clipped).
    pub intro: String,
    pub body: Body,
    pub purpose: Purpose,
    /// The message with the question now open and its text: its buttons
    /// go once it is answered.
    pub question: Option<(MessageId, String)>,
}

pub enum Body {
    Form(Form),
    /// URL-mode elicitation: the page the server wants the user to open.
    Url {
        url: String,
    },
    /// A personal token, asked for with `/token`: never shown again.
    Token,
}

pub enum Purpose {
    /// The server waits for the answer.
    Elicit(Option<oneshot::Sender<ElicitResult>>),
    /// A guided call: the arguments, then Run. With `consent`, a call of
    /// a tool that may change things, which can be allowed for good.
    Call { tool: String, consent: bool },
    /// A prompt's arguments, then the prompt.
    Prompt { name: String },
    /// `/token`: the user's own token for the server.
    Token,
}

/// A tap on a dialogue's button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Choose(usize),
    Skip,
    /// Leaves out every optional question left.
    SkipRest,
    Default,
    /// Ends a several-choice question.
    Done,
    /// Send the answers, run the call, or open the URL.
    Go,
    /// Run, and never ask again for this tool.
    Always,
    Decline,
    Cancel,
}

/// How a dialogue ended.
pub enum Ending {
    /// Answered, declined or cancelled: the server has its answer.
    Elicited(ElicitationAction),
    Run {
        server: Arc<ServerConfig>,
        tool: String,
        arguments: JsonObject,
        /// Allowed for good.
        always: bool,
    },
    Prompt {
        server: Arc<ServerConfig>,
        name: String,
        arguments: JsonObject,
    },
    /// A personal token, to keep (the message holding it is deleted).
    Token {
        server: Arc<ServerConfig>,
        token: crate::secret::Secret,
    },
    /// A guided call or prompt left.
    Left,
}

/// What follows an answer.
pub enum Step {
    /// Ask the next question (or show the final one).
    Next,
    /// The answer did not fit; ask again.
    Refused(Vec<String>),
    /// The URL elicitation was accepted: show the page's button.
    Opened,
    Ended(Ending),
    /// Nothing to do (a stale tap).
    Ignored,
}

#[derive(Default)]
pub struct Dialogues {
    by_user: DashMap<u64, Arc<Mutex<Dialogue>>>,
    /// Where other replicas learn that this one holds a user's dialogue.
    homes: std::sync::OnceLock<Arc<dyn crate::store::Handoffs>>,
}

/// Why a dialogue could not begin.
#[derive(Debug)]
pub struct Occupied;

impl Dialogues {
    /// Starts a dialogue for `user_id`. A guided call replaces another
    /// guided call; a server's open question is never pushed aside.
    pub async fn begin(
        &self,
        user_id: u64,
        dialogue: Dialogue,
    ) -> Result<Arc<Mutex<Dialogue>>, Occupied> {
        if let Some(existing) = self.get(user_id)
            && matches!(existing.lock().await.purpose, Purpose::Elicit(_))
        {
            return Err(Occupied);
        }
        let dialogue = Arc::new(Mutex::new(dialogue));
        self.by_user.insert(user_id, dialogue.clone());
        if let Some(homes) = self.homes.get()
            && let Err(error) = homes.claim(user_id).await
        {
            tracing::warn!(user = user_id, error = %crate::logging::chain(&error), "could not say where a dialogue lives; a reply through another replica may go unanswered");
        }
        Ok(dialogue)
    }

    /// Tells other replicas, through `homes`, which dialogues live here.
    pub fn announce_to(&self, homes: Arc<dyn crate::store::Handoffs>) {
        let _ = self.homes.set(homes);
    }

    pub fn get(&self, user_id: u64) -> Option<Arc<Mutex<Dialogue>>> {
        self.by_user.get(&user_id).map(|d| d.clone())
    }

    /// Ends `user_id`'s dialogue `id` (if it is still theirs).
    pub fn end(&self, user_id: u64, id: &str) {
        let ended = self.by_user.remove_if(&user_id, |_, d| {
            d.try_lock().map(|d| d.id == id).unwrap_or(true)
        });
        if ended.is_some()
            && let Some(homes) = self.homes.get().cloned()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = homes.leave(user_id).await {
                    tracing::warn!(user = user_id, error = %crate::logging::chain(&error), "could not say a dialogue ended");
                }
            });
        }
    }
}

pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

pub fn data(id: &str, verb: &Verb) -> String {
    let verb = match verb {
        Verb::Choose(index) => format!("c{index}"),
        Verb::Skip => "skip".to_owned(),
        Verb::SkipRest => "rest".to_owned(),
        Verb::Default => "def".to_owned(),
        Verb::Done => "done".to_owned(),
        Verb::Go => "go".to_owned(),
        Verb::Always => "all".to_owned(),
        Verb::Decline => "no".to_owned(),
        Verb::Cancel => "x".to_owned(),
    };
    format!("{PREFIX}{id}:{verb}")
}

/// A dialogue button's (dialogue id, verb).
pub fn tap(data: &str) -> Option<(String, Verb)> {
    let (id, verb) = data.strip_prefix(PREFIX)?.split_once(':')?;
    let verb = match verb {
        "skip" => Verb::Skip,
        "rest" => Verb::SkipRest,
        "def" => Verb::Default,
        "done" => Verb::Done,
        "go" => Verb::Go,
        "all" => Verb::Always,
        "no" => Verb::Decline,
        "x" => Verb::Cancel,
        other => Verb::Choose(other.strip_prefix('c')?.parse().ok()?),
    };
    Some((id.to_owned(), verb))
}

impl Dialogue {
    /// A dialogue in `chat` (the user's private chat), nothing asked yet.
    pub fn new(
        chat: ChatId,
        server: Arc<ServerConfig>,
        intro: String,
        body: Body,
        purpose: Purpose,
    ) -> Self {
        Self {
            id: new_id(),
            chat,
            server,
            intro,
            body,
            purpose,
            question: None,
        }
    }

    /// Whether the open question is answered by a button press alone.
    pub fn is_finished(&self) -> bool {
        match &self.body {
            Body::Form(form) => form.current().is_none(),
            Body::Url { .. } | Body::Token => true,
        }
    }

    pub fn apply(&mut self, verb: Verb) -> Step {
        match verb {
            Verb::Cancel => return self.end(ElicitationAction::Cancel),
            Verb::Decline => return self.end(ElicitationAction::Decline),
            _ => {}
        }
        let Body::Form(form) = &mut self.body else {
            return match verb {
                Verb::Go if matches!(self.body, Body::Url { .. }) => {
                    self.answer(ElicitationAction::Accept, None);
                    Step::Opened
                }
                _ => Step::Ignored,
            };
        };
        let outcome = match verb {
            Verb::Choose(index) => form.choose(index),
            Verb::Skip => {
                form.skip();
                Ok(())
            }
            Verb::SkipRest => {
                form.skip_rest();
                Ok(())
            }
            Verb::Default => form.use_default(),
            Verb::Done => form.done(),
            Verb::Go | Verb::Always if form.current().is_none() && form.problems().is_empty() => {
                let values = form.values().clone();
                return match &self.purpose {
                    Purpose::Elicit(_) => {
                        // SEP-1034: what the user left out that has a
                        // default is sent with it.
                        let schema = Value::Object(form.schema().raw().clone());
                        let values = crate::mcp::client::with_defaults(&schema, values);
                        self.answer(ElicitationAction::Accept, Some(values));
                        Step::Ended(Ending::Elicited(ElicitationAction::Accept))
                    }
                    Purpose::Prompt { name } => Step::Ended(Ending::Prompt {
                        server: self.server.clone(),
                        name: name.clone(),
                        arguments: values,
                    }),
                    Purpose::Call { tool, consent } => Step::Ended(Ending::Run {
                        server: self.server.clone(),
                        tool: tool.clone(),
                        arguments: values,
                        always: *consent && verb == Verb::Always,
                    }),
                    Purpose::Token => Step::Ignored,
                };
            }
            _ => return Step::Ignored,
        };
        match outcome {
            Ok(()) => Step::Next,
            Err(Refused(problems)) => Step::Refused(problems),
        }
    }

    /// A typed reply.
    pub fn reply(&mut self, text: &str) -> Step {
        if let Body::Token = self.body {
            let token = text.trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Step::Refused(vec!["a token is one word".to_owned()]);
            }
            return Step::Ended(Ending::Token {
                server: self.server.clone(),
                token: crate::secret::Secret::new(token),
            });
        }
        let Body::Form(form) = &mut self.body else {
            return Step::Ignored;
        };
        if form.current().is_none() {
            return Step::Ignored;
        }
        match form.answer_text(text) {
            Ok(()) => Step::Next,
            Err(Refused(problems)) => Step::Refused(problems),
        }
    }

    fn end(&mut self, action: ElicitationAction) -> Step {
        match self.purpose {
            Purpose::Elicit(_) => {
                self.answer(action.clone(), None);
                Step::Ended(Ending::Elicited(action))
            }
            Purpose::Call { .. } | Purpose::Prompt { .. } | Purpose::Token => {
                Step::Ended(Ending::Left)
            }
        }
    }

    /// Sends the server its answer (once).
    fn answer(&mut self, action: ElicitationAction, content: Option<JsonObject>) {
        if let Purpose::Elicit(reply) = &mut self.purpose
            && let Some(reply) = reply.take()
        {
            let mut result = ElicitResult::new(action);
            if let Some(content) = content {
                result = result.with_content(Value::Object(content));
            }
            let _ = reply.send(result);
        }
    }

    /// The buttons of the open question, as rows of (label, verb).
    pub fn buttons(&self) -> Vec<Vec<(String, Verb)>> {
        use super::wording as w;
        let mut rows: Vec<Vec<(String, Verb)>> = Vec::new();
        let elicit = matches!(self.purpose, Purpose::Elicit(_));
        let closing = |rows: &mut Vec<Vec<(String, Verb)>>| {
            let mut last = Vec::new();
            if elicit {
                last.push((w::DECLINE_BUTTON.to_owned(), Verb::Decline));
            }
            last.push((w::CANCEL_BUTTON.to_owned(), Verb::Cancel));
            rows.push(last);
        };
        let form = match &self.body {
            Body::Token => {
                closing(&mut rows);
                return rows;
            }
            Body::Url { .. } => {
                rows.push(vec![(w::OPEN_PAGE_BUTTON.to_owned(), Verb::Go)]);
                closing(&mut rows);
                return rows;
            }
            Body::Form(form) => form,
        };
        let Some(field) = form.current() else {
            if form.problems().is_empty() {
                let go = match self.purpose {
                    Purpose::Elicit(_) => w::SEND_BUTTON,
                    Purpose::Call { .. } => w::RUN_BUTTON,
                    Purpose::Prompt { .. } | Purpose::Token => w::GET_PROMPT_BUTTON,
                };
                let mut row = vec![(go.to_owned(), Verb::Go)];
                if matches!(self.purpose, Purpose::Call { consent: true, .. }) {
                    row.push((w::ALWAYS_ALLOW_BUTTON.to_owned(), Verb::Always));
                }
                rows.push(row);
            }
            closing(&mut rows);
            return rows;
        };
        match &field.kind {
            Kind::Boolean => rows.push(vec![
                (w::YES.to_owned(), Verb::Choose(0)),
                (w::NO.to_owned(), Verb::Choose(1)),
            ]),
            Kind::Choice(choices) => {
                for (pair_start, pair) in choices.chunks(2).enumerate() {
                    rows.push(
                        pair.iter()
                            .enumerate()
                            .map(|(i, (label, _))| {
                                (
                                    crate::text::clip(label, 30),
                                    Verb::Choose(pair_start * 2 + i),
                                )
                            })
                            .collect(),
                    );
                }
            }
            Kind::Several(choices) => {
                for (pair_start, pair) in choices.chunks(2).enumerate() {
                    rows.push(
                        pair.iter()
                            .enumerate()
                            .map(|(i, (label, value))| {
                                let mark = if form.picked().contains(value) {
                                    "✓ "
                                } else {
                                    ""
                                };
                                (
                                    format!("{mark}{}", crate::text::clip(label, 30)),
                                    Verb::Choose(pair_start * 2 + i),
                                )
                            })
                            .collect(),
                    );
                }
                rows.push(vec![(w::DONE_BUTTON.to_owned(), Verb::Done)]);
            }
            _ => {}
        }
        let mut extra = Vec::new();
        if field.default.is_some() {
            extra.push((w::USE_DEFAULT_BUTTON.to_owned(), Verb::Default));
        }
        if !field.required {
            extra.push((w::SKIP_BUTTON.to_owned(), Verb::Skip));
        }
        if form.more_optional_after() {
            extra.push((w::SKIP_REST_BUTTON.to_owned(), Verb::SkipRest));
        }
        if !extra.is_empty() {
            rows.push(extra);
        }
        closing(&mut rows);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_data_round_trips_within_64_bytes() {
        let id = new_id();
        for verb in [
            Verb::Choose(12),
            Verb::Skip,
            Verb::SkipRest,
            Verb::Default,
            Verb::Done,
            Verb::Go,
            Verb::Always,
            Verb::Decline,
            Verb::Cancel,
        ] {
            let encoded = data(&id, &verb);
            assert!(encoded.len() <= 64);
            assert_eq!(tap(&encoded), Some((id.clone(), verb)));
        }
        assert_eq!(tap("q:abc:zz"), None);
    }
}
