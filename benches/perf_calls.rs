//! What the bot adds to an MCP tool call: `get-sum {"a":1,"b":2}` on the
//! official everything server (the test peer; `tests/setup.sh` installs it),
//!
//! - A, direct: one warm rmcp session, sequential calls;
//! - B, through the bot: the real `mcpgram` binary on the fake Telegram, a
//!   user sends `/call every get-sum {"a": 1, "b": 2}`, timed until the
//!   reply with the sum is recorded by the fake;
//! - C, the fake alone: the same round trip with a minimal echo bot (one
//!   long poll, one `sendMessage`), i.e. what the fake and two HTTP
//!   exchanges cost by themselves; C', the same echo bot in a process of
//!   its own, as the real bot is (this bench binary run again): what any
//!   bot pays for crossing processes, before doing anything;
//!
//! interleaved in blocks (A, B, C, A, B, C, ...) since the machine is
//! shared. B goes round robin over many users, each warmed first (sessions
//! are per user and server), so Telegram's per-chat pace (one message per
//! second per chat, `src/telegram/pace.rs`) is never what a call waits
//! for. Then the same A and B with an idle pause before each call
//! ("paced"), as a user's calls come.
//!
//! `cargo bench --bench perf_calls` measures; `cargo test --bench
//! perf_calls` (no `--bench` argument) runs a smoke pass with tiny counts.
mod support;

use std::time::{Duration, Instant};

use fake_telegram::{FakeTelegram, FakeUser};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use support::{Bot, Row, ms, row, ticks_per_sec};
use test_peers::EverythingServer;

/// Calls back to back answer faster than Telegram's 30 messages a second
/// for an ordinary bot, which the bot would (rightly) wait for: the
/// limit of paid broadcasts lets the bench measure the bot's own cost.
const PACE: &str = "messages_per_second = 1000";
const CALL: &str = r#"/call every get-sum {"a": 1, "b": 2}"#;
const SUM: &str = "The sum of 1 and 2 is 3.";
const WAIT: Duration = Duration::from_secs(60);

struct Counts {
    blocks: usize,
    per_block: usize,
    users: u64,
    paced_blocks: usize,
    paced_per_block: usize,
    pause: Duration,
}

const FULL: Counts = Counts {
    blocks: 10,
    per_block: 50,
    users: 200,
    paced_blocks: 4,
    paced_per_block: 25,
    pause: Duration::from_millis(300),
};

const SMOKE: Counts = Counts {
    blocks: 2,
    per_block: 3,
    users: 4,
    paced_blocks: 1,
    paced_per_block: 2,
    pause: Duration::from_millis(300),
};

// ---------------------------------------------------------------------------
// A: rmcp straight to the server
// ---------------------------------------------------------------------------

type Direct = RunningService<RoleClient, ()>;

async fn direct_call(client: &Direct) -> Duration {
    let arguments = serde_json::json!({"a": 1, "b": 2})
        .as_object()
        .cloned()
        .unwrap();
    let start = Instant::now();
    let result = client
        .call_tool(CallToolRequestParams::new("get-sum").with_arguments(arguments))
        .await
        .expect("get-sum answers");
    let took = start.elapsed();
    let text = serde_json::to_string(&result).unwrap();
    assert!(text.contains(SUM), "unexpected result: {text}");
    took
}

// ---------------------------------------------------------------------------
// B: the bot binary on the fake Telegram
// ---------------------------------------------------------------------------

/// One `/call` from `user`, until its reply reaches the fake.
async fn bot_call(telegram: &FakeTelegram, bot: &Bot, user: &FakeUser) -> Duration {
    let call = tokio::time::timeout(WAIT / 2, bot_call_unguarded(telegram, user)).await;
    call.unwrap_or_else(|_| {
        panic!(
            "no reply to user {} within {:?}; {} updates pending at the fake; the chat's last messages: {:?}; the bot's log:\n{}",
            user.id,
            WAIT / 2,
            telegram.pending_update_count(),
            telegram
                .messages(user.id as i64)
                .iter()
                .rev()
                .take(3)
                .map(|m| m.text.clone())
                .collect::<Vec<_>>(),
            bot.log()
        )
    })
}

async fn bot_call_unguarded(telegram: &FakeTelegram, user: &FakeUser) -> Duration {
    let chat = user.id as i64;
    let start = Instant::now();
    telegram.send_private(user, CALL);
    telegram
        .wait_for_message(chat, WAIT, |m| m.text.contains(SUM))
        .await;
    start.elapsed()
}

