//! Opt-in flood control ("429 Too Many Requests"), per chat, like Telegram's.
//!
//! A 429 freezes its chat for `retry_after` seconds; a send to a frozen chat
//! means the bot did not honour `retry_after`, which the fake records as a
//! violation (and answers 429 again, with the seconds still left).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::Fail;

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct FloodControl {
    /// Messages a chat may get per second; `None` = unlimited.
    per_chat_per_sec: Option<u32>,
    retry_after: u32,
    /// Sends still to be answered 429 by `fail_next_sends_with_429`.
    forced: usize,
    forced_retry_after: u32,
    /// Every how many sends one is answered 429 (`answer_429_every`), and
    /// the sends counted towards it.
    every: Option<(u64, u32)>,
    counted: u64,
    /// When each chat got its recent messages (the last second's only).
    recent: HashMap<i64, VecDeque<Instant>>,
    frozen_until: HashMap<i64, Instant>,
}

impl FloodControl {
    pub(crate) fn set_limit(&mut self, per_chat_per_sec: Option<u32>, retry_after_secs: u32) {
        self.per_chat_per_sec = per_chat_per_sec;
        self.retry_after = retry_after_secs.max(1);
    }

    pub(crate) fn force(&mut self, count: usize, retry_after_secs: u32) {
        self.forced = count;
        self.forced_retry_after = retry_after_secs.max(1);
    }

    pub(crate) fn every(&mut self, nth: Option<u64>, retry_after_secs: u32) {
        self.every = nth.map(|nth| (nth.max(1), retry_after_secs.max(1)));
        self.counted = 0;
    }

    /// Checked first for every send: a chat still frozen by an earlier 429
    /// gets 429 again, flagged as a violation.
    pub(crate) fn check_frozen(&self, chat_id: i64, now: Instant) -> Result<(), Fail> {
        match self.frozen_until.get(&chat_id) {
            Some(&until) if until > now => {
                let left = until - now;
                // Whole seconds, rounded up, like Telegram's retry_after.
                let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                let seconds = u32::try_from(seconds).unwrap_or(u32::MAX).max(1);
                Err(Fail {
                    violation: true,
                    ..Fail::too_many_requests(seconds)
                })
            }
            _ => Ok(()),
        }
    }

    /// Checked after validation, just before a message is stored: a forced
    /// 429, or the per-chat limit, freezes the chat.
    pub(crate) fn admit(&mut self, chat_id: i64, now: Instant) -> Result<(), Fail> {
        let periodic = self.every.and_then(|(nth, after)| {
            self.counted += 1;
            self.counted.is_multiple_of(nth).then_some(after)
        });
        let retry_after = if self.forced > 0 {
            self.forced -= 1;
            self.forced_retry_after
        } else if let Some(after) = periodic {
            after
        } else {
            let Some(limit) = self.per_chat_per_sec else {
                return Ok(());
            };
            if self.recent_count(chat_id, now) < limit as usize {
                return Ok(());
            }
            self.retry_after
        };
        self.frozen_until
            .insert(chat_id, now + Duration::from_secs(retry_after.into()));
        Err(Fail::too_many_requests(retry_after))
    }

    /// A message was sent to the chat.
    pub(crate) fn record_send(&mut self, chat_id: i64, now: Instant) {
        self.prune(chat_id, now);
        self.recent.entry(chat_id).or_default().push_back(now);
    }

    fn recent_count(&mut self, chat_id: i64, now: Instant) -> usize {
        self.prune(chat_id, now);
        self.recent.get(&chat_id).map_or(0, VecDeque::len)
    }

    fn prune(&mut self, chat_id: i64, now: Instant) {
        if let Some(times) = self.recent.get_mut(&chat_id) {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                times.pop_front();
            }
        }
    }
}
