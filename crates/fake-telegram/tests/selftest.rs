//! Self-test of the fake Telegram Bot API: drives it with a real teloxide
//! `Bot` (and raw HTTP where teloxide can't express a case) to prove that
//! teloxide can parse everything it returns and that it is strict where real
//! Telegram is. Every test starts its own fake, so they run in parallel.

use std::time::{Duration, Instant};

use fake_telegram::{ChatKind, FakeTelegram, SentMedia};
use serde_json::{Value, json};
use teloxide::prelude::*;
use teloxide::types::{
    BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, LinkPreviewOptions,
    MessageEntityKind, MessageId, ParseMode, ReplyParameters, Seconds, UpdateKind,
};
use teloxide::{ApiError, RequestError};

const WAIT: Duration = Duration::from_secs(10);

/// teloxide's HTTP client uses rustls with the process-wide crypto
/// provider, as in mcpgram itself.
fn with_tls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn bot(fake: &FakeTelegram) -> Bot {
    with_tls();
    Bot::new(fake.token()).set_api_url(fake.api_url().parse().expect("fake api url"))
}

fn api_error(result: Result<impl std::fmt::Debug, RequestError>) -> ApiError {
    match result {
        Err(RequestError::Api(e)) => e,
        other => panic!("expected a Telegram API error, got {other:?}"),
    }
}

fn unknown(result: Result<impl std::fmt::Debug, RequestError>) -> String {
    match api_error(result) {
        ApiError::Unknown(s) => s,
        other => panic!("expected ApiError::Unknown, got {other:?}"),
    }
}

fn url(s: &str) -> reqwest::Url {
    s.parse().expect("test url")
}

/// Raw HTTP call, for cases teloxide never produces (form bodies, bad
/// methods). Returns the HTTP status and the JSON envelope.
async fn raw(
    fake: &FakeTelegram,
    method: &str,
    content_type: Option<&str>,
    body: String,
) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client
        .post(format!("{}bot{}/{method}", fake.api_url(), fake.token()))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("fake reachable");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).expect("JSON envelope"))
}

#[tokio::test]
async fn get_me_returns_the_bot_user() {
    let fake = FakeTelegram::start().await;
    let me = bot(&fake).get_me().await.unwrap();
    assert_eq!(me.id, UserId(123_456_789));
    assert!(me.is_bot);
    assert_eq!(me.username(), "mcpgram_test_bot");
    assert_eq!(me.first_name, "mcpgram test");
    assert_eq!(fake.bot_username(), "mcpgram_test_bot");
    assert_eq!(fake.calls()[0].method, "getme");
    fake.assert_no_errors();
}

#[tokio::test]
async fn wrong_token_is_unauthorized_and_bot_id_follows_token() {
    let fake = FakeTelegram::start_with_token("42:other-secret").await;
    with_tls();
    let wrong = Bot::new("42:wrong").set_api_url(fake.api_url().parse().unwrap());
    assert_eq!(api_error(wrong.get_me().await), ApiError::InvalidToken);
    assert_eq!(fake.errors()[0].error.as_deref(), Some("Unauthorized"));
    assert_eq!(bot(&fake).get_me().await.unwrap().id, UserId(42));
}

#[tokio::test]
async fn send_message_to_started_user_is_recorded() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let alice = fake.user(1001, "Alice");
    fake.send_private(&alice, "hi");

    let keyboard = InlineKeyboardMarkup::new(vec![
        vec![InlineKeyboardButton::url(
            "Docs",
            url("https://example.com/docs"),
        )],
        vec![InlineKeyboardButton::callback("Approve", "approve:1")],
    ]);
    let msg = bot
        .send_message(
            ChatId(1001),
            "  <b>Hello</b> &amp; <a href=\"https://example.com\">welcome</a>  ",
        )
        .parse_mode(ParseMode::Html)
        .link_preview_options(LinkPreviewOptions {
            is_disabled: true,
            url: None,
            prefer_small_media: false,
            prefer_large_media: false,
            show_above_text: false,
        })
        .reply_markup(keyboard)
        .await
        .unwrap();
    assert_eq!(msg.text(), Some("Hello & welcome"));
    let kinds: Vec<_> = msg
        .entities()
        .unwrap()
        .iter()
        .map(|e| (e.kind.clone(), e.offset, e.length))
        .collect();
    assert_eq!(kinds[0], (MessageEntityKind::Bold, 0, 5));
    assert!(matches!(
        &kinds[1],
        (MessageEntityKind::TextLink { .. }, 8, 7)
    ));
    assert_eq!(msg.from.as_ref().unwrap().id, UserId(123_456_789));
    assert!(msg.reply_markup().is_some());

    let sent = fake.messages(1001);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "Hello & welcome");
    assert!(sent[0].raw_text.contains("<b>Hello</b>"));
    assert_eq!(sent[0].parse_mode.as_deref(), Some("HTML"));
    assert!(sent[0].link_preview_disabled);
    assert!(!sent[0].edited);
    assert_eq!(
        sent[0].url_buttons(),
        vec![("Docs".to_owned(), "https://example.com/docs".to_owned())]
    );
    assert_eq!(
        sent[0].callback_buttons(),
        vec![("Approve".to_owned(), "approve:1".to_owned())]
    );

    // The user's "hi" was message 1, so the bot's messages continue from 2.
    assert_eq!(msg.id, MessageId(2));
    let second = bot
        .send_message(ChatId(1001), "plain")
        .reply_parameters(ReplyParameters::new(msg.id))
        .await
        .unwrap();
    assert_eq!(second.id, MessageId(3));
    assert_eq!(second.reply_to_message().unwrap().id, msg.id);

    // The cursor walks forward: each wait returns a new entry.
    let first = fake.wait_for_message(1001, WAIT, |_| true).await;
    assert_eq!(first.message_id, 2);
    let next = fake.wait_for_message(1001, WAIT, |_| true).await;
    assert_eq!((next.message_id, next.reply_to_message_id), (3, Some(2)));
    fake.assert_no_errors();
}

