//! Throughput: many users' `/tools` and `/call` on warm sessions, at a set
//! rate of updates per second, answered by one bot process, with
//! Telegram's flood control answering 429 at a set rate.
//!
//! The real `mcpgram` binary runs on the fake Telegram (which answers
//! every 50th send 429 "retry after 1" and records any send before that
//! second is up as a violation) against a fast MCP server (rmcp's own,
//! stateless, in this process), so the bot's own cost is what is
//! measured. Every user has one update every `users / rate` seconds,
//! alternating `/tools fast` and `/call fast sum {...}`, so no chat is
//! asked more than Telegram's one message a second allows. The bot is
//! configured with `telegram.messages_per_second = 1000` (Telegram's
//! limit with paid broadcasts; 30 otherwise).
//!
//! Reported: updates sent and replies received (none may be lost), 429s
//! and violations, the bot's CPU per update and in cores while under load,
//! this process's CPU (the fake Telegram, the MCP server and the load
//! generator), the time from the last update to the last reply, peak RSS.
//!
//! `cargo bench --bench perf_load` measures; `cargo test --bench perf_load`
//! runs a smoke pass with tiny counts.

mod support;

use std::time::{Duration, Instant};

use fake_telegram::{FakeTelegram, FakeUser};
use support::{Bot, cpu_of, ticks_per_sec};
use test_peers::FastServer;

const WAIT: Duration = Duration::from_secs(120);
const CALL: &str = r#"/call fast sum {"a": 1, "b": 2}"#;
const SUM: &str = "The sum of 1 and 2 is 3.";
const TOOLS: &str = "/tools fast";

struct Plan {
    users: u64,
    /// Updates per second.
    rate: u64,
    seconds: u64,
    /// Every how many sends the fake answers 429.
    flood_every: u64,
}

const FULL: Plan = Plan {
    users: 2000,
    rate: 1000,
    seconds: 10,
    flood_every: 50,
};

const SMOKE: Plan = Plan {
    users: 10,
    rate: 10,
    seconds: 2,
    flood_every: 5,
};

/// Waits until every user's chat holds `each` messages.
async fn replies(telegram: &FakeTelegram, users: &[FakeUser], each: usize) {
    for user in users {
        telegram
            .wait_for_message_after(user.id as i64, each - 1, WAIT, |_| true)
            .await;
    }
}

/// Calls `send(0..n)` spread evenly at `rate` a second.
async fn at_rate(rate: u64, n: usize, mut send: impl FnMut(usize)) {
    let started = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(5));
    let mut sent = 0;
    while sent < n {
        every.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
        while sent < due {
            send(sent);
            sent += 1;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let plan = if full { &FULL } else { &SMOKE };
    let ticks = ticks_per_sec();

    let server = FastServer::start().await;
    let url = server.mcp_url();
    let telegram = FakeTelegram::start().await;
    let bot = Bot::start(&telegram, |dir| {
        support::config(&telegram, dir, "fast", &url, "messages_per_second = 1000")
    })
    .await;
    let users: Vec<FakeUser> = (0..plan.users)
        .map(|i| telegram.user(10_000 + i, &format!("User{i}")))
        .collect();

    // Warm: every user's session, one call each, at the planned rate.
    eprintln!("warming {} sessions", users.len());
    at_rate(plan.rate, users.len(), |i| {
        telegram.send_private(&users[i], CALL);
    })
    .await;
    replies(&telegram, &users, 1).await;

    // Load: `rate` updates a second for `seconds`, round robin.
    telegram.answer_429_every(Some(plan.flood_every), 1);
    let total = (plan.rate * plan.seconds) as usize;
    eprintln!(
        "sending {total} updates at {}/s to {} users",
        plan.rate, plan.users
    );
    let (bot_before, own_before) = (bot.cpu(ticks), cpu_of("self", ticks));
    let started = Instant::now();
    at_rate(plan.rate, total, |i| {
        // Each user alternates: rounds of the whole user list.
        let round = i / users.len();
        let text = if round.is_multiple_of(2) { TOOLS } else { CALL };
        telegram.send_private(&users[i % users.len()], text);
    })
    .await;
    let sending = started.elapsed();
    let (bot_sent, own_sent) = (bot.cpu(ticks), cpu_of("self", ticks));
    // Every user: the warm-up reply plus one per update of theirs.
    let expected: Vec<usize> = (0..users.len())
        .map(|i| 1 + total / users.len() + usize::from(i < total % users.len()))
        .collect();
    for (user, each) in users.iter().zip(&expected) {
        replies(&telegram, std::slice::from_ref(user), *each).await;
    }
    let answered = started.elapsed();
    let (bot_after, own_after) = (bot.cpu(ticks), cpu_of("self", ticks));
    let peak = bot.peak_rss();

    let received: usize = users
        .iter()
        .map(|user| telegram.message_count(user.id as i64))
        .sum::<usize>()
        - users.len();
    let sums = users
        .iter()
        .flat_map(|user| telegram.messages(user.id as i64))
        .filter(|m| m.text.contains(SUM))
        .count()
        - users.len();
    let violations = telegram.retry_after_violations().len();
    let limited = telegram.rate_limited_count();
    bot.stop().await;

    let bot_cpu = bot_after - bot_before;
    let per_update = bot_cpu.as_secs_f64() * 1000.0 / total as f64;
    let cores_under_load = (bot_sent - bot_before).as_secs_f64() / sending.as_secs_f64();
    let mode = if full {
        "`cargo bench --bench perf_load`"
    } else {
        "smoke run (tiny counts; not numbers to quote)"
    };
    println!();
    println!(
        "Machine: {} cores, {mode}; {} users, {total} updates at {}/s, every {}th send answered 429.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.users,
        plan.rate,
        plan.flood_every
    );
    println!();
    println!("| measure | result |");
    println!("| --- | --- |");
    println!(
        "| updates sent / replies received (calls answered with the sum) | {total} / {received} ({sums}) |"
    );
    println!(
        "| sending took (the plan: {} s) | {:.2} s |",
        plan.seconds,
        sending.as_secs_f64()
    );
    println!(
        "| last reply after the last update | {:.2} s |",
        (answered - sending).as_secs_f64()
    );
    println!("| 429s answered / sends before retry_after | {limited} / {violations} |");
    println!("| bot CPU per update (the drain included) | {per_update:.3} ms |");
    println!("| bot CPU while updates arrived | {cores_under_load:.2} cores |");
    println!(
        "| this process (fake Telegram, MCP server, load) while updates arrived | {:.2} cores |",
        (own_sent - own_before).as_secs_f64() / sending.as_secs_f64()
    );
    println!(
        "| this process in all | {:.2} s of CPU |",
        (own_after - own_before).as_secs_f64()
    );
    println!("| bot peak RSS | {:.1} MB |", peak as f64 / 1e6);

    assert_eq!(received, total, "a reply was lost");
    let calls = (0..total).filter(|i| (i / users.len()) % 2 == 1).count();
    assert_eq!(sums, calls, "every /call answered with its sum");
    assert_eq!(violations, 0, "the bot sent before retry_after");
    assert!(limited > 0, "flood control answered no 429");
}
