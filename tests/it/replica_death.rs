//! A replica killed with SIGKILL in the middle of many users' connects
//! and calls, behind a front that, like a load balancer, sends everything
//! to the survivor from then on. Nothing is lost: every connect and call
//! completes, or its user is told to send it again (and then it
//! completes); nobody sees another user's result; every user can still
//! call afterwards; no refresh token is spent twice across the expiry the
//! calls cross; and no update stays unanswered in the journal.
//!
//! Users sign in at oidc-provider (its own login and consent forms; the
//! login becomes the token's subject, which `whoami` names), whose short
//! access tokens make the calls cross an expiry. The slow users' call is
//! the TypeScript demo server's `multi-greet` (two seconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake_telegram::{FakeTelegram, FakeUser, SentMessage};

use test_peers::form_browser::FormBrowser;
use test_peers::{OidcMcpServer, TsDemoServer};

use crate::support::bot::{BotProcess, demo_server};
use crate::support::replicas::{SECRET, Shared};

/// Users who connect and then call: half before the kill, half from the
/// moment of it.
const USERS: u64 = 100;
/// Calls per user, one after the other (one command at a time per user).
const CALLS: usize = 10;
/// Users whose slow call is running on the replica when it is killed.
const SLOW: u64 = 10;
/// Calls answered before the kill.
const KILL_AFTER: usize = 150;
/// How long a dead replica's holds last: short, so the test need not
/// wait a minute for them.
const LEASE: &str = "3s";
/// A user waits this long for any answer before sending again.
const ATTEMPT: Duration = Duration::from_secs(20);
/// oidc-provider's access tokens live this long: the calls cross an expiry.
const ACCESS_TTL: u64 = 15;
/// The whole test's bound.
const WHOLE: Duration = Duration::from_secs(120);

const RETRY: &str = "please send it again";
const BUSY: &str = "Still working";

#[derive(Default)]
struct Tally {
    interrupted: AtomicUsize,
    busy: AtomicUsize,
    silent: AtomicUsize,
    browser_failures: AtomicUsize,
    links: AtomicUsize,
    reconnects: AtomicUsize,
}

struct World {
    telegram: FakeTelegram,
    tally: Tally,
    calls_done: tokio::sync::watch::Sender<usize>,
}

enum Reply {
    Wanted(Box<SentMessage>),
    Interrupted,
    Busy,
    /// A connect button instead (the tokens were refused): the command
    /// runs once the user has connected again.
    Reconnect(String),
    Silent,
}

/// Sends `text` as `user` and waits for the wanted answer, a "send it
/// again", or a "still working".
async fn ask(
    world: &World,
    user: &FakeUser,
    text: &str,
    wanted: impl Fn(&SentMessage) -> bool,
) -> Reply {
    let chat = user.id as i64;
    let before = world.telegram.message_count(chat);
    world.telegram.send_private(user, text);
    let seen = tokio::time::timeout(
        ATTEMPT,
        world
            .telegram
            .wait_for_message_after(chat, before, WHOLE, |m| {
                wanted(m)
                    || m.text.contains(RETRY)
                    || m.text.contains(BUSY)
                    || !m.url_buttons().is_empty()
            }),
    )
    .await;
    match seen {
        Ok(m) if wanted(&m) => Reply::Wanted(Box::new(m)),
        Ok(m) if m.text.contains(RETRY) => Reply::Interrupted,
        Ok(m) if !m.url_buttons().is_empty() => Reply::Reconnect(m.url_buttons()[0].1.clone()),
        Ok(_) => Reply::Busy,
        Err(_) => {
            eprintln!(
                "user {}: no answer to {text:?} at {:?}; messages after it: {:?}; pending updates {}",
                user.id,
                std::time::SystemTime::now(),
                world
                    .telegram
                    .messages(chat)
                    .iter()
                    .skip(before)
                    .map(|m| m.text.clone())
                    .collect::<Vec<_>>(),
                world.telegram.pending_update_count(),
            );
            Reply::Silent
        }
    }
}