#[tokio::test]
async fn users_who_never_wrote_and_unknown_chats_are_rejected() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    fake.user(2002, "Bob");
    assert_eq!(
        unknown(bot.send_message(ChatId(2002), "hi").await),
        "Forbidden: bot can't initiate conversation with a user"
    );
    assert_eq!(
        api_error(bot.send_message(ChatId(31337), "hi").await),
        ApiError::ChatNotFound
    );
    assert_eq!(
        api_error(bot.send_message(ChatId(-5), "hi").await),
        ApiError::ChatNotFound
    );

    // Blocking, then writing again.
    let carol = fake.user(3003, "Carol");
    fake.send_private(&carol, "/start");
    fake.block_bot(&carol);
    assert_eq!(
        api_error(bot.send_message(ChatId(3003), "hi").await),
        ApiError::BotBlocked
    );
    fake.send_private(&carol, "back");
    bot.send_message(ChatId(3003), "hi").await.unwrap();

    let errors = fake.errors();
    assert_eq!(errors.len(), 4);
    assert!(errors.iter().all(|c| c.method == "sendmessage"));
    assert_eq!(errors[0].params["chat_id"], json!(2002));
    assert_eq!(
        errors[0].error.as_deref(),
        Some("Forbidden: bot can't initiate conversation with a user")
    );
}

#[tokio::test]
async fn inline_buttons_are_validated() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(1, "U");
    fake.send_private(&user, "hi");
    let with = |button: InlineKeyboardButton| {
        bot.send_message(ChatId(1), "x")
            .reply_markup(InlineKeyboardMarkup::new(vec![vec![button]]))
    };
    for bad in [
        "http://localhost:8080/cb",
        "https://app.localhost/",
        "ftp://example.com/",
    ] {
        let result = with(InlineKeyboardButton::url("Open", url(bad))).await;
        assert_eq!(api_error(result), ApiError::ButtonUrlInvalid, "{bad}");
    }
    with(InlineKeyboardButton::url(
        "Open",
        url("http://127.0.0.1:8080/cb"),
    ))
    .await
    .unwrap();
    with(InlineKeyboardButton::url(
        "Chat",
        url("tg://resolve?domain=x"),
    ))
    .await
    .unwrap();
    let long = "x".repeat(65);
    assert_eq!(
        api_error(with(InlineKeyboardButton::callback("Go", long)).await),
        ApiError::ButtonDataInvalid
    );
    with(InlineKeyboardButton::callback("Go", "x".repeat(64)))
        .await
        .unwrap();
    assert_eq!(
        unknown(with(InlineKeyboardButton::callback("", "d")).await),
        "Bad Request: BUTTON_TEXT_INVALID"
    );

    // Text-only or double-action buttons, which teloxide can't even build.
    let markup = json!({"inline_keyboard": [[{"text": "no action"}]]});
    let (status, body) = raw(
        &fake,
        "sendMessage",
        Some("application/json"),
        json!({"chat_id": 1, "text": "x", "reply_markup": markup}).to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains("Text buttons are unallowed")
    );
    let markup = json!({"inline_keyboard": [[{"text": "two", "url": "https://a.io", "callback_data": "x"}]]});
    let (status, _) = raw(
        &fake,
        "sendMessage",
        Some("application/json"),
        json!({"chat_id": 1, "text": "x", "reply_markup": markup}).to_string(),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn length_is_checked_in_utf16_after_parsing() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(1, "U");
    fake.send_private(&user, "hi");
    assert_eq!(
        api_error(bot.send_message(ChatId(1), "a".repeat(4097)).await),
        ApiError::MessageIsTooLong
    );
    bot.send_message(ChatId(1), "a".repeat(4096)).await.unwrap();
    // 2049 emoji are 4098 UTF-16 units although only 2049 chars.
    assert_eq!(
        api_error(bot.send_message(ChatId(1), "😀".repeat(2049)).await),
        ApiError::MessageIsTooLong
    );
    // Tags and entities don't count.
    let html = format!("<b>{}</b>&amp;", "a".repeat(4095));
    bot.send_message(ChatId(1), html)
        .parse_mode(ParseMode::Html)
        .await
        .unwrap();
    assert_eq!(
        api_error(bot.send_message(ChatId(1), "   ").await),
        ApiError::MessageTextIsEmpty
    );
    assert_eq!(
        api_error(
            bot.send_message(ChatId(1), "<b> </b>")
                .parse_mode(ParseMode::Html)
                .await
        ),
        ApiError::MessageTextIsEmpty
    );
}

#[tokio::test]
#[allow(deprecated)] // legacy ParseMode::Markdown is still accepted by Telegram
async fn markup_errors_are_cant_parse_entities() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(1, "U");
    fake.send_private(&user, "hi");
    let html = |text: &str| {
        bot.send_message(ChatId(1), text.to_owned())
            .parse_mode(ParseMode::Html)
    };
    let cant_parse = |r: Result<Message, RequestError>| match api_error(r) {
        ApiError::CantParseEntities(s) => s,
        other => panic!("expected CantParseEntities, got {other:?}"),
    };
    assert_eq!(
        cant_parse(html("hello<foo>bar</foo>").await),
        "Bad Request: can't parse entities: Unsupported start tag \"foo\" at byte offset 5"
    );
    assert!(
        cant_parse(html("<b>open").await)
            .contains("Can't find end tag corresponding to start tag \"b\"")
    );
    assert!(cant_parse(html("<b>x</i>").await).contains("Unmatched end tag at byte offset 4"));
    assert!(cant_parse(html("1 < 2").await).contains("Unsupported start tag \"\""));
    assert!(cant_parse(html("fish & chips").await).contains("byte offset 5"));
    assert!(cant_parse(html("<span>x</span>").await).contains("tg-spoiler"));
    html("1 &lt; 2 &#x263A; &#9731; &quot;q&quot; a > b <span class=\"tg-spoiler\">s</span>")
        .await
        .unwrap();
    let m = html("<pre><code class=\"language-rust\">let x = 1;</code></pre> <blockquote expandable>q</blockquote>")
        .await
        .unwrap();
    let entities = m.entities().unwrap();
    assert_eq!(
        entities[0].kind,
        MessageEntityKind::Pre {
            language: Some("rust".to_owned())
        }
    );
    assert_eq!(entities[1].kind, MessageEntityKind::ExpandableBlockquote);

    let md2 = |text: &str| {
        bot.send_message(ChatId(1), text.to_owned())
            .parse_mode(ParseMode::MarkdownV2)
    };
    assert_eq!(
        cant_parse(md2("Done.").await),
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
    );
    assert!(
        cant_parse(md2("*bold").await).contains("Can't find end of Bold entity at byte offset 0")
    );
    let m = md2("*Done* \\- see [docs](https://example.com/a_b) `a.b` ||x||\\.")
        .await
        .unwrap();
    assert_eq!(m.text(), Some("Done - see docs a.b x."));
    assert_eq!(m.entities().unwrap().len(), 4);

    let md = |text: &str| {
        bot.send_message(ChatId(1), text.to_owned())
            .parse_mode(ParseMode::Markdown)
    };
    assert!(
        cant_parse(md("*open").await)
            .contains("Can't find end of the entity starting at byte offset 0")
    );
    assert_eq!(
        md("*b* 1.5! [x](https://e.com)").await.unwrap().text(),
        Some("b 1.5! x")
    );
}

