//! Many users connecting at once: N Telegram users each send
//! `/connect oidc` at the same moment, a scripted browser per user signs
//! in at the authorization server (oidc-provider's own login and consent
//! forms; the login becomes the token's subject) and lands on the bot's
//! callback, the bot confirms in the chat; then every user sends
//! `/call oidc whoami` and the answer must name that user's own login,
//! never another's.
//!
//! The real `mcpgram` release binary runs on the fake Telegram, with the
//! oidc-provider peer (`tests/peers/oidc-mcp.mjs`; `tests/setup.sh`
//! installs it) given a store large enough for N sign-ins under way at
//! once. Its MCP server's `whoami` answers the access token's subject, so
//! a token delivered to the wrong user shows.
//!
//! The connects and the calls are two phases (all connects, then all
//! calls), so the bot's CPU time per connect flow is measured alone.
//! One flow first, not counted, registers the bot's OAuth client and opens
//! its connections, as on a bot that has been running.
//!
//! `cargo bench --bench perf_connects` measures 1,000 flows; `cargo test
//! --bench perf_connects` (no `--bench` argument) runs 5, asserting only
//! that every flow completed and none was cross-wired.
//!
//! `cargo bench --bench perf_connects -- --replicas` compares connects
//! per second through one replica and through two, in the same run: each
//! on a fresh PostgreSQL database, in webhook mode behind a round-robin
//! front, sending at 1,000 messages a second (so the bot, not Telegram's
//! limit, is measured).
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use fake_telegram::{FakeTelegram, FakeUser};
use support::{Bot, at, cpu_of, kernel, ms, status_mib, ticks_per_sec};
use test_peers::OidcMcpServer;
use test_peers::form_browser::FormBrowser;
use tokio::sync::Semaphore;

struct Plan {
    full: bool,
    users: u64,
    /// Flows under way at once (a semaphore), `users` for all at once.
    in_flight: usize,
    /// For each wait on the bot: every reply goes through Telegram's
    /// 30 messages a second for the whole bot, so with 1,000 users the
    /// last of a phase's replies leaves some 35 s after the first.
    wait: Duration,
}

impl Plan {
    fn new(full: bool) -> Self {
        let users = if full { 1000 } else { 5 };
        Self {
            full,
            users,
            in_flight: users as usize,
            wait: if full {
                Duration::from_secs(600)
            } else {
                Duration::from_secs(60)
            },
        }
    }
}

const CONNECTED: &str = "Connected to Oidc";
/// From the link's message to the user opening it.
const THINK: Duration = Duration::from_secs(1);

/// The bench's config: the oidc peer's MCP server, signed in to per user.
fn config_text(telegram: &FakeTelegram, dir: &Path, mcp_url: &str) -> String {
    support::config(telegram, dir, "oidc", mcp_url, "")
        + "name = \"Oidc\"\ntimeout_secs = 60\n[mcp.servers.oauth]\nenabled = true\n"
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// The scripted browser
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// One user's flow
// ---------------------------------------------------------------------------

struct Connected {
    /// `/connect` sent → the message with the link recorded by the fake.
    link: Duration,
    /// The browser requested the bot's callback → "Connected to Oidc"
    /// recorded by the fake.
    confirmed: Duration,
}

fn login_of(user: &FakeUser) -> String {
    format!("user{:05}@example.org", user.id)
}

async fn connect(
    telegram: &FakeTelegram,
    http: reqwest::Client,
    user: &FakeUser,
    wait: Duration,
) -> Connected {
    let chat = user.id as i64;
    let sent = Instant::now();
    telegram.send_private(user, "/connect oidc");
    let offer = telegram
        .wait_for_message(chat, wait, |m| !m.url_buttons().is_empty())
        .await;
    let link_took = sent.elapsed();
    let link = offer.url_buttons()[0].1.clone();
    // A user reads the message before tapping its button. A second is
    // also the chat's gap between two messages (Telegram's limit, kept by
    // the bot), so the confirmation is not held back by the link message
    // and the callback → confirmation time is the bot's own.
    tokio::time::sleep(THINK).await;
    let mut browser = FormBrowser::new(http);
    let login = login_of(user);
    // Waiting for the confirmation alongside the browser, so its arrival
    // is timed even when it comes before the callback page does.
    let (page, confirmed_at) = tokio::join!(browser.sign_in(&link, &login), async {
        telegram
            .wait_for_message(chat, wait, |m| m.text.contains(CONNECTED))
            .await;
        Instant::now()
    });
    let page = page.unwrap_or_else(|error| panic!("browser: {error}"));
    assert_eq!(page.url.path(), "/oauth/callback", "{}", page.body);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(CONNECTED), "{}", page.body);
    let callback_at = browser
        .callback_at
        .expect("the browser reached the callback");
    Connected {
        link: link_took,
        confirmed: confirmed_at.saturating_duration_since(callback_at),
    }
}

