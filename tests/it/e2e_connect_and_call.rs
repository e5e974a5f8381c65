//! The whole journey on loopback: a Telegram user connects the MCP
//! TypeScript SDK's OAuth-protected example server through the bot, lists
//! and calls its tools; another user gets nothing of hers. Once with the
//! embedded store, once with PostgreSQL.

use std::time::Duration;

use crate::support::bot::{BotProcess, base_config, demo_server, postgres_store};
use crate::support::text_contains;
use fake_telegram::{FakeTelegram, SentMessage};
use mcpgram::vault::{KeySource, Namespace, Vault};
use test_peers::TsDemoServer;
use test_peers::browser;

const WAIT: Duration = Duration::from_secs(60);

/// Every file below `dir`.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn connect_button(message: &SentMessage) -> String {
    let buttons = message.url_buttons();
    assert_eq!(buttons.len(), 1, "one URL button: {message:?}");
    assert!(buttons[0].0.contains("Demo"), "{buttons:?}");
    assert!(message.link_preview_disabled, "link previews must be off");
    buttons[0].1.clone()
}

/// Steps 2 to 4 of the journey: Alice connects through the button, a
/// replayed callback is refused, she lists the tools and calls one.
/// Returns the link and the authorization code.
async fn connect_and_call(
    telegram: &FakeTelegram,
    alice: &fake_telegram::FakeUser,
) -> (String, String) {
    // 2. /connect answers with a native message and one URL button.
    telegram.send_private(alice, "/connect demo");
    let offer = telegram
        .wait_for_message(1001, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    assert!(offer.text.contains("Demo"), "{}", offer.text);
    let link = connect_button(&offer);
    assert!(
        link.contains("/authorize"),
        "button opens the authorize URL: {link}"
    );
    assert!(link.contains("code_challenge_method=S256"), "{link}");
    let state = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("the link carries a state");
    assert!(state.len() >= 43, "a 256-bit state: {state}");

    // 3. The browser approves and lands on the bot's callback.
    let visit = browser::open(&link).await;
    assert_eq!(visit.status, 200, "callback page: {}", visit.body);
    assert!(visit.body.contains("Connected to Demo"), "{}", visit.body);
    assert!(visit.body.contains("close this tab"), "{}", visit.body);
    let callback = visit.hops.last().unwrap().clone();
    assert_eq!(callback.path(), "/oauth/callback");
    let code = visit.last_param("code").expect("the AS sent a code");
    telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Demo"))
        .await;

    // A replayed callback is refused and changes nothing.
    let replay = browser::open(callback.as_str()).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);

    // 4. Tools and a call, with Alice's token.
    telegram.send_private(alice, "/tools demo");
    let tools = telegram
        .wait_for_message(1001, WAIT, text_contains("greet"))
        .await;
    assert!(
        tools.text.contains("• greet — A simple greeting tool"),
        "{}",
        tools.text
    );
    telegram.send_private(alice, "/call demo greet {\"name\": \"Alice\"}");
    telegram
        .wait_for_message(1001, WAIT, text_contains("Hello, Alice!"))
        .await;
    (link, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_connects_lists_and_calls_while_bob_gets_nothing() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &demo_server(&mcp_url)
    })
    .await;
    let alice = telegram.user(1001, "Alice");
    let bob = telegram.user(2002, "Bob");

    let (link, code) = connect_and_call(&telegram, &alice).await;
    telegram.send_private(&alice, "/servers");
    let servers = telegram
        .wait_for_message(1001, WAIT, text_contains("Servers:"))
        .await;
    assert!(
        servers.text.contains("Demo (demo): connected"),
        "{}",
        servers.text
    );

    // 5. Bob never connected: a refusal and his own connect button.
    telegram.send_private(&bob, "/tools demo");
    let refusal = telegram
        .wait_for_message(2002, WAIT, text_contains("not connected"))
        .await;
    assert!(
        refusal.text.contains("You are not connected to Demo"),
        "{}",
        refusal.text
    );
    assert_ne!(connect_button(&refusal), link);
    assert!(
        telegram
            .messages(2002)
            .iter()
            .all(|m| !m.text.contains("greet"))
    );

    // The tokens are in Alice's namespace only, and only encrypted on disk.
    let vault = Vault::open(
        &bot.vault_dir(),
        &KeySource::File(bot.vault_dir().join("identity.txt")),
    )
    .unwrap();
    let record = vault
        .get(Namespace::User(1001), "mcp.oauth.demo.credentials")
        .await
        .unwrap()
        .expect("Alice's tokens are stored");
    let record: serde_json::Value = serde_json::from_str(record.expose()).unwrap();
    let token = record["token_response"]["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    assert!(record["token_received_at"].is_u64(), "{record}");
    assert_eq!(
        vault
            .get(Namespace::User(2002), "mcp.oauth.demo.credentials")
            .await
            .unwrap(),
        None
    );
    for path in files_under(&bot.vault_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "{} holds the token in plaintext",
            path.display()
        );
    }

    // /disconnect deletes them; the next call asks to connect again.
    let bot_vault = bot.vault_dir();
    telegram.send_private(&alice, "/disconnect demo");
    telegram
        .wait_for_message(1001, WAIT, text_contains("Disconnected from Demo"))
        .await;
    telegram.send_private(&alice, "/tools demo");
    telegram
        .wait_for_message(1001, WAIT, text_contains("You are not connected to Demo"))
        .await;

    // Nothing readable is left of the deleted tokens: not in a namespace,
    // a pending flow or a leftover temp file, even with the vault's key.
    let identity: age::x25519::Identity = std::fs::read_to_string(bot_vault.join("identity.txt"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .parse()
        .unwrap();
    for path in files_under(&bot_vault) {
        let bytes = std::fs::read(&path).unwrap();
        let plain = age::decrypt(&identity, &bytes).unwrap_or(bytes);
        assert!(
            !plain.windows(token.len()).any(|w| w == token.as_bytes()),
            "{} still holds the deleted token",
            path.display()
        );
    }
    let logs = bot.stop().await;
    assert!(logs.contains("DEBUG"), "debug logging was on:\n{logs}");
    assert!(
        !logs.contains(&token),
        "the access token leaked into the logs"
    );
    assert!(
        !logs.contains(&code),
        "the authorization code leaked into the logs"
    );
    let commands: Vec<String> = telegram
        .bot_commands()
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    for expected in [
        "start",
        "help",
        "servers",
        "status",
        "connect",
        "tools",
        "call",
        "disconnect",
    ] {
        assert!(
            commands
                .iter()
                .any(|c| c.trim_start_matches('/') == expected),
            "{commands:?}"
        );
    }
    let rejected = telegram.errors();
    assert!(rejected.is_empty(), "Telegram rejected calls: {rejected:?}");
}

/// The same journey with `[store] kind = "postgres"`: the flow, the
/// tokens and the client live in the database, sealed; the vault directory
/// keeps only the key and the system namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_works_with_the_postgres_store_and_the_database_sees_no_token() {
    let cluster = test_peers::postgres::cluster();
    let db = cluster.database();
    // Trust authentication ignores the password; it is there to show it
    // is never logged.
    let url = db.url.replacen("mcpgram@", "mcpgram:pw-NEVER-LOGGED@", 1);
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start_with_env(&telegram, &[("DATABASE_URL", &url)], |dir| {
        base_config(&telegram, dir) + &demo_server(&mcp_url) + &postgres_store()
    })
    .await;
    bot.wait_for_log("keeping state in PostgreSQL", WAIT).await;
    let alice = telegram.user(1001, "Alice");

    let (_link, code) = connect_and_call(&telegram, &alice).await;

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let flows: i64 = sqlx::query_scalar("SELECT count(*) FROM pending_flows")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(flows, 0, "the completed flow was taken from the database");
    let (credentials, row): (Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT credentials, convert_to(c::text, 'UTF8') FROM connections c
         WHERE user_id = 1001 AND server_id = 'demo'",
    )
    .fetch_one(&pool)
    .await
    .expect("Alice's connection is in the database");
    // The bot's key opens it; the database alone shows no token.
    let vault = Vault::open(
        &bot.vault_dir(),
        &KeySource::File(bot.vault_dir().join("identity.txt")),
    )
    .unwrap();
    let opened: serde_json::Value = vault.open_value("credentials", &credentials).unwrap();
    let token = opened["value"]["token_response"]["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();
    assert!(
        !row.windows(token.len()).any(|w| w == token.as_bytes()),
        "the database holds the token in clear"
    );
    assert!(
        !bot.vault_dir().join("user-1001.age").exists(),
        "nothing of Alice's is kept in the vault's files"
    );

    telegram.send_private(&alice, "/disconnect demo");
    telegram
        .wait_for_message(1001, WAIT, text_contains("Disconnected from Demo"))
        .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM connections")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the disconnect deleted the row");
    pool.close().await;

    let logs = bot.stop().await;
    for secret in [token.as_str(), code.as_str(), "pw-NEVER-LOGGED"] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    let rejected = telegram.errors();
    assert!(rejected.is_empty(), "Telegram rejected calls: {rejected:?}");
}