#[tokio::test]
async fn edits_follow_telegram_rules() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(7, "U");
    let user_msg = fake.send_private(&user, "hi");
    let keyboard = InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::callback("A", "a")]]);
    let msg = bot
        .send_message(ChatId(7), "Status: <b>busy</b>")
        .parse_mode(ParseMode::Html)
        .reply_markup(keyboard.clone())
        .await
        .unwrap();

    // Same text, same entities, same keyboard: not modified.
    let same = bot
        .edit_message_text(ChatId(7), msg.id, "Status: <b>busy</b>")
        .parse_mode(ParseMode::Html)
        .reply_markup(keyboard.clone())
        .await;
    assert_eq!(api_error(same), ApiError::MessageNotModified);
    // Same text without the bold entity is a modification.
    let edited = bot
        .edit_message_text(ChatId(7), msg.id, "Status: busy")
        .reply_markup(keyboard.clone())
        .await
        .unwrap();
    assert_eq!(edited.text(), Some("Status: busy"));
    assert!(edited.edit_date().is_some());
    // Omitting reply_markup removes the keyboard, as on Telegram.
    let edited = bot
        .edit_message_text(ChatId(7), msg.id, "Status: done")
        .await
        .unwrap();
    assert!(edited.reply_markup().is_none());
    assert_eq!(
        api_error(bot.edit_message_reply_markup(ChatId(7), msg.id).await),
        ApiError::MessageNotModified
    );
    bot.edit_message_reply_markup(ChatId(7), msg.id)
        .reply_markup(keyboard)
        .await
        .unwrap();
    assert_eq!(
        api_error(bot.edit_message_text(ChatId(7), MessageId(99), "x").await),
        ApiError::MessageToEditNotFound
    );
    assert_eq!(
        api_error(
            bot.edit_message_text(ChatId(7), MessageId(user_msg), "x")
                .await
        ),
        ApiError::MessageCantBeEdited
    );

    let log = fake.messages(7);
    assert_eq!(
        log.iter().map(|m| m.edited).collect::<Vec<_>>(),
        vec![false, true, true, true]
    );
    let current = fake.message(7, msg.id.0).unwrap();
    assert_eq!(current.text, "Status: done");
    assert_eq!(current.callback_buttons().len(), 1);

    bot.delete_message(ChatId(7), msg.id).await.unwrap();
    assert!(fake.is_deleted(7, msg.id.0));
    assert!(fake.message(7, msg.id.0).is_none());
    assert_eq!(
        api_error(bot.delete_message(ChatId(7), msg.id).await),
        ApiError::MessageToDeleteNotFound
    );
    assert_eq!(
        api_error(
            bot.send_message(ChatId(7), "x")
                .reply_parameters(ReplyParameters::new(msg.id))
                .await
        ),
        ApiError::MessageToReplyNotFound
    );
}

#[tokio::test]
async fn commands_accept_a_leading_slash() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    bot.set_my_commands(vec![
        BotCommand::new("/start", "Start the bot"),
        BotCommand::new("help", "Show help"),
    ])
    .await
    .unwrap();
    let commands = bot.get_my_commands().await.unwrap();
    assert_eq!(
        commands
            .iter()
            .map(|c| c.command.as_str())
            .collect::<Vec<_>>(),
        ["start", "help"]
    );
    assert_eq!(
        fake.bot_commands()[0],
        ("start".to_owned(), "Start the bot".to_owned())
    );
    for bad in ["Start", "with-dash", "", &"a".repeat(33)] {
        let result = bot.set_my_commands(vec![BotCommand::new(bad, "d")]).await;
        assert_eq!(
            unknown(result),
            "Bad Request: BOT_COMMAND_INVALID",
            "{bad:?}"
        );
    }
    let result = bot.set_my_commands(vec![BotCommand::new("ok", "")]).await;
    assert_eq!(
        unknown(result),
        "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID"
    );
    bot.delete_my_commands().await.unwrap();
    assert!(bot.get_my_commands().await.unwrap().is_empty());
}

#[tokio::test]
async fn long_poll_receives_user_messages_and_offset_confirms() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(555, "Dana");
    let poll = tokio::spawn({
        let bot = bot.clone();
        async move { bot.get_updates().timeout(10).await }
    });
    // getUpdates is recorded on arrival, while it is still being held open.
    let call = fake.wait_for_call("getUpdates", WAIT).await;
    assert_eq!(call.params["timeout"], json!(10));
    // Event-driven: the fake reports when the request is being held open.
    fake.wait_for_long_poll(WAIT).await;
    let message_id = fake.send_private(&user, "/start hello");
    let updates = poll.await.unwrap().unwrap();
    assert_eq!(updates.len(), 1);
    let UpdateKind::Message(m) = &updates[0].kind else {
        panic!("not a message: {:?}", updates[0])
    };
    assert_eq!(m.text(), Some("/start hello"));
    assert_eq!(m.id, MessageId(message_id));
    assert_eq!(m.chat.id, ChatId(555));
    assert!(m.chat.is_private());
    assert_eq!(m.from.as_ref().unwrap().first_name, "Dana");
    assert_eq!(m.entities().unwrap()[0].kind, MessageEntityKind::BotCommand);
    assert_eq!(m.entities().unwrap()[0].length, 6);

    // Unconfirmed updates are returned again.
    fake.send_private(&user, "second");
    let again = bot.get_updates().await.unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(bot.get_updates().limit(1).await.unwrap().len(), 1);
    // Confirming the first leaves only the second.
    let rest = bot
        .get_updates()
        .offset(updates[0].id.as_offset())
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let last = rest[0].id.as_offset();
    assert!(bot.get_updates().offset(last).await.unwrap().is_empty());
    assert_eq!(fake.pending_update_count(), 0);
    fake.assert_no_errors();
}