/// `/call oidc whoami`: whether the answer names this user's own login
/// (`true`) or another subject (`false`, cross-wired). Any other answer
/// (the call failed) panics with its text; it is the chat's first message
/// after the confirmation but for the "⏳ Running…" note a slow call gets
/// first, so a failure is counted when it comes instead of waiting out
/// `wait` for a subject that will not come.
async fn whoami(telegram: &FakeTelegram, user: &FakeUser, wait: Duration) -> bool {
    telegram.send_private(user, "/call oidc whoami");
    let answer = telegram
        .wait_for_message(user.id as i64, wait, |m| !m.text.starts_with("⏳"))
        .await;
    assert!(answer.text.contains("sub="), "answered: {}", answer.text);
    answer.text.contains(&format!("sub={} ", login_of(user)))
}

/// Runs `work` for every user, at most `in_flight` at once; each result,
/// or the panic that ended it, by user.
async fn for_all<T, F, Fut>(users: &[FakeUser], in_flight: usize, work: F) -> Vec<Result<T, String>>
where
    T: Send + 'static,
    F: Fn(FakeUser) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(in_flight));
    let tasks: Vec<_> = users
        .iter()
        .map(|user| {
            let gate = gate.clone();
            let job = work(user.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                job.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.map_err(|e| {
            match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into()),
                Err(e) => e.to_string(),
            }
        }));
    }
    results
}

// ---------------------------------------------------------------------------
// Several replicas
// ---------------------------------------------------------------------------

/// Flows under way at once when comparing replicas: with Telegram's
/// pace lifted, a thousand browsers at once would only measure
/// oidc-provider's queue (it drops connections under that).
const REPLICA_FLOWS_IN_FLIGHT: usize = 100;

