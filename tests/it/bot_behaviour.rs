//! How the bot answers through the (fake) Telegram when things are not on
//! the happy path: bad input, strangers, groups, and servers that are down
//! or hang.

use std::time::Duration;

use crate::support::bot::{BotProcess, base_config};
use crate::support::{closed_port, text_contains};
use fake_telegram::{BOT_USERNAME, ChatKind, FakeTelegram};
use test_peers::TsDemoServer;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

fn open_server(id: &str, url: &str, timeout_secs: u64) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"{id}\"\nurl = \"{url}\"\ntrusted = true\ntimeout_secs = {timeout_secs}\n"
    )
}

fn oauth_server(id: &str, name: &str, url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"{id}\"\nname = \"{name}\"\nurl = \"{url}\"\ntrusted = true\n[mcp.servers.oauth]\nenabled = true\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_get_one_line_hints() {
    let telegram = FakeTelegram::start().await;
    let closed = closed_port();
    let port = closed.port;
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir)
            + &open_server("down", &format!("http://127.0.0.1:{port}/mcp"), 5)
    })
    .await;
    let alice = telegram.user(1, "Alice");

    for (text, expected) in [
        ("/frobnicate", "Unknown command /frobnicate"),
        ("/connect one two", "Usage: /connect <server>"),
        ("/tools nowhere", "Unknown server \"nowhere\""),
        ("/call down", "Usage: /call"),
        ("/call down tool {oops", "not valid JSON"),
        ("/call down tool [1, 2]", "must be a JSON object"),
        ("hello there", "Send /help"),
    ] {
        telegram.send_private(&alice, text);
        let reply = telegram.wait_for_message(1, WAIT, |_| true).await;
        assert!(
            reply.text.contains(expected),
            "{text:?} got {:?}",
            reply.text
        );
        assert!(
            !reply.text.contains('\n'),
            "one line for {text:?}: {:?}",
            reply.text
        );
    }

    telegram.send_private(&alice, "/help");
    let help = telegram.wait_for_message(1, WAIT, |_| true).await;
    for command in [
        "/connect",
        "/tools",
        "/call",
        "/disconnect",
        "/servers",
        "/status",
    ] {
        assert!(help.text.contains(command), "{}", help.text);
    }
    bot.stop().await;
    telegram.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_server_is_reported_and_a_hanging_one_times_out_without_blocking_others() {
    let telegram = FakeTelegram::start().await;
    let closed = closed_port();
    let down = closed.port;
    // Accepts connections and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}/mcp", hang.local_addr().unwrap());
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir)
            + &open_server(
                "down",
                &format!("http://127.0.0.1:{down}/mcp?api_key=SECRET"),
                5,
            )
            + &open_server("hang", &hang_url, 3)
    })
    .await;
    let alice = telegram.user(1, "Alice");
    let bob = telegram.user(2, "Bob");

    telegram.send_private(&alice, "/tools down");
    let reply = telegram.wait_for_message(1, WAIT, |_| true).await;
    assert!(reply.text.contains("cannot be reached"), "{}", reply.text);
    for internal in ["::", "Transport", "rmcp", "reqwest", "SECRET"] {
        assert!(!reply.text.contains(internal), "{internal}: {}", reply.text);
    }

    telegram.send_private(&alice, "/call hang anything");
    tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("the bot connects to the hanging server in time")
        .expect("the bot connects to the hanging server");
    // While Alice waits on the hanging server, Bob is served.
    telegram.send_private(&bob, "/servers");
    let servers = telegram.wait_for_message(2, WAIT, |_| true).await;
    assert!(servers.text.contains("hang"), "{}", servers.text);
    assert_eq!(telegram.message_count(1), 1, "Alice has no answer yet");

    let timeout = telegram.wait_for_message(1, WAIT, |_| true).await;
    assert!(
        timeout.text.contains("did not answer within 3 s"),
        "{}",
        timeout.text
    );
    let logs = bot.stop().await;
    assert!(
        logs.contains("/mcp?[redacted]"),
        "the failure was logged, its URL scrubbed:\n{logs}"
    );
    assert!(
        !logs.contains("SECRET"),
        "a URL's query string reached the log:\n{logs}"
    );
    holder.abort();
    telegram.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_outside_allowed_users_are_refused() {
    let telegram = FakeTelegram::start().await;
    let closed = closed_port();
    let port = closed.port;
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir).replace("[http]", "allowed_users = [10]\n\n[http]")
            + &open_server("down", &format!("http://127.0.0.1:{port}/mcp"), 5)
    })
    .await;
    let member = telegram.user(10, "Member");
    let stranger = telegram.user(66, "Stranger");

    for text in ["/servers", "/connect down", "/tools down", "/start"] {
        telegram.send_private(&stranger, text);
        let reply = telegram.wait_for_message(66, WAIT, |_| true).await;
        assert_eq!(reply.text, "Sorry, this bot is private.", "for {text}");
    }
    telegram.send_private(&member, "/servers");
    let reply = telegram.wait_for_message(10, WAIT, |_| true).await;
    assert!(reply.text.contains("down"), "{}", reply.text);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_the_link_goes_to_the_private_chat_only() {
    let demo = TsDemoServer::start().await;
    let telegram = FakeTelegram::start().await;
    let mcp_url = demo.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &oauth_server("demo", "Demo", &mcp_url)
    })
    .await;
    let group = ChatKind::Group {
        id: -100,
        title: "Team".into(),
    };
    let alice = telegram.user(1, "Alice");
    let carol = telegram.user(3, "Carol");
    telegram.send_private(&alice, "/start");
    telegram.wait_for_message(1, WAIT, |_| true).await;

    // Alice has a private chat with the bot: the link goes there.
    telegram.send_text(&alice, &group, &format!("/connect@{BOT_USERNAME} demo"));
    telegram
        .wait_for_message(-100, WAIT, text_contains("sent you a private message"))
        .await;
    let private = telegram
        .wait_for_message(1, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    assert!(private.url_buttons()[0].1.contains("/authorize"));

    // Carol never started the bot: the group gets a deep link, no OAuth URL.
    telegram.send_text(&carol, &group, "/connect demo");
    let pointer = telegram
        .wait_for_message(-100, WAIT, text_contains("private chat"))
        .await;
    let buttons = pointer.url_buttons();
    assert_eq!(
        buttons[0].1,
        format!("https://t.me/{BOT_USERNAME}?start=connect-demo")
    );
    telegram.send_private(&carol, "/start connect-demo");
    let offer = telegram
        .wait_for_message(3, WAIT, |m| !m.url_buttons().is_empty())
        .await;
    assert!(offer.url_buttons()[0].1.contains("/authorize"));

    // Commands for other bots are not answered in a group; updates of one
    // user are handled in order, so the /servers reply proves /frobnicate
    // was seen first.
    telegram.send_text(&alice, &group, "/frobnicate");
    telegram.send_text(&alice, &group, &format!("/servers@{BOT_USERNAME}"));
    telegram
        .wait_for_message(-100, WAIT, text_contains("Servers:"))
        .await;
    assert!(
        telegram
            .messages(-100)
            .iter()
            .all(|m| !m.text.contains("Unknown command")),
        "answered another bot's command"
    );

    for message in telegram.messages(-100) {
        for (_, url) in message.url_buttons() {
            assert!(!url.contains("state="), "a group saw a connect link: {url}");
        }
        assert!(!message.text.contains("state="), "{}", message.text);
    }
    bot.stop().await;
    let errors = telegram.errors();
    assert!(
        errors.iter().all(|e| e
            .error
            .as_deref()
            .unwrap_or("")
            .contains("can't initiate conversation")),
        "only the expected 403 for Carol: {errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_headers_are_resolved_from_the_environment_and_sent_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let telegram = FakeTelegram::start().await;
    // Records the first request's head, then answers 401 like a server
    // that does not like the token.
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", server.local_addr().unwrap());
    let (head_tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<String>();
    let recorder = tokio::spawn(async move {
        while let Ok((mut socket, _)) = server.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = head_tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = socket
                .write_all(
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let bot = BotProcess::start_with_env(
        &telegram,
        &[("TEST_STATIC_TOKEN", "s3cr3t-from-env")],
        |dir| {
            base_config(&telegram, dir)
                + &format!(
                    "\n[[mcp.servers]]\nid = \"static\"\nname = \"Static\"\nurl = \"{url}\"\ntrusted = true\n\
                     [mcp.servers.headers]\nAuthorization = \"Bearer ${{TEST_STATIC_TOKEN}}\"\nX-Team = \"blue\"\n"
                )
        },
    )
    .await;
    let alice = telegram.user(1, "Alice");
    telegram.send_private(&alice, "/tools static");
    let head = heads.recv().await.expect("the bot reached the server");
    let lines: Vec<&str> = head.lines().collect();
    let authorizations: Vec<&&str> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .collect();
    assert_eq!(authorizations.len(), 1, "exactly one Authorization: {head}");
    assert_eq!(
        authorizations[0].split_once(':').unwrap().1.trim(),
        "Bearer s3cr3t-from-env"
    );
    assert!(
        lines.iter().any(|l| l.eq_ignore_ascii_case("x-team: blue")),
        "{head}"
    );

    let reply = telegram.wait_for_message(1, WAIT, |_| true).await;
    assert!(
        reply.text.contains("Static refused the bot's credentials"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("s3cr3t"), "{}", reply.text);
    let logs = bot.stop().await;
    assert!(
        !logs.contains("s3cr3t-from-env"),
        "the static token leaked into the logs"
    );
    recorder.abort();
}

/// A proxy in the environment must not carry an untrusted server's
/// requests past the address guard: the proxy would resolve the host
/// itself. The server's host is this machine's own name (in /etc/hosts,
/// a loopback or private address), so no DNS server is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_does_not_bypass_the_address_guard() {
    let telegram = FakeTelegram::start().await;
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let (used_tx, mut used) = tokio::sync::mpsc::unbounded_channel();
    let recorder = tokio::spawn(async move {
        while let Ok((socket, _)) = proxy.accept().await {
            let _ = used_tx.send(());
            drop(socket);
        }
    });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let bot = BotProcess::start_with_env(
        &telegram,
        &[
            ("HTTP_PROXY", proxy_url.as_str()),
            ("HTTPS_PROXY", proxy_url.as_str()),
            ("ALL_PROXY", proxy_url.as_str()),
            // The fake Telegram is reached directly, as an admin would
            // exempt their Bot API server.
            ("NO_PROXY", "127.0.0.1"),
        ],
        |dir| {
            base_config(&telegram, dir)
                + &format!("\n[[mcp.servers]]\nid = \"inside\"\nurl = \"http://{host}:9/mcp\"\ntimeout_secs = 5\n")
        },
    )
    .await;
    let alice = telegram.user(1, "Alice");
    telegram.send_private(&alice, "/tools inside");
    let reply = telegram.wait_for_message(1, WAIT, |_| true).await;
    assert!(reply.text.contains("private network"), "{}", reply.text);
    bot.stop().await;
    assert!(
        used.try_recv().is_err(),
        "the request went through the proxy"
    );
    recorder.abort();
}

/// 200 commands at once from one user, while their first one hangs, do not
/// delay another user: one "still working" answer, the rest dropped, and
/// Bob's /servers answered within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_user_does_not_delay_another() {
    let telegram = FakeTelegram::start().await;
    let hang = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}/mcp", hang.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
        }
    });
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &open_server("hang", &hang_url, 30)
    })
    .await;
    let alice = telegram.user(1, "Alice");
    let bob = telegram.user(2, "Bob");
    for _ in 0..200 {
        telegram.send_private(&alice, "/tools hang");
    }
    let asked = std::time::Instant::now();
    telegram.send_private(&bob, "/servers");
    telegram
        .wait_for_message(2, WAIT, text_contains("Servers:"))
        .await;
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "Bob waited {waited:?} behind Alice's flood"
    );
    let told = telegram
        .wait_for_message(1, WAIT, text_contains("Still working on your /tools hang"))
        .await;
    assert!(!told.text.contains('\n'), "{}", told.text);
    // However far Alice's queue has got, her extra commands are dropped
    // after the one answer.
    assert_eq!(telegram.message_count(1), 1, "{:?}", telegram.messages(1));
    bot.stop().await;
    holder.abort();
    telegram.assert_no_errors();
}