#[tokio::test]
async fn long_poll_without_updates_returns_empty_after_timeout() {
    let fake = FakeTelegram::start().await;
    let started = Instant::now();
    let updates = bot(&fake).get_updates().timeout(1).await.unwrap();
    let elapsed = started.elapsed();
    assert!(updates.is_empty());
    assert!(
        elapsed >= Duration::from_millis(900),
        "returned too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "returned too late: {elapsed:?}"
    );
}

#[tokio::test]
async fn callback_buttons_produce_callback_queries() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(9, "Eve");
    fake.send_private(&user, "hi");
    let keyboard =
        InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::callback("Yes", "yes")]]);
    let msg = bot
        .send_message(ChatId(9), "Confirm?")
        .reply_markup(keyboard)
        .await
        .unwrap();
    let offset = bot.get_updates().await.unwrap()[0].id.as_offset();

    let query_id = fake.press_callback_button(&user, 9, msg.id.0, "yes");
    let updates = bot.get_updates().offset(offset).await.unwrap();
    let UpdateKind::CallbackQuery(q) = &updates[0].kind else {
        panic!("not a callback: {:?}", updates[0])
    };
    assert_eq!(q.data.as_deref(), Some("yes"));
    assert_eq!(q.id.0, query_id);
    assert_eq!(q.regular_message().unwrap().id, msg.id);

    let long = "x".repeat(201);
    // Telegram's "MESSAGE_TOO_LONG" is what teloxide calls EditedMessageIsTooLong.
    assert_eq!(
        api_error(bot.answer_callback_query(q.id.clone()).text(long).await),
        ApiError::EditedMessageIsTooLong
    );
    bot.answer_callback_query(q.id.clone())
        .text("Done")
        .await
        .unwrap();
    let again = unknown(bot.answer_callback_query(q.id.clone()).await);
    assert!(again.contains("query is too old"), "{again}");
}

#[tokio::test]
async fn groups_respect_privacy_mode() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(11, "Finn");
    let group = ChatKind::Group {
        id: -100,
        title: "Team".to_owned(),
    };
    fake.send_text(&user, &group, "chatter the bot must not see");
    assert_eq!(fake.pending_update_count(), 0);
    fake.send_text(&user, &group, "/status@mcpgram_test_bot");
    fake.send_text(&user, &group, "/status@other_bot");
    fake.send_text(&user, &group, "hey @mcpgram_test_bot");
    let updates = bot.get_updates().await.unwrap();
    assert_eq!(updates.len(), 2);
    let UpdateKind::Message(m) = &updates[0].kind else {
        panic!()
    };
    assert!(m.chat.is_group());
    assert_eq!(m.chat.title(), Some("Team"));
    let reply = bot.send_message(ChatId(-100), "ok").await.unwrap();
    assert_eq!(reply.id, MessageId(5));
    // Group membership doesn't let the bot write to the user privately.
    assert!(unknown(bot.send_message(ChatId(11), "psst").await).starts_with("Forbidden"));
    bot.send_chat_action(ChatId(-100), teloxide::types::ChatAction::Typing)
        .await
        .unwrap();
}

#[tokio::test]
async fn dispatcher_replies_and_shuts_down() {
    let fake = FakeTelegram::start().await;
    let user = fake.user(4242, "Gus");
    let handler = Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        if msg.text() == Some("/start") {
            bot.send_message(msg.chat.id, "Welcome!").await?;
        }
        Ok::<(), RequestError>(())
    });
    let mut dispatcher = Dispatcher::builder(bot(&fake), handler).build();
    let shutdown = dispatcher.shutdown_token();
    let running = tokio::spawn(async move { dispatcher.dispatch().await });

    fake.send_private(&user, "/start");
    let reply = fake
        .wait_for_message(4242, WAIT, |m| m.text == "Welcome!")
        .await;
    assert_eq!(reply.chat_id, 4242);

    shutdown.shutdown().expect("dispatcher is running").await;
    tokio::time::timeout(WAIT, running)
        .await
        .expect("dispatcher stopped")
        .unwrap();
    // Polling confirmed the handled update on the way out.
    assert_eq!(fake.pending_update_count(), 0);
    fake.assert_no_errors();
}