/// Connects per second through one replica and through two.
async fn replicas(plan: &Plan) {
    let in_flight = plan.in_flight.min(REPLICA_FLOWS_IN_FLIGHT);
    let ticks = ticks_per_sec();
    let oidc = OidcMcpServer::start_for_load(plan.users * 50 + 5000).await;
    let node = oidc.pid().expect("the peer runs");
    let cluster = test_peers::postgres::cluster();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(plan.wait)
        .build()
        .unwrap();
    println!();
    println!(
        "Machine: {} cores, shared; Linux {}. {} users per run, {in_flight} under way at \
         once; PostgreSQL store, webhook mode behind a round-robin front, 1,000 messages a \
         second.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel(),
        plan.users,
    );
    println!();
    println!(
        "| replicas | flows completed | wall | flows/s | bot CPU per flow | peer CPU per flow |"
    );
    println!("|---|---|---|---|---|---|");
    for (round, count) in [1usize, 2, 1, 2].into_iter().enumerate() {
        let db = cluster.database();
        let telegram = FakeTelegram::start().await;
        let key = age_key();
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("MCPGRAM_VAULT_KEY", key.as_str()),
            ("WEBHOOK_SECRET", "bench_Webhook-secret"),
        ];
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let public = format!("http://{}", listener.local_addr().unwrap());
        let ports: Vec<u16> = (0..count)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let _front = test_peers::round_robin::RoundRobin::start(
            listener,
            ports
                .iter()
                .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], *port)))
                .collect(),
        );
        let mut bots = Vec::new();
        for port in &ports {
            let text = |dir: &Path| {
                config_text(&telegram, dir, &oidc.mcp_url())
                    .replace(
                        "listen = \"127.0.0.1:0\"",
                        &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"{public}\""),
                    )
                    .replace(
                        "[http]",
                        "mode = \"webhook\"\nwebhook_secret = \"${WEBHOOK_SECRET}\"\nmessages_per_second = 1000\n\n[http]",
                    )
                    + "\n[store]\nkind = \"postgres\"\nurl = \"${DATABASE_URL}\"\n"
            };
            bots.push(Bot::start_with_env(&telegram, &env, text).await);
        }
        // Not counted: registers the client, opens the connections.
        let base = 1_000_000 * (round as u64 + 1);
        let first = telegram.user(base, "Warm");
        connect(&telegram, http.clone(), &first, plan.wait).await;
        let users: Vec<FakeUser> = (1..=plan.users)
            .map(|i| telegram.user(base + i, &format!("User{i}")))
            .collect();
        let pids: Vec<String> = bots.iter().map(|b| b.pid().to_string()).collect();
        let bot_cpu = || pids.iter().map(|pid| cpu_of(pid, ticks)).sum::<Duration>();
        let (bot_before, node_before) = (bot_cpu(), cpu_of(&node.to_string(), ticks));
        let started = Instant::now();
        let connects = for_all(&users, in_flight, |user| {
            let (telegram, http, wait) = (telegram.clone(), http.clone(), plan.wait);
            async move { connect(&telegram, http, &user, wait).await }
        })
        .await;
        let wall = started.elapsed();
        let (bot_used, node_used) = (
            bot_cpu() - bot_before,
            cpu_of(&node.to_string(), ticks) - node_before,
        );
        let completed = connects.iter().filter(|r| r.is_ok()).count();
        let per_flow = |cpu: Duration| ms(cpu) / completed.max(1) as f64;
        println!(
            "| {count} | {completed} / {} | {:.1} s | {:.1} | {:.2} ms | {:.2} ms |",
            users.len(),
            wall.as_secs_f64(),
            completed as f64 / wall.as_secs_f64(),
            per_flow(bot_used),
            per_flow(node_used),
        );
        for failure in failures(&connects) {
            println!("failed: {failure}");
        }
        for bot in bots {
            bot.stop().await;
        }
        assert_eq!(completed, users.len(), "every flow completes");
    }
    println!();
    println!(
        "Each flow waits a second between the link and the browser (a user reading), so the \
         wall time includes that second once; rounds alternate 1, 2, 1, 2."
    );
}

/// A fresh age identity, as every replica's shared vault key.
fn age_key() -> String {
    use age::secrecy::ExposeSecret;
    age::x25519::Identity::generate()
        .to_string()
        .expose_secret()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

fn quantiles(mut took: Vec<Duration>) -> String {
    if took.is_empty() {
        return "–".into();
    }
    took.sort();
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(at(&took, 0.5)),
        ms(at(&took, 0.99)),
        ms(*took.last().unwrap())
    )
}

/// The peer's request counts (by method and path) between two of its
/// `requests` snapshots, per user.
fn per_user(before: &serde_json::Value, after: &serde_json::Value, users: usize) -> String {
    let count = |v: &serde_json::Value, key: &str| v[key].as_u64().unwrap_or(0);
    let mut lines: Vec<String> = after
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, _)| {
            let made = count(after, key) - count(before, key);
            (made > 0).then(|| format!("{key} {:.2}", made as f64 / users.max(1) as f64))
        })
        .collect();
    lines.sort();
    lines.join(", ")
}