/// Asks until the wanted answer comes, as a user would: again after
/// "send it again", again a moment after "still working" (the bot says
/// that once per command, then stays quiet), again after silence.
async fn until_answered(
    world: &World,
    user: &FakeUser,
    text: &str,
    wanted: impl Fn(&SentMessage) -> bool,
) -> SentMessage {
    for _ in 0..20 {
        match ask(world, user, text, &wanted).await {
            Reply::Wanted(m) => return *m,
            Reply::Interrupted => {
                world.tally.interrupted.fetch_add(1, Ordering::Relaxed);
            }
            Reply::Busy => {
                world.tally.busy.fetch_add(1, Ordering::Relaxed);
                // A user reading "still working" waits before asking again.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Reply::Reconnect(link) => {
                world.tally.reconnects.fetch_add(1, Ordering::Relaxed);
                eprintln!("user {}: asked to connect again", user.id);
                let _ = browser().sign_in(&link, &login_of(user)).await;
            }
            Reply::Silent => {
                world.tally.silent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    panic!("user {} never got an answer to {text:?}", user.id);
}

/// One user's browser: its own cookies, a client that follows no
/// redirect by itself. `Err` when a page failed (a replica died under
/// it): the user asks for a new link.
fn browser() -> FormBrowser {
    FormBrowser::new(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap(),
    )
}

fn login_of(user: &FakeUser) -> String {
    format!("user{}@example.org", user.id)
}

/// Connects `user` to `server` ("oidc" or "demo", named "Oidc"/"Demo").
async fn connect(world: &World, user: &FakeUser, server: &str) {
    let connected = if server == "oidc" {
        "Connected to Oidc"
    } else {
        "Connected to Demo"
    };
    for _ in 0..5 {
        let offer = until_answered(world, user, &format!("/connect {server}"), |m| {
            !m.url_buttons().is_empty()
        })
        .await;
        world.tally.links.fetch_add(1, Ordering::Relaxed);
        let page = browser()
            .sign_in(&offer.url_buttons()[0].1, &login_of(user))
            .await;
        match page {
            Ok(page) if page.status == 200 && page.body.contains(connected) => return,
            Ok(page) if page.status == 502 || page.status == 503 => {
                eprintln!(
                    "user {}: the callback page answered {}",
                    user.id, page.status
                );
                world.tally.browser_failures.fetch_add(1, Ordering::Relaxed);
            }
            Ok(page) => panic!(
                "user {}: {} answered {}: {}",
                user.id, page.url, page.status, page.body
            ),
            Err(error) => {
                eprintln!("user {}: a browser page failed: {error}", user.id);
                world.tally.browser_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    panic!("user {} could not connect", user.id);
}

/// `/call oidc whoami`, answered with the user's own subject.
async fn whoami(world: &World, user: &FakeUser) {
    let own = format!("sub={} ", login_of(user));
    until_answered(world, user, "/call oidc whoami", |m| m.text.contains(&own)).await;
}

/// Connects, then calls one after the other.
async fn journey(world: Arc<World>, user: FakeUser) {
    connect(&world, &user, "oidc").await;
    for _ in 0..CALLS {
        whoami(&world, &user).await;
        world.calls_done.send_modify(|done| *done += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_traffic_loses_nothing() {
    let demo = TsDemoServer::start().await;
    let mcp = demo.mcp_url();
    // Several entries per sign-in (interaction, session, grant, code,
    // tokens) and more per refresh: room for all of them.
    let oidc = OidcMcpServer::start_for_load_with_access_ttl(20_000, ACCESS_TTL).await;
    let oidc_server = format!(
        "\n[[mcp.servers]]\nid = \"oidc\"\nname = \"Oidc\"\nurl = \"{}\"\ntrusted = true\ntimeout_secs = 60\n[mcp.servers.oauth]\nenabled = true\n",
        oidc.mcp_url()
    );
    let telegram = FakeTelegram::start().await;
    let shared = Shared::start();
    let (front, env) = (&shared.front, shared.env());
    let config = |dir: &std::path::Path, index| {
        shared
            .config(&telegram, dir, index)
            .replace("[telegram]\n", "[telegram]\nmessages_per_second = 1000\n")
            + &format!("lease = \"{LEASE}\"\n")
            + &demo_server(&mcp)
            + &oidc_server
    };
    let victim = BotProcess::start_with_env(&telegram, &env, |dir| config(dir, 0)).await;
    let survivor = BotProcess::start_with_env(&telegram, &env, |dir| config(dir, 1)).await;
    let started = std::time::Instant::now();
    let pool = sqlx::PgPool::connect(shared.database_url()).await.unwrap();

    let (calls_done, mut answered) = tokio::sync::watch::channel(0);
    let world = Arc::new(World {
        telegram: telegram.clone(),
        tally: Tally::default(),
        calls_done,
    });
    let users: Vec<FakeUser> = (0..USERS)
        .map(|i| telegram.user(20_000 + i, &format!("U{i}")))
        .collect();
    let slow: Vec<FakeUser> = (0..SLOW)
        .map(|i| telegram.user(30_000 + i, &format!("S{i}")))
        .collect();
    let (early, late) = users.split_at(users.len() / 2);

    // The slow users connect first; then half the users go.
    let connected = slow.iter().map(|user| {
        let world = world.clone();
        async move { connect(&world, user, "demo").await }
    });
    futures_util::future::join_all(connected).await;
    let mut journeys: Vec<_> = early
        .iter()
        .map(|user| tokio::spawn(journey(world.clone(), user.clone())))
        .collect();

    tokio::time::timeout(WHOLE, answered.wait_for(|done| *done >= KILL_AFTER))
        .await
        .expect("the calls before the kill never came through")
        .unwrap();
    // Slow calls sent to the replica about to die, and seen running.
    for user in &slow {
        front.pin_next_holding("/telegram/webhook", &format!("slow{}", user.id), 0);
        telegram.send_private(
            user,
            &format!("/call demo multi-greet {{\"name\": \"slow{}\"}}", user.id),
        );
    }
    // Running once the replica recorded them (and not yet done: the
    // call takes two seconds).
    let slow_ids: Vec<i64> = slow.iter().map(|u| u.id as i64).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (running,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM update_journal WHERE user_id = ANY($1) AND NOT done",
        )
        .bind(&slow_ids)
        .fetch_one(&pool)
        .await
        .unwrap();
        if running == SLOW as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow calls never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The other half sets out as the replica dies.
    journeys.extend(
        late.iter()
            .map(|user| tokio::spawn(journey(world.clone(), user.clone()))),
    );
    let killed_at = started.elapsed();
    let calls_before_kill = *answered.borrow();
    let victim_logs = victim.kill().await;

    // Each slow user is told their call was cut short, and then it works.
    for user in &slow {
        let chat = user.id as i64;
        telegram
            .wait_for_message(chat, Duration::from_secs(30), |m| m.text.contains(RETRY))
            .await;
        world.tally.interrupted.fetch_add(1, Ordering::Relaxed);
        let name = format!("slow{}", user.id);
        until_answered(
            &world,
            user,
            &format!("/call demo multi-greet {{\"name\": \"{name}\"}}"),
            |m| m.text.contains(&format!("Good morning, {name}!")),
        )
        .await;
    }
    for journey in journeys {
        tokio::time::timeout(WHOLE, journey).await.unwrap().unwrap();
    }
    // Everyone can still call.
    let finals = users.iter().map(|user| {
        let world = world.clone();
        async move { whoami(&world, user).await }
    });
    futures_util::future::join_all(finals).await;
    let took = started.elapsed();

    // Nobody saw another user's result.
    for user in &users {
        only_own(&telegram, user, "sub=", &format!("sub={} ", login_of(user)));
    }
    for user in &slow {
        let own = format!("Good morning, slow{}!", user.id);
        only_own(&telegram, user, "Good morning", &own);
    }
    // No refresh token spent twice: oidc-provider would have revoked the
    // grant (reuse detection), and the user's calls would have failed.
    let stats = oidc.stats().await;
    // No update is left unanswered: every journal row is done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (open,): (i64,) = sqlx::query_as("SELECT count(*) FROM update_journal WHERE NOT done")
            .fetch_one(&pool)
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} updates never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;

    let tally = &world.tally;
    eprintln!(
        "{USERS} users + {SLOW} slow, {CALLS} calls each; killed at {killed_at:?} after \
         {} calls; done in {took:?}; links {}, told to send again {}, still working {}, \
         silent {}, browser pages failed {}, asked to connect again {}; \
         authorization server: {stats}",
        calls_before_kill,
        tally.links.load(Ordering::Relaxed),
        tally.interrupted.load(Ordering::Relaxed),
        tally.busy.load(Ordering::Relaxed),
        tally.silent.load(Ordering::Relaxed),
        tally.browser_failures.load(Ordering::Relaxed),
        tally.reconnects.load(Ordering::Relaxed),
    );
    assert_eq!(
        tally.silent.load(Ordering::Relaxed),
        0,
        "a request went unanswered"
    );
    let survivor_logs = survivor.stop().await;
    assert!(
        survivor_logs.contains("took over updates a stopped replica had not finished"),
        "{survivor_logs}"
    );
    for logs in [&victim_logs, &survivor_logs] {
        assert!(!logs.contains(SECRET), "the webhook secret in a log");
        assert!(!logs.contains("panicked"), "{logs}");
    }
    telegram.assert_no_errors();
}

/// Every message of `user`'s that holds `marker` is their own (holds `own`).
fn only_own(telegram: &FakeTelegram, user: &FakeUser, marker: &str, own: &str) {
    for message in telegram.messages(user.id as i64) {
        assert!(
            !message.text.contains(marker) || message.text.contains(own),
            "user {} got {:?}",
            user.id,
            message.text
        );
    }
}