#[tokio::test]
async fn webhook_mode_delivers_updates_and_blocks_get_updates() {
    use axum::http::HeaderMap;
    use tokio::sync::mpsc;

    let (tx, mut rx) = mpsc::unbounded_channel::<(Option<String>, Value)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let secret = headers
                    .get("x-telegram-bot-api-secret-token")
                    .map(|v| v.to_str().unwrap().to_owned());
                let _ = tx.send((secret, serde_json::from_str(&body).unwrap()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(77, "Hana");
    // teloxide sends setWebhook as multipart/form-data.
    bot.set_webhook(url(&hook_url))
        .secret_token("s3cr3t_-X".to_owned())
        .await
        .unwrap();
    assert_eq!(fake.webhook_url().as_deref(), Some(hook_url.as_str()));
    assert_eq!(fake.calls()[0].params["secret_token"], json!("s3cr3t_-X"));
    let info = bot.get_webhook_info().await.unwrap();
    assert_eq!(
        info.url.as_ref().map(|u| u.as_str()),
        Some(hook_url.as_str())
    );
    assert!(
        unknown(bot.get_updates().await)
            .starts_with("Conflict: can't use getUpdates method while webhook is active")
    );

    fake.send_private(&user, "via webhook");
    let (secret, update) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret.as_deref(), Some("s3cr3t_-X"));
    assert_eq!(update["message"]["text"], json!("via webhook"));

    let https_required = unknown(bot.set_webhook(url("http://example.com/hook")).await);
    assert_eq!(
        https_required,
        "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
    );
    assert!(
        bot.set_webhook(url(&hook_url))
            .secret_token("bad secret!".to_owned())
            .await
            .is_err()
    );

    bot.delete_webhook()
        .drop_pending_updates(true)
        .await
        .unwrap();
    assert_eq!(fake.webhook_url(), None);
    assert!(bot.get_webhook_info().await.unwrap().url.is_none());
    assert!(bot.get_updates().await.unwrap().is_empty());
    receiver.abort();
}

#[tokio::test]
async fn raw_http_forms_and_envelopes() {
    let fake = FakeTelegram::start().await;
    let user = fake.user(3, "Ivy");
    fake.send_private(&user, "hi");

    let (status, body) = raw(&fake, "fooBar", None, String::new()).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"})
    );

    // application/x-www-form-urlencoded with a JSON-valued field.
    let markup = json!({"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}).to_string();
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("chat_id", "3")
        .append_pair("text", "Done.")
        .append_pair("parse_mode", "MarkdownV2")
        .finish();
    let (status, body) = raw(
        &fake,
        "sendMessage",
        Some("application/x-www-form-urlencoded"),
        form,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["description"],
        json!(
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
        )
    );
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("chat_id", "3")
        .append_pair("text", "Done")
        .append_pair("reply_markup", &markup)
        .finish();
    let (status, body) = raw(
        &fake,
        "sendMessage",
        Some("application/x-www-form-urlencoded"),
        form,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        json!("go")
    );

    // Query string on a GET.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let text = client
        .get(format!(
            "{}bot{}/getUpdates?offset=-1&timeout=0",
            fake.api_url(),
            fake.token()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["result"].as_array().unwrap().len(), 1);

    // Hand-written multipart with a file part.
    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n3\r\n\
                     --XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nfrom multipart\r\n\
                     --XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\n\
                     Content-Type: text/plain\r\n\r\nabc\r\n--XyZ--\r\n";
    let (status, body) = raw(
        &fake,
        "sendMessage",
        Some("multipart/form-data; boundary=XyZ"),
        multipart.to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], json!("from multipart"));
    let call = fake
        .calls()
        .into_iter()
        .rfind(|c| c.method == "sendmessage")
        .unwrap();
    assert_eq!(call.params["doc"], json!({"file_name": "a.txt", "size": 3}));

    let (status, _) = raw(
        &fake,
        "sendMessage",
        Some("application/json"),
        "{not json".to_owned(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        fake.errors()
            .iter()
            .all(|c| c.error.as_deref().is_some_and(|e| !e.is_empty()))
    );
}

#[tokio::test]
async fn wait_for_call_and_message_time_out_with_a_dump() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    bot.get_me().await.unwrap();
    let call = fake.wait_for_call("getMe", WAIT).await;
    assert_eq!(call.method, "getme");
    assert!(call.error.is_none());

    let waiter = tokio::spawn({
        let fake = fake.clone();
        async move {
            fake.wait_for_message(1, Duration::from_millis(50), |_| true)
                .await
        }
    });
    let panic = waiter.await.unwrap_err().into_panic();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("no matching message in chat 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_multi_thread_runtime_and_handles_are_send_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<FakeTelegram>();

    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(8, "Kai");
    let poll = tokio::spawn({
        let bot = bot.clone();
        async move { bot.get_updates().timeout(10).await }
    });
    fake.wait_for_long_poll(WAIT).await;
    fake.send_private(&user, "ping");
    assert_eq!(poll.await.unwrap().unwrap().len(), 1);
}

#[tokio::test]
async fn login_buttons_need_https_and_open_signed_for_whoever_taps() {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use teloxide::types::LoginUrl;

    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let alice = fake.user(1001, "Alice");
    fake.send_private(&alice, "hi");
    let login = |url: &str| {
        InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::login(
            "Sign in",
            LoginUrl {
                url: url.parse().unwrap(),
                forward_text: None,
                bot_username: None,
                request_write_access: None,
            },
        )]])
    };
    let refused = bot
        .send_message(ChatId(1001), "plain http")
        .reply_markup(login("http://bot.example/start"))
        .await;
    assert_eq!(api_error(refused), ApiError::ButtonUrlInvalid);

    let sent = bot
        .send_message(ChatId(1001), "sign in")
        .reply_markup(login("https://bot.example/oauth/start/abc?x=1"))
        .await
        .unwrap();
    let opened = fake.login_url_for(&alice, 1001, sent.id.0);
    let url = url::Url::parse(&opened).unwrap();
    assert_eq!(url.path(), "/oauth/start/abc");
    let fields: std::collections::BTreeMap<String, String> =
        url.query_pairs().into_owned().collect();
    assert_eq!(fields["id"], "1001");
    assert_eq!(fields["x"], "1", "the button's own query stays");
    // Recompute the signature as Telegram's docs describe it, over the
    // fields Telegram adds (every one but hash).
    let check = ["auth_date", "first_name", "id", "username"]
        .iter()
        .filter_map(|k| fields.get(*k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(&Sha256::digest(fake.token().as_bytes())).unwrap();
    mac.update(check.as_bytes());
    assert_eq!(fields["hash"], hex::encode(mac.finalize().into_bytes()));
}

/// A PNG as far as Telegram's checks go: signature and IHDR chunk (the fake
/// does not decode pixels or check CRCs).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(13u32.to_be_bytes());
    v.extend(b"IHDR");
    v.extend(width.to_be_bytes());
    v.extend(height.to_be_bytes());
    v.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    v.extend(0u32.to_be_bytes());
    v.extend(b"IEND\xae\x42\x60\x82");
    v
}

/// Raw multipart/form-data call: text fields, then `(part name, file name,
/// bytes)` files.
async fn raw_multipart(
    fake: &FakeTelegram,
    method: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &str, &[u8])],
) -> (u16, Value) {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!(
                "--B0undary\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .into_bytes(),
        );
    }
    for (name, file_name, data) in files {
        body.extend(
            format!(
                "--B0undary\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{file_name}\"\r\n\r\n"
            )
            .into_bytes(),
        );
        body.extend_from_slice(data);
        body.extend(b"\r\n");
    }
    body.extend(b"--B0undary--\r\n");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client
        .post(format!("{}bot{}/{method}", fake.api_url(), fake.token()))
        .header("content-type", "multipart/form-data; boundary=B0undary")
        .body(body)
        .send()
        .await
        .expect("fake reachable");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).expect("JSON envelope"))
}

