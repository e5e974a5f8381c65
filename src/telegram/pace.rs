//! Sending within Telegram's flood limits, without waiting longer than
//! they require.
//!
//! Telegram answers 429 "retry after N" to a bot that sends more than one
//! message a second to a chat, more than 20 a minute to a group, or more
//! than about 30 a second in all. teloxide's `Throttle` keeps within those
//! limits, but its worker sleeps a fixed 250 ms after every batch it
//! releases: under steady load that sleep becomes every reply's latency (a
//! reply asked for just after a batch waits for the next tick). Here each
//! send waits exactly until its chat may get a message again (one a
//! second, counted from Telegram's answer to the last one) and the bot's
//! group and overall limits allow it (GCRA through `governor`, the crate
//! the per-user limits use): an idle chat's reply leaves at once, a busy
//! one's as soon as Telegram allows.
//!
//! Whatever still comes back 429 is sent again after the `retry_after`
//! Telegram names, and the chat is frozen meanwhile, so its other sends
//! wait too instead of spending 429s. A send that failed on the network
//! (a timeout under a burst, a refused connection) is sent again a few
//! times, so no reply is lost to a passing failure.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use teloxide::RequestError;
use teloxide::requests::{Output, Request};
use teloxide::types::ChatId;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Network failures a send survives before its error is returned.
const NETWORK_RETRIES: u32 = 3;
/// 429s a send survives (each after its `retry_after`).
const FLOOD_RETRIES: u32 = 5;

/// How many messages the bot may send, as Telegram documents them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_chat_per_second: u32,
    pub per_group_per_minute: u32,
    pub overall_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_chat_per_second: 1,
            per_group_per_minute: 20,
            overall_per_second: 30,
        }
    }
}

/// The bot's send pacing, shared by every sender.
pub struct Pace {
    /// Per chat: when it may get its next message. The lock is held
    /// through a send, so one chat's messages leave one at a time and in
    /// the order they were asked for (tokio's mutex is fair).
    chats: DashMap<ChatId, Arc<Mutex<Instant>>>,
    /// The gap between two messages to one chat.
    gap: Duration,
    groups: DefaultKeyedRateLimiter<ChatId>,
    overall: DefaultDirectRateLimiter,
    /// Sends wait for the overall limit here one at a time, in the order
    /// they came (tokio's mutex is fair). governor's `until_ready` has
    /// every waiter poll again at the limiter's next free slot, so with
    /// a thousand chats waiting each slot woke all thousand for one to
    /// pass: CPU growing with the square of the queue, in no set order.
    /// The waits are tokio's timers (governor's own go through a timer
    /// thread of futures-timer, a tenth of the bot's CPU under load).
    overall_turn: Mutex<()>,
}

impl Pace {
    pub fn new(limits: Limits) -> Arc<Self> {
        let quota = |n: u32, per: fn(NonZeroU32) -> Quota| {
            per(NonZeroU32::new(n.max(1)).expect("at least one"))
        };
        Arc::new(Self {
            chats: DashMap::new(),
            gap: Duration::from_secs(1) / limits.per_chat_per_second.max(1),
            groups: RateLimiter::keyed(quota(limits.per_group_per_minute, Quota::per_minute)),
            overall: RateLimiter::direct(quota(limits.overall_per_second, Quota::per_second)),
            overall_turn: Mutex::new(()),
        })
    }