/// The first few failures, one line each.
fn failures<T>(results: &[Result<T, String>]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .take(3)
        .map(|e| e.lines().take(3).collect::<Vec<_>>().join(" / "))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let plan = Plan::new(std::env::args().any(|arg| arg == "--bench"));
    if std::env::args().any(|arg| arg == "--replicas") {
        return replicas(&plan).await;
    }
    let ticks = ticks_per_sec();

    // Several entries per sign-in under way (interactions, session, grant,
    // code, refresh token and their indexes), with room to spare.
    let oidc = OidcMcpServer::start_for_load(plan.users * 20 + 1000).await;
    let node = oidc.pid().expect("the peer runs");
    let telegram = FakeTelegram::start().await;
    let bot = Bot::start(&telegram, |dir| {
        config_text(&telegram, dir, &oidc.mcp_url())
    })
    .await;
    let pid = bot.pid();
    let idle_rss = status_mib(pid, "VmRSS");
    // One pooled client for every browser (cookies are each user's own):
    // loopback sockets stay reused instead of thousands opened.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(plan.wait)
        .build()
        .unwrap();

    // Not counted: registers the client, opens the bot's connections.
    let first = telegram.user(1, "Warm");
    connect(&telegram, http.clone(), &first, plan.wait).await;
    assert!(whoami(&telegram, &first, plan.wait).await);
    let registered = oidc.stats().await["registrations"].as_u64().unwrap_or(0);

    let users: Vec<FakeUser> = (0..plan.users)
        .map(|i| telegram.user(100_000 + i, &format!("User{i}")))
        .collect();

    let requests_before = oidc.stats().await["requests"].clone();
    let me = std::process::id();
    let harness_before = cpu_of(&me.to_string(), ticks);
    let (bot_before, node_before) = (
        cpu_of(&pid.to_string(), ticks),
        cpu_of(&node.to_string(), ticks),
    );
    let started = Instant::now();
    let connects = for_all(&users, plan.in_flight, |user| {
        let (telegram, http, wait) = (telegram.clone(), http.clone(), plan.wait);
        async move { connect(&telegram, http, &user, wait).await }
    })
    .await;
    let connect_wall = started.elapsed();
    let (bot_connects, node_connects) = (
        cpu_of(&pid.to_string(), ticks) - bot_before,
        cpu_of(&node.to_string(), ticks) - node_before,
    );
    let connect_rss = status_mib(pid, "VmHWM");
    let requests_connected = oidc.stats().await["requests"].clone();

    // Calls, for those connected.
    let connected: Vec<FakeUser> = users
        .iter()
        .zip(&connects)
        .filter(|(_, r)| r.is_ok())
        .map(|(u, _)| u.clone())
        .collect();
    let (bot_before, node_before) = (
        cpu_of(&pid.to_string(), ticks),
        cpu_of(&node.to_string(), ticks),
    );
    let started = Instant::now();
    let calls = for_all(&connected, plan.in_flight, |user| {
        let (telegram, wait) = (telegram.clone(), plan.wait);
        async move { whoami(&telegram, &user, wait).await }
    })
    .await;
    let call_wall = started.elapsed();
    let (bot_calls, node_calls) = (
        cpu_of(&pid.to_string(), ticks) - bot_before,
        cpu_of(&node.to_string(), ticks) - node_before,
    );
    let peak_rss = status_mib(pid, "VmHWM");
    let harness = cpu_of(&me.to_string(), ticks) - harness_before;
    let stats = oidc.stats().await;
    let warnings = bot.warnings();
    let log = bot.log();
    bot.stop().await;

    let n = users.len();
    let completed = connects.iter().filter(|r| r.is_ok()).count();
    let own = calls.iter().filter(|r| matches!(r, Ok(true))).count();
    let cross_wired = calls.iter().filter(|r| matches!(r, Ok(false))).count();
    let unanswered = calls.iter().filter(|r| r.is_err()).count();
    let (links, confirmations): (Vec<_>, Vec<_>) = connects
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|c| (c.link, c.confirmed))
        .unzip();
    let per_flow = |cpu: Duration| ms(cpu) / completed.max(1) as f64;

    println!();
    println!(
        "Machine: {} cores (available_parallelism), shared with other builds, so numbers are \
         noisy; Linux {}; {}. {n} users, {} flows under way at once, each user opening the link \
         {} s after it arrived; the `mcpgram` binary (release under `cargo bench`) on the fake \
         Telegram, sending within Telegram's limits (1 message a second per chat, 30 a second \
         in all); the peer is oidc-provider and its MCP server in one node process.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel(),
        if plan.full {
            "`cargo bench --bench perf_connects`"
        } else {
            "smoke run (tiny counts; not numbers to quote)"
        },
        plan.in_flight,
        THINK.as_secs_f64(),
    );
    println!();
    println!("| Measurement | Result | Goal |");
    println!("|---|---|---|");
    println!(
        "| Connect flows completed | {completed} / {n} ({:.1} %) | 100 % |",
        completed as f64 * 100.0 / n as f64
    );
    println!(
        "| `whoami` naming the user's own login | {own} / {completed}; cross-wired {cross_wired}, \
         unanswered {unanswered} | 0 cross-wired |"
    );
    println!(
        "| Connect phase, wall | {:.1} s, {:.1} flows/s | |",
        connect_wall.as_secs_f64(),
        completed as f64 / connect_wall.as_secs_f64()
    );
    println!(
        "| Bot CPU, connect phase | {:.0} ms, {:.2} ms per flow | ≤ 1 ms per flow |",
        ms(bot_connects),
        per_flow(bot_connects)
    );
    println!(
        "| Peer (node) CPU, connect phase | {:.0} ms, {:.2} ms per flow | |",
        ms(node_connects),
        per_flow(node_connects)
    );
    println!("| `/connect` → link in the chat | {} | |", quantiles(links));
    println!(
        "| Callback requested → \"Connected\" in the chat | {} | |",
        quantiles(confirmations)
    );
    println!(
        "| `whoami` phase, wall | {:.1} s, {:.1} calls/s | |",
        call_wall.as_secs_f64(),
        own as f64 / call_wall.as_secs_f64()
    );
    println!(
        "| Bot CPU, `whoami` phase | {:.0} ms, {:.2} ms per call | |",
        ms(bot_calls),
        ms(bot_calls) / connected.len().max(1) as f64
    );
    println!(
        "| Peer (node) CPU, `whoami` phase | {:.0} ms, {:.2} ms per call | |",
        ms(node_calls),
        ms(node_calls) / connected.len().max(1) as f64
    );
    println!(
        "| Bot peak RSS (VmHWM) | {connect_rss:.1} MiB after the connects, {peak_rss:.1} MiB \
         at the end (idle after start-up: {idle_rss:.1} MiB) | reported |"
    );
    println!(
        "| Client registrations at the server | {} (the uncounted first flow: {registered}) | |",
        stats["registrations"]
    );
    println!("| Bot log lines at WARN or ERROR | {warnings} | |");
    println!(
        "| This bench's own CPU (fake Telegram, browsers), both phases | {:.0} ms | |",
        ms(harness)
    );
    println!();
    println!("CPU is utime+stime from /proc ({ticks} ticks/s).");
    println!();
    println!(
        "Requests at the peer per user, connect phase (the browser's and the bot's): {}",
        per_user(&requests_before, &requests_connected, n)
    );
    println!(
        "Requests at the peer per user, `whoami` phase: {}",
        per_user(&requests_connected, &stats["requests"], connected.len())
    );
    for failure in failures(&connects) {
        println!("connect failed: {failure}");
    }
    for failure in failures(&calls) {
        println!("whoami failed: {failure}");
    }
    if completed != n || own != completed {
        eprintln!("the bot's log ends:\n{log}");
    }
    assert_eq!(completed, n, "every connect flow completes");
    assert_eq!(cross_wired, 0, "no user gets another's identity");
    assert_eq!(own, n, "every user's whoami answered");
    assert!(
        telegram.errors().is_empty(),
        "the fake rejected calls: {:?}",
        telegram.errors()
    );
}