#[tokio::test]
async fn photos_upload_with_captions_and_resend_by_file_id() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(1, "U");
    fake.send_private(&user, "hi");
    let image = png(640, 480);
    let keyboard =
        InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::callback("Again", "again")]]);
    let msg = bot
        .send_photo(
            ChatId(1),
            InputFile::memory(image.clone()).file_name("chart.png"),
        )
        .caption("  <b>Chart</b> of the day ")
        .parse_mode(ParseMode::Html)
        .reply_markup(keyboard)
        .await
        .unwrap();
    assert_eq!(msg.caption(), Some("Chart of the day"));
    assert_eq!(
        msg.caption_entities().unwrap()[0].kind,
        MessageEntityKind::Bold
    );
    assert!(msg.text().is_none());
    // Smallest first, like Telegram: the full size is the last one.
    let sizes = msg.photo().unwrap();
    let largest = sizes.last().unwrap().clone();
    assert_eq!((largest.width, largest.height), (640, 480));
    assert_eq!((sizes[0].width, sizes[0].height), (90, 67));
    assert!(msg.reply_markup().is_some());

    // teloxide uploads the file as a separate part named by attach://.
    let call = fake.wait_for_call("sendPhoto", WAIT).await;
    assert!(
        call.params["photo"]
            .as_str()
            .unwrap()
            .starts_with("attach://")
    );
    let sent = fake.wait_for_message(1, WAIT, |_| true).await;
    assert_eq!(
        sent.media,
        Some(SentMedia {
            kind: "photo".to_owned(),
            file_name: Some("chart.png".to_owned()),
            data: image.clone(),
        })
    );
    assert_eq!(sent.text, "Chart of the day");
    assert_eq!(sent.raw_text, "  <b>Chart</b> of the day ");
    assert_eq!(sent.parse_mode.as_deref(), Some("HTML"));
    assert_eq!(sent.callback_buttons().len(), 1);

    // Re-sent by file_id, without a caption, as a reply.
    let again = bot
        .send_photo(ChatId(1), InputFile::file_id(largest.file.id.clone()))
        .reply_parameters(ReplyParameters::new(msg.id))
        .await
        .unwrap();
    assert_eq!(
        again.photo().unwrap().last().unwrap().file.id,
        largest.file.id
    );
    assert!(again.caption().is_none());
    assert_eq!(again.reply_to_message().unwrap().id, msg.id);
    let resent = fake.message(1, again.id.0).unwrap();
    assert_eq!((resent.text.as_str(), resent.raw_text.as_str()), ("", ""));
    assert_eq!(resent.media.unwrap().data, image);

    // A photo uploaded directly under its own field name, as browsers do.
    let (status, body) = raw_multipart(
        &fake,
        "sendPhoto",
        &[("chat_id", "1"), ("caption", "direct")],
        &[("photo", "", &png(20, 10))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["photo"][0]["width"], json!(20));
    let direct = fake.media_messages(1).pop().unwrap();
    assert_eq!(direct.media.unwrap().file_name, None);
    assert_eq!(fake.media_messages(1).len(), 3);
    assert_eq!(fake.messages(1).len(), 3);
    fake.assert_no_errors();

    // Nothing the fake issued: unknown file_ids and any URL.
    for input in [
        InputFile::file_id("AgACAgIAAxkBAAIBnope".to_owned().into()),
        InputFile::url(url("https://example.com/a.png")),
    ] {
        assert_eq!(
            api_error(bot.send_photo(ChatId(1), input).await),
            ApiError::WrongFileIdOrUrl
        );
    }
    let doc = bot
        .send_document(
            ChatId(1),
            InputFile::memory(&b"notes"[..]).file_name("notes.txt"),
        )
        .await
        .unwrap();
    let doc_id = doc.document().unwrap().file.id.clone();
    assert_eq!(
        unknown(bot.send_photo(ChatId(1), InputFile::file_id(doc_id)).await),
        "Bad Request: can't use file of type Document as Photo"
    );
    let (status, body) = raw_multipart(
        &fake,
        "sendPhoto",
        &[("chat_id", "1"), ("photo", "attach://missing")],
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["description"],
        json!("Bad Request: there is no photo in the request")
    );
}