    /// Sends `request` to `chat` once the limits allow it, again after a
    /// 429's `retry_after`, and again after a passing network failure.
    pub async fn send<R>(&self, chat: ChatId, request: R) -> Result<Output<R>, RequestError>
    where
        R: Request<Err = RequestError>,
    {
        let slot = self
            .chats
            .entry(chat)
            .or_insert_with(|| Arc::new(Mutex::new(Instant::now())))
            .clone();
        let mut next = slot.lock().await;
        let (mut floods, mut failures) = (0, 0);
        loop {
            tokio::time::sleep_until(*next).await;
            if chat.is_group() || chat.is_channel_or_supergroup() {
                while let Err(later) = self.groups.check_key(&chat) {
                    let now = self.groups.clock().now();
                    tokio::time::sleep(later.wait_time_from(now)).await;
                }
            }
            {
                let _turn = self.overall_turn.lock().await;
                while let Err(later) = self.overall.check() {
                    let now = self.overall.clock().now();
                    tokio::time::sleep(later.wait_time_from(now)).await;
                }
            }
            let sent = request.send_ref().await;
            // Counted from the answer, not from the request: Telegram saw
            // the message somewhere in between, so the next one reaches it
            // at least a full gap later, however long the trip took.
            *next = Instant::now() + self.gap;
            match sent {
                Err(RequestError::RetryAfter(after)) if floods < FLOOD_RETRIES => {
                    floods += 1;
                    crate::metrics::telegram_error();
                    tracing::info!(
                        retry_after_secs = after.seconds(),
                        "Telegram asked to slow down; sending again after its retry_after"
                    );
                    // The chat's other messages wait too.
                    *next = Instant::now() + after.duration();
                }
                Err(RequestError::Network(error)) if failures < NETWORK_RETRIES => {
                    failures += 1;
                    crate::metrics::telegram_error();
                    tracing::info!(
                        error = %crate::logging::chain(&*error),
                        "a send failed on the network; sending again"
                    );
                    *next = Instant::now() + Duration::from_millis(250) * 2u32.pow(failures);
                }
                other => return other,
            }
        }
    }

    /// Forgets chats that are free to get a message now and that nobody
    /// is sending to, so the table does not grow with every chat the bot
    /// ever answered.
    pub fn shrink(&self) {
        let now = Instant::now();
        self.chats.retain(|_, slot| {
            Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |next| *next > now)
        });
        self.chats.shrink_to_fit();
        self.groups.retain_recent();
        self.groups.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use teloxide::Bot;
    use teloxide::prelude::Requester;

    use super::*;

    /// Chats held back by the overall limit get their turns in the order
    /// they asked for them, each woken once, rather than all woken at
    /// every free slot to race for it.
    #[tokio::test(flavor = "current_thread")]
    async fn chats_waiting_for_the_overall_limit_go_in_the_order_they_asked() {
        crate::tls::install();
        let telegram = fake_telegram::FakeTelegram::start().await;
        let bot = Bot::new(telegram.token()).set_api_url(telegram.api_url().parse().unwrap());
        const BURST: i64 = 10;
        const CHATS: i64 = 40;
        for id in 1..=CHATS {
            let user = telegram.user(id as u64, "User");
            telegram.send_private(&user, "/start");
        }
        let pace = Pace::new(Limits {
            overall_per_second: BURST as u32,
            ..Limits::default()
        });
        // On one thread the tasks first run in the order spawned, each up
        // to where it waits: so they reach the limit in the order of ids.
        let sends: Vec<_> = (1..=CHATS)
            .map(|id| {
                let (pace, bot) = (pace.clone(), bot.clone());
                tokio::spawn(async move {
                    let request = bot.send_message(ChatId(id), "hi");
                    pace.send(ChatId(id), request).await.expect("sent");
                })
            })
            .collect();
        for send in sends {
            send.await.unwrap();
        }
        // The first burst leaves at once, in whatever order its requests
        // land; the rest, a slot apart, in the order they asked.
        let held: Vec<i64> = telegram
            .calls()
            .iter()
            .filter(|call| call.method == "sendmessage")
            .filter_map(|call| {
                let id = &call.params["chat_id"];
                id.as_i64().or_else(|| id.as_str()?.parse().ok())
            })
            .filter(|&id| id > BURST)
            .collect();
        assert_eq!(held, (BURST + 1..=CHATS).collect::<Vec<_>>());
        telegram.assert_no_errors();
    }
}