// ---------------------------------------------------------------------------
// C: the fake with a minimal echo bot
// ---------------------------------------------------------------------------

/// Long-polls `telegram` and answers every message with [`SUM`] at once.
fn echo_bot(telegram: &FakeTelegram) -> tokio::task::JoinHandle<()> {
    let base = format!("{}bot{}", telegram.api_url(), telegram.token());
    tokio::spawn(echo_loop(base))
}

/// The same minimal bot in a process of its own (this bench binary run
/// again), as the real bot is.
fn echo_process(telegram: &FakeTelegram) -> tokio::process::Child {
    let base = format!("{}bot{}", telegram.api_url(), telegram.token());
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(ECHO_ENV, base)
        .kill_on_drop(true)
        .spawn()
        .expect("start the echo bot")
}

const ECHO_ENV: &str = "PERF_CALLS_ECHO_BOT";

async fn echo_loop(base: String) {
    let http = reqwest::Client::new();
    let mut offset = 0i64;
    loop {
        let Ok(response) = http
            .post(format!("{base}/getUpdates"))
            .form(&[("offset", offset.to_string()), ("timeout", "10".to_owned())])
            .send()
            .await
        else {
            return;
        };
        let Ok(body) = response.bytes().await else {
            return;
        };
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for update in body["result"].as_array().into_iter().flatten() {
            offset = update["update_id"].as_i64().unwrap() + 1;
            let chat = update["message"]["chat"]["id"].as_i64().unwrap();
            http.post(format!("{base}/sendMessage"))
                .form(&[("chat_id", chat.to_string()), ("text", SUM.to_owned())])
                .send()
                .await
                .expect("sendMessage")
                .bytes()
                .await
                .unwrap();
        }
    }
}