#[tokio::test]
async fn documents_audio_and_voice_parse_in_teloxide() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(2, "U");
    fake.send_private(&user, "hi");

    let doc = bot
        .send_document(
            ChatId(2),
            InputFile::memory(&b"a,b\n1,2\n"[..]).file_name("report.csv"),
        )
        .caption("*Report*")
        .parse_mode(ParseMode::MarkdownV2)
        .await
        .unwrap();
    let document = doc.document().unwrap();
    assert_eq!(document.file_name.as_deref(), Some("report.csv"));
    assert_eq!(document.file.size, 8);
    assert_eq!(
        document.mime_type.as_ref().map(ToString::to_string),
        Some("text/csv".to_owned())
    );
    assert_eq!(doc.caption(), Some("Report"));

    let audio = bot
        .send_audio(
            ChatId(2),
            InputFile::memory(vec![0xFF, 0xFB, 0x90, 0x00]).file_name("song.mp3"),
        )
        .duration(7)
        .title("Song")
        .await
        .unwrap();
    let a = audio.audio().unwrap();
    assert_eq!(a.duration, Seconds::from_seconds(7));
    assert_eq!(a.title.as_deref(), Some("Song"));
    assert_eq!(a.file_name.as_deref(), Some("song.mp3"));

    let voice = bot
        .send_voice(
            ChatId(2),
            InputFile::memory(&b"OggS\0voice"[..]).file_name("note.ogg"),
        )
        .caption("listen")
        .await
        .unwrap();
    assert_eq!(voice.voice().unwrap().duration, Seconds::from_seconds(0));
    assert_eq!(voice.caption(), Some("listen"));

    let kinds: Vec<_> = fake
        .media_messages(2)
        .into_iter()
        .map(|m| (m.media.unwrap().kind, m.text))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("document".to_owned(), "Report".to_owned()),
            ("audio".to_owned(), String::new()),
            ("voice".to_owned(), "listen".to_owned()),
        ]
    );
    assert_eq!(
        fake.message(2, voice.id.0).unwrap().media.unwrap().data,
        b"OggS\0voice".to_vec()
    );
    // A file_id of the same kind can be sent again.
    let again = bot
        .send_audio(ChatId(2), InputFile::file_id(a.file.id.clone()))
        .await
        .unwrap();
    assert_eq!(again.audio().unwrap().file.id, a.file.id);
    fake.assert_no_errors();
}

#[tokio::test]
async fn media_uploads_follow_telegram_limits() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(3, "U");
    fake.send_private(&user, "hi");
    let photo =
        |data: Vec<u8>| bot.send_photo(ChatId(3), InputFile::memory(data).file_name("p.png"));

    // Captions: 1024 UTF-16 units after parsing; parse errors as for texts.
    photo(png(10, 10))
        .caption(format!("<b>{}</b>", "a".repeat(1024)))
        .parse_mode(ParseMode::Html)
        .await
        .unwrap();
    assert_eq!(
        unknown(photo(png(10, 10)).caption("😀".repeat(513)).await),
        "Bad Request: message caption is too long"
    );
    match api_error(
        photo(png(10, 10))
            .caption("<b>open")
            .parse_mode(ParseMode::Html)
            .await,
    ) {
        ApiError::CantParseEntities(s) => {
            assert!(
                s.contains("Can't find end tag corresponding to start tag \"b\""),
                "{s}"
            );
        }
        other => panic!("expected CantParseEntities, got {other:?}"),
    }
    // Buttons are validated as for texts: callback_data is at most 64 bytes.
    let with_data = |data: String| {
        photo(png(10, 10)).reply_markup(InlineKeyboardMarkup::new(vec![vec![
            InlineKeyboardButton::callback("Go", data),
        ]]))
    };
    assert_eq!(
        api_error(with_data("é".repeat(32) + "x").await),
        ApiError::ButtonDataInvalid
    );
    with_data("é".repeat(32)).await.unwrap();

    // Only PNG, JPEG, GIF and WEBP, with sane dimensions.
    assert_eq!(
        api_error(photo(b"%PDF-1.7 not an image".to_vec()).await),
        ApiError::ImageProcessFailed
    );
    let mut truncated = png(10, 10);
    truncated.truncate(20);
    assert_eq!(
        api_error(photo(truncated).await),
        ApiError::ImageProcessFailed
    );
    for (w, h) in [(9000, 1001), (2100, 100), (100, 2001)] {
        assert_eq!(
            unknown(photo(png(w, h)).await),
            "Bad Request: PHOTO_INVALID_DIMENSIONS",
            "{w}x{h}"
        );
    }
    photo(png(2000, 100)).await.unwrap();
    photo(png(5000, 5000)).await.unwrap();
    // A JPEG: SOI, an APP0 segment, then SOF0 with height 30 and width 40.
    let jpeg = [
        &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00][..],
        &[
            0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x1E, 0x00, 0x28, 0x01, 0x01, 0x11, 0x00,
        ],
        &[0xFF, 0xD9],
    ]
    .concat();
    let m = photo(jpeg).await.unwrap();
    let last = m.photo().unwrap().last().unwrap();
    assert_eq!((last.width, last.height), (40, 30));
    let gif = [
        &b"GIF89a"[..],
        &[0x05, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00],
        b";",
    ]
    .concat();
    let m = photo(gif).await.unwrap();
    assert_eq!(m.photo().unwrap()[0].width, 5);

    // Empty and too big uploads.
    assert_eq!(
        unknown(photo(Vec::new()).await),
        "Bad Request: file must be non-empty"
    );
    let mut big = png(100, 100);
    big.resize((10 << 20) + 1, 0);
    assert_eq!(api_error(photo(big).await), ApiError::RequestEntityTooLarge);
    let big_doc = vec![b'x'; (50 << 20) + 1];
    assert_eq!(
        api_error(
            bot.send_document(ChatId(3), InputFile::memory(big_doc).file_name("big.bin"))
                .await
        ),
        ApiError::RequestEntityTooLarge
    );
    let error = fake.errors().pop().unwrap();
    assert_eq!(error.error.as_deref(), Some("Request Entity Too Large"));
    let (status, body) = raw_multipart(
        &fake,
        "sendDocument",
        &[("chat_id", "3")],
        &[("document", "big.bin", &vec![0; (50 << 20) + 1])],
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(body["error_code"], json!(413));
    // 10 MB is fine for a document.
    bot.send_document(
        ChatId(3),
        InputFile::memory(vec![b'x'; (10 << 20) + 1]).file_name("ten.bin"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn media_messages_edit_captions_not_texts() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(4, "U");
    fake.send_private(&user, "hi");
    let keyboard = InlineKeyboardMarkup::new(vec![vec![InlineKeyboardButton::callback("A", "a")]]);
    let msg = bot
        .send_photo(ChatId(4), InputFile::memory(png(30, 30)).file_name("p.png"))
        .caption("Before")
        .reply_markup(keyboard.clone())
        .await
        .unwrap();
    let text = bot.send_message(ChatId(4), "plain").await.unwrap();

    assert_eq!(
        unknown(bot.edit_message_text(ChatId(4), msg.id, "x").await),
        "Bad Request: there is no text in the message to edit"
    );
    assert_eq!(
        unknown(
            bot.edit_message_caption(ChatId(4), text.id)
                .caption("x")
                .await
        ),
        "Bad Request: there is no caption in the message to edit"
    );
    assert_eq!(
        api_error(
            bot.edit_message_caption(ChatId(4), msg.id)
                .caption("Before")
                .reply_markup(keyboard.clone())
                .await
        ),
        ApiError::MessageNotModified
    );
    assert_eq!(
        unknown(
            bot.edit_message_caption(ChatId(4), msg.id)
                .caption("a".repeat(1025))
                .await
        ),
        "Bad Request: message caption is too long"
    );
    let edited = bot
        .edit_message_caption(ChatId(4), msg.id)
        .caption("<i>After</i>")
        .parse_mode(ParseMode::Html)
        .reply_markup(keyboard)
        .await
        .unwrap();
    assert_eq!(edited.caption(), Some("After"));
    assert_eq!(
        edited.caption_entities().unwrap()[0].kind,
        MessageEntityKind::Italic
    );
    assert!(edited.photo().is_some());
    assert!(edited.edit_date().is_some());

    // Removing the keyboard keeps the caption.
    let edited = bot
        .edit_message_reply_markup(ChatId(4), msg.id)
        .await
        .unwrap();
    assert_eq!(edited.caption(), Some("After"));
    assert!(edited.text().is_none());
    assert!(edited.reply_markup().is_none());
    // Omitting the caption removes it.
    let edited = bot.edit_message_caption(ChatId(4), msg.id).await.unwrap();
    assert!(edited.caption().is_none());

    let current = fake.message(4, msg.id.0).unwrap();
    assert_eq!(current.text, "");
    assert!(current.edited);
    assert_eq!(current.media.as_ref().unwrap().kind, "photo");
    let log = fake.media_messages(4);
    assert_eq!(
        log.iter()
            .map(|m| (m.edited, m.text.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (false, "Before"),
            (true, "After"),
            (true, "After"),
            (true, "")
        ]
    );
    assert_eq!(log[1].raw_text, "<i>After</i>");

    bot.delete_message(ChatId(4), msg.id).await.unwrap();
    assert!(fake.is_deleted(4, msg.id.0));
    assert_eq!(
        api_error(bot.edit_message_caption(ChatId(4), msg.id).await),
        ApiError::MessageToEditNotFound
    );
}

#[tokio::test]
async fn flood_limit_answers_429_and_catches_ignored_retry_after() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let (a, b) = (fake.user(5, "A"), fake.user(6, "B"));
    fake.send_private(&a, "hi");
    fake.send_private(&b, "hi");
    fake.set_flood_limit(Some(2), 1);

    bot.send_message(ChatId(5), "1").await.unwrap();
    bot.send_photo(ChatId(5), InputFile::memory(png(5, 5)).file_name("p.png"))
        .await
        .unwrap();
    // Rejected sends don't count and are not rate limited.
    assert_eq!(
        api_error(bot.send_message(ChatId(5), " ").await),
        ApiError::MessageTextIsEmpty
    );
    let limited = bot.send_message(ChatId(5), "3").await;
    assert!(
        matches!(limited, Err(RequestError::RetryAfter(s)) if s == Seconds::from_seconds(1)),
        "{limited:?}"
    );
    // Other chats have their own budget.
    bot.send_message(ChatId(6), "other").await.unwrap();
    assert_eq!(fake.rate_limited_count(), 1);
    assert_eq!(fake.errors().len(), 1, "the 429 is not the bot's error");
    assert!(fake.retry_after_violations().is_empty());

    // Sending again at once ignores retry_after: 429 again, and a violation.
    let again = bot.send_message(ChatId(5), "3").await;
    assert!(
        matches!(again, Err(RequestError::RetryAfter(_))),
        "{again:?}"
    );
    assert_eq!(fake.rate_limited_count(), 2);
    assert_eq!(fake.rate_limited_calls().len(), 2);
    let violations = fake.retry_after_violations();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].params["text"], json!("3"));
    assert_eq!(
        violations[0].error.as_deref(),
        Some("Too Many Requests: retry after 1")
    );
    assert_eq!(fake.messages(5).len(), 2);

    // Honouring retry_after works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bot.send_message(ChatId(5), "3").await.unwrap();
    fake.set_flood_limit(None, 1);
    for i in 0..5 {
        bot.send_message(ChatId(5), i.to_string()).await.unwrap();
    }

    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fake.assert_no_errors()))
        .unwrap_err();
    let text = panic.downcast_ref::<String>().unwrap();
    assert!(text.contains("rejected calls"), "{text}");
    assert!(text.contains("before retry_after elapsed"), "{text}");
    assert!(text.contains("sendmessage"), "{text}");
}