/// Telegram's "Too Many Requests": the reply waits the `retry_after` it
/// names (sending earlier would be a violation the fake records) and is
/// then delivered, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_and_the_reply_still_arrives() {
    let telegram = FakeTelegram::start().await;
    let bot = BotProcess::start(&telegram, |dir| base_config(&telegram, dir)).await;
    let alice = telegram.user(1, "Alice");

    telegram.fail_next_sends_with_429(1, 1);
    telegram.send_private(&alice, "/help");
    let reply = telegram.wait_for_message(1, WAIT, |_| true).await;
    assert!(reply.text.contains("/connect"), "{}", reply.text);
    assert_eq!(telegram.rate_limited_count(), 1);

    bot.stop().await;
    telegram.assert_no_errors();
}

/// A 429 freezes only its own chat: another user's reply goes out at
/// once instead of queueing behind the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_in_one_chat_holds_up_no_other_chat() {
    let telegram = FakeTelegram::start().await;
    let bot = BotProcess::start(&telegram, |dir| base_config(&telegram, dir)).await;
    let (alice, bob) = (telegram.user(1, "Alice"), telegram.user(2, "Bob"));

    telegram.fail_next_sends_with_429(1, 5);
    telegram.send_private(&alice, "/help");
    // Alice's reply was answered 429: her chat is frozen for 5 s.
    let refused = telegram.wait_for_call("sendMessage", WAIT).await;
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|error| error.contains("Too Many Requests")),
        "{refused:?}"
    );
    telegram.send_private(&bob, "/help");
    let bobs = telegram.wait_for_message(2, WAIT, |_| true).await;
    assert_eq!(
        telegram.message_count(1),
        0,
        "Bob's reply came first, while Alice's chat waits"
    );
    let alices = telegram.wait_for_message(1, WAIT, |_| true).await;
    assert!(alices.text.contains("/connect") && bobs.text.contains("/connect"));
    assert_eq!(telegram.rate_limited_count(), 1);

    bot.stop().await;
    telegram.assert_no_errors();
}