async fn echo_call(telegram: &FakeTelegram, user: &FakeUser) -> Duration {
    let start = Instant::now();
    telegram.send_private(user, CALL);
    telegram
        .wait_for_message(user.id as i64, WAIT, |m| m.text.contains(SUM))
        .await;
    start.elapsed()
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Some(base) = std::env::var_os(ECHO_ENV) {
        echo_loop(base.into_string().unwrap()).await;
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let counts = if full { &FULL } else { &SMOKE };
    let ticks = ticks_per_sec();

    let server = EverythingServer::start().await;
    let url = server.mcp_url();

    let direct: Direct =
        ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
            .await
            .expect("direct session");

    let telegram = FakeTelegram::start().await;
    let bot = Bot::start(&telegram, |dir| {
        support::config(&telegram, dir, "every", &url, PACE)
    })
    .await;
    let users: Vec<FakeUser> = (0..counts.users)
        .map(|i| telegram.user(1000 + i, &format!("User{i}")))
        .collect();
    // The same bot on the PostgreSQL store (a throwaway cluster), on a
    // fake Telegram of its own.
    let cluster = test_peers::postgres::cluster();
    let database = cluster.database();
    let pg_telegram = FakeTelegram::start().await;
    let pg_bot = Bot::start_with_env(&pg_telegram, &[("DATABASE_URL", &database.url)], |dir| {
        support::config(&pg_telegram, dir, "every", &url, PACE)
            + "\n[store]\nkind = \"postgres\"\nurl = \"${DATABASE_URL}\"\n"
    })
    .await;
    let pg_users: Vec<FakeUser> = (0..counts.users)
        .map(|i| pg_telegram.user(1000 + i, &format!("User{i}")))
        .collect();

    let echo_telegram = FakeTelegram::start().await;
    let echo = echo_bot(&echo_telegram);
    let echo_user = echo_telegram.user(1, "Echo");
    let apart_telegram = FakeTelegram::start().await;
    let apart = echo_process(&apart_telegram);
    let apart_user = apart_telegram.user(1, "Echo");
    let mut c_apart = Vec::new();

    // Warm: the direct session, and every user's session through the bot
    // (all at once; the bot sends at most 30 replies a second).
    for _ in 0..20 {
        direct_call(&direct).await;
        echo_call(&echo_telegram, &echo_user).await;
        echo_call(&apart_telegram, &apart_user).await;
    }
    for (telegram, users) in [(&telegram, &users), (&pg_telegram, &pg_users)] {
        for user in users {
            telegram.send_private(user, CALL);
        }
        for user in users {
            telegram
                .wait_for_message(user.id as i64, WAIT, |m| m.text.contains(SUM))
                .await;
        }
    }
    // Let the pacing's windows pass.
    tokio::time::sleep(if full {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(500)
    })
    .await;

    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut d = Vec::new();
    let mut cpu = Duration::ZERO;
    let mut next_user = 0usize;
    let started = Instant::now();
    for _ in 0..counts.blocks {
        for _ in 0..counts.per_block {
            a.push(direct_call(&direct).await);
        }
        let before = bot.cpu(ticks);
        for _ in 0..counts.per_block {
            let user = &users[next_user % users.len()];
            next_user += 1;
            b.push(bot_call(&telegram, &bot, user).await);
        }
        cpu += bot.cpu(ticks) - before;
        for n in 0..counts.per_block {
            let user = &pg_users[(next_user - counts.per_block + n) % pg_users.len()];
            d.push(bot_call(&pg_telegram, &pg_bot, user).await);
        }
        for _ in 0..counts.per_block {
            c.push(echo_call(&echo_telegram, &echo_user).await);
        }
        for _ in 0..counts.per_block {
            c_apart.push(echo_call(&apart_telegram, &apart_user).await);
        }
    }
    let b_calls = b.len();

    let (mut a_paced, mut b_paced) = (Vec::new(), Vec::new());
    for _ in 0..counts.paced_blocks {
        for _ in 0..counts.paced_per_block {
            tokio::time::sleep(counts.pause).await;
            a_paced.push(direct_call(&direct).await);
        }
        for _ in 0..counts.paced_per_block {
            tokio::time::sleep(counts.pause).await;
            let user = &users[next_user % users.len()];
            next_user += 1;
            b_paced.push(bot_call(&telegram, &bot, user).await);
        }
    }
    let elapsed = started.elapsed();

    echo.abort();
    drop(apart);
    bot.stop().await;
    pg_bot.stop().await;
    drop(direct);
    assert!(
        telegram.errors().is_empty(),
        "the fake rejected calls: {:?}",
        telegram.errors()
    );

    let a = row("A direct (rmcp, one warm session)", a);
    let b = row("B through the bot (/call → reply)", b);
    let d = row("D through the bot on PostgreSQL (/call → reply)", d);
    let c = row("C fake + minimal echo bot", c);
    let c_apart = row("C' the same echo bot in its own process", c_apart);
    let a_paced = row("A direct, paced", a_paced);
    let b_paced = row("B through the bot, paced", b_paced);

    println!(
        "\n{} mode: {} blocks of {} calls per path, interleaved A/B/D/C; B and D round robin over \
         {} users (each warmed; with 200 a chat's 1 msg/s pace never binds); paced rows: {} ms \
         idle before each call, {} blocks of {}. {:.0} s measuring.\n",
        if full { "full" } else { "smoke" },
        counts.blocks,
        counts.per_block,
        counts.users,
        counts.pause.as_millis(),
        counts.paced_blocks,
        counts.paced_per_block,
        elapsed.as_secs_f64(),
    );
    println!("| path | calls | p50 | p99 | ×A p50 | ×A p99 | +ms p50 | +ms p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let line = |r: &Row, base: &Row| {
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2}× | {:.2}× | {:+.2} | {:+.2} |",
            r.name,
            r.n,
            ms(r.p50),
            ms(r.p99),
            ms(r.p50) / ms(base.p50),
            ms(r.p99) / ms(base.p99),
            ms(r.p50) - ms(base.p50),
            ms(r.p99) - ms(base.p99),
        );
    };
    line(&a, &a);
    line(&b, &a);
    line(&d, &a);
    line(&c, &a);
    line(&c_apart, &a);
    line(&a_paced, &a_paced);
    line(&b_paced, &a_paced);
    let per_call = cpu.as_secs_f64() * 1000.0 / b_calls as f64;
    println!(
        "\nbot CPU (utime+stime, /proc, {ticks} ticks/s) over the {b_calls} unpaced B calls: \
         {:.0} ms, {per_call:.2} ms per /call",
        ms(cpu),
    );
    println!("goal: B/A ≤ 1.15× at p50, ≤ 1.3× at p99 (×A columns; paced rows against paced A)");
    assert!(per_call.is_finite());
}