#[tokio::test]
async fn forced_429s_freeze_the_chat_they_hit() {
    let fake = FakeTelegram::start().await;
    let bot = bot(&fake);
    let user = fake.user(7, "U");
    fake.send_private(&user, "hi");
    fake.fail_next_sends_with_429(1, 1);

    let (status, body) = raw(
        &fake,
        "sendMessage",
        Some("application/json"),
        json!({"chat_id": 7, "text": "x"}).to_string(),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({
            "ok": false,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        })
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    bot.send_voice(
        ChatId(7),
        InputFile::memory(&b"OggS"[..]).file_name("v.ogg"),
    )
    .await
    .unwrap();
    bot.send_message(ChatId(7), "x").await.unwrap();
    assert_eq!(fake.rate_limited_count(), 1);
    assert!(fake.retry_after_violations().is_empty());
    fake.assert_no_errors();
}

#[tokio::test]
async fn every_nth_send_is_answered_429() {
    let fake = FakeTelegram::start().await;
    fake.answer_429_every(Some(3), 1);
    let mut statuses = Vec::new();
    for chat in 1..=6 {
        let user = fake.user(chat, "U");
        fake.send_private(&user, "hi");
        let (status, _) = raw(
            &fake,
            "sendMessage",
            Some("application/json"),
            json!({"chat_id": chat, "text": "x"}).to_string(),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
    assert_eq!(fake.rate_limited_count(), 2);
    assert!(fake.retry_after_violations().is_empty());
}
