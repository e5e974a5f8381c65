//! Servers that take each user's own token: `/token` asks for it in the
//! private chat, deletes the message holding it, keeps it in that user's
//! namespace and sends it for that user only.

use std::time::Duration;

use fake_telegram::{ChatKind, FakeTelegram};
use test_peers::OidcMcpServer;

use crate::support::bot::{BotProcess, base_config};

const WAIT: Duration = Duration::from_secs(30);

fn personal_server(url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"pat\"\nname = \"Tasks\"\nurl = \"{url}\"\ntrusted = true\n[mcp.servers.user_token]\nheader = \"Authorization\"\nprefix = \"Bearer \"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_calls_with_their_own_token() {
    let server = OidcMcpServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = server.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &personal_server(&url)
    })
    .await;
    let (alice, bob) = (telegram.user(1, "Alice"), telegram.user(2, "Bob"));
    let alice_token = server.personal_token("alice").await;
    let bob_token = server.personal_token("bob").await;

    telegram.send_private(&alice, "/call pat whoami");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("send /token pat to give it"))
        .await;

    for (user, token) in [(&alice, &alice_token), (&bob, &bob_token)] {
        let chat = user.id as i64;
        telegram.send_private(user, "/token pat");
        telegram
            .wait_for_message(chat, WAIT, |m| {
                m.text.starts_with("Send me your token for Tasks")
            })
            .await;
        let sent = telegram.send_private(user, token);
        telegram
            .wait_for_message(chat, WAIT, |m| {
                m.text.starts_with("Your token for Tasks is saved")
            })
            .await;
        assert!(
            telegram.is_deleted(chat, sent),
            "the message with the token is gone"
        );
    }

    telegram.send_private(&alice, "/call pat whoami");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("sub=alice"))
        .await;
    telegram.send_private(&bob, "/call pat whoami");
    telegram
        .wait_for_message(2, WAIT, |m| m.text.contains("sub=bob"))
        .await;

    // Never in a group.
    let group = ChatKind::Group {
        id: -77,
        title: "Team".into(),
    };
    telegram.send_text(&alice, &group, "/token pat");
    telegram
        .wait_for_message(-77, WAIT, |m| m.text.contains("private chat only"))
        .await;

    // A token the server does not know.
    telegram.send_private(&alice, "/token pat");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Send me your token"))
        .await;
    telegram.send_private(&alice, "pat_not_a_real_one");
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.starts_with("Your token for Tasks is saved")
        })
        .await;
    telegram.send_private(&alice, "/call pat whoami");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("refused your token"))
        .await;

    telegram.send_private(&bob, "/status");
    telegram
        .wait_for_message(2, WAIT, |m| {
            m.text.contains("Tasks (pat): your token is kept")
        })
        .await;
    telegram.send_private(&bob, "/disconnect pat");
    telegram
        .wait_for_message(2, WAIT, |m| {
            m.text.starts_with("Your token for Tasks is deleted here")
        })
        .await;
    telegram.send_private(&bob, "/call pat whoami");
    telegram
        .wait_for_message(2, WAIT, |m| m.text.contains("send /token pat"))
        .await;

    let logs = bot.stop().await;
    for token in [&alice_token, &bob_token] {
        assert!(!logs.contains(token.as_str()), "a token in the log");
    }
    for chat in [1, 2, -77] {
        for message in telegram.messages(chat) {
            assert!(
                !message.text.contains("pat_"),
                "a token in a bot message: {}",
                message.text
            );
        }
    }
    telegram.assert_no_errors();
}

/// `/forget` asks first, then deletes everything of the user who tapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_deletes_everything_after_a_confirmation() {
    let server = OidcMcpServer::start().await;
    let telegram = FakeTelegram::start().await;
    let url = server.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &personal_server(&url)
    })
    .await;
    let alice = telegram.user(1, "Alice");
    let token = server.personal_token("alice").await;
    telegram.send_private(&alice, "/token pat");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Send me your token"))
        .await;
    telegram.send_private(&alice, &token);
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.starts_with("Your token for Tasks is saved")
        })
        .await;

    telegram.send_private(&alice, "/forget");
    let question = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Delete it all?"))
        .await;
    let (_, keep) = question.callback_buttons().remove(1);
    telegram.press_callback_button(&alice, 1, question.message_id, &keep);
    telegram
        .wait_for_message(1, WAIT, |m| m.edited && m.text == "Nothing was deleted.")
        .await;
    telegram.send_private(&alice, "/status");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("your token is kept"))
        .await;

    telegram.send_private(&alice, "/forget");
    let question = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Delete it all?"))
        .await;
    let (_, delete) = question.callback_buttons().remove(0);
    telegram.press_callback_button(&alice, 1, question.message_id, &delete);
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.edited && m.text.starts_with("Done: I keep nothing of yours")
        })
        .await;
    assert!(
        !bot.vault_dir().join("user-1.age").exists(),
        "the user's file is gone"
    );
    telegram.send_private(&alice, "/status");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("no token given"))
        .await;
    bot.stop().await;
    telegram.assert_no_errors();
}
