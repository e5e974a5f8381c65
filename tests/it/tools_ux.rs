//! Using a server's tools from the chat without typing JSON, against the
//! official "everything" server: the tool browser (buttons, pages, a
//! tool's parameters).

use std::time::Duration;

use fake_telegram::FakeTelegram;
use test_peers::EverythingServer;

use crate::support::bot::{BotProcess, base_config};

const WAIT: Duration = Duration::from_secs(30);

fn everything(url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"every\"\nname = \"Everything\"\nurl = \"{url}\"\ntrusted = true\n"
    )
}

/// A bot on the fake Telegram with `server` as its one server, "every".
async fn everything_bot(server: EverythingServer) -> (EverythingServer, FakeTelegram, BotProcess) {
    let telegram = FakeTelegram::start().await;
    let url = server.mcp_url();
    let bot = BotProcess::start(&telegram, |dir| {
        base_config(&telegram, dir) + &everything(&url)
    })
    .await;
    (server, telegram, bot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_buttons_with_pages_and_a_tap_shows_the_parameters() {
    let (_server, telegram, bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");

    // One server configured: a bare /tools means it.
    telegram.send_private(&alice, "/tools");
    let first = telegram
        .wait_for_message(1, WAIT, |m| !m.callback_buttons().is_empty())
        .await;
    assert!(
        first.text.starts_with("Tools of Everything ("),
        "{}",
        first.text
    );
    let buttons = first.callback_buttons();
    assert!(
        buttons.iter().all(|(_, data)| data.len() <= 64),
        "callback_data within 64 bytes: {buttons:?}"
    );
    let tool_buttons = buttons
        .iter()
        .filter(|(_, d)| d.starts_with("tool:"))
        .count();
    assert_eq!(tool_buttons, 8, "a full first page: {buttons:?}");
    let (_, echo) = buttons
        .iter()
        .find(|(label, _)| label.to_lowercase().contains("echo"))
        .expect("echo sorts first")
        .clone();
    let (_, next) = buttons
        .iter()
        .find(|(label, _)| label.starts_with("Next"))
        .expect("more than one page")
        .clone();

    telegram.press_callback_button(&alice, 1, first.message_id, &echo);
    let details = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Parameters:"))
        .await;
    assert!(
        details.text.contains("message (string, required)"),
        "{}",
        details.text
    );
    assert!(
        details
            .text
            .contains("/call every echo {\"message\":\"…\"}"),
        "{}",
        details.text
    );

    telegram.press_callback_button(&alice, 1, first.message_id, &next);
    let second = telegram
        .wait_for_message(1, WAIT, |m| m.edited && m.message_id == first.message_id)
        .await;
    assert!(second.text.contains("page 2 of"), "{}", second.text);
    let (_, back) = second
        .callback_buttons()
        .into_iter()
        .find(|(label, _)| label.starts_with("◀"))
        .expect("a way back");
    telegram.press_callback_button(&alice, 1, first.message_id, &back);
    let again = telegram
        .wait_for_message(1, WAIT, |m| m.edited && m.message_id == first.message_id)
        .await;
    assert!(again.text.contains("page 1 of"), "{}", again.text);

    bot.stop().await;
    telegram.assert_no_errors();
}

/// What the everything server's results become: a photo in place, a JSON
/// code block once for structured content, a document for a result of
/// 100,000 characters and for an embedded resource; wrong arguments are
/// answered by the schema before the server is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_arrive_as_photos_code_blocks_and_documents() {
    // `get-env` returns the server's environment as JSON: a way to get a
    // result of any size from the real server.
    let big = "z".repeat(100_000);
    let server = EverythingServer::start_with_env(vec![("MCPGRAM_BIG".to_owned(), big)]).await;
    let (_server, telegram, bot) = everything_bot(server).await;
    // Telegram's flood control at one message a second per chat: a send
    // beyond it is answered 429, and one before retry_after is a violation.
    telegram.set_flood_limit(Some(1), 1);
    let alice = telegram.user(1, "Alice");

    telegram.send_private(&alice, "/call every get-tiny-image");
    let before = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("image you requested"))
        .await;
    let photo = telegram
        .wait_for_message(1, WAIT, |m| m.media.is_some())
        .await;
    let media = photo.media.as_ref().unwrap();
    assert_eq!(media.kind, "photo");
    assert!(media.data.starts_with(b"\x89PNG"), "the image's own bytes");
    assert!(
        photo.message_id > before.message_id,
        "in the server's order"
    );
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("is the MCP logo"))
        .await;

    telegram.send_private(&alice, r#"/call every get-sum {"a": "x", "b": 1}"#);
    let refused = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("was not called"))
        .await;
    assert!(
        refused.text.contains(r#"a: "x" is not of type "number""#),
        "{}",
        refused.text
    );

    telegram.send_private(
        &alice,
        r#"/call every get-structured-content {"location": "Chicago"}"#,
    );
    let structured = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("temperature"))
        .await;
    assert_eq!(structured.parse_mode.as_deref(), Some("HTML"));
    assert!(
        structured
            .raw_text
            .contains("<pre><code class=\"language-json\">"),
        "{}",
        structured.raw_text
    );
    assert_eq!(
        structured.text.matches("temperature").count(),
        1,
        "shown once: {}",
        structured.text
    );

    telegram.send_private(&alice, "/call every get-env");
    let long = telegram
        .wait_for_message(1, WAIT, |m| m.media.is_some())
        .await;
    let file = long.media.as_ref().unwrap();
    assert_eq!(file.kind, "document");
    assert_eq!(file.file_name.as_deref(), Some("result.json"));
    assert!(file.data.len() > 100_000, "{} bytes", file.data.len());
    assert!(long.text.contains("comes as a file"), "{}", long.text);

    telegram.send_private(
        &alice,
        r#"/call every gzip-file-as-resource {"name": "hello.txt.gz", "data": "data:text/plain;base64,aGVsbG8gd29ybGQ=", "outputType": "resource"}"#,
    );
    // Not read-only: it runs only once Run is pressed.
    let consent = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("may change things"))
        .await;
    assert!(
        consent.text.contains("hello.txt.gz"),
        "the arguments shown: {}",
        consent.text
    );
    assert!(telegram.media_messages(1).len() == 2, "nothing ran yet");
    telegram.press_callback_button(&alice, 1, consent.message_id, &button(&consent, "Run"));
    let resource = telegram
        .wait_for_message(1, WAIT, |m| m.media.is_some())
        .await;
    let file = resource.media.as_ref().unwrap();
    assert_eq!(file.kind, "document");
    assert!(file.data.starts_with(&[0x1f, 0x8b]), "the gzip file itself");

    bot.stop().await;
    // Sends are paced below Telegram's per-chat limit before any 429.
    assert_eq!(
        telegram.rate_limited_count(),
        0,
        "sent faster than Telegram allows"
    );
    telegram.assert_no_errors();
}

/// A long call shows one status message edited with the server's
/// progress, removed when the result comes; Cancel (the button or
/// /cancel) stops a call and frees the user at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_calls_show_progress_and_can_be_cancelled() {
    let (_server, telegram, bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");

    telegram.send_private(
        &alice,
        r#"/call every trigger-long-running-operation {"duration": 3, "steps": 3}"#,
    );
    let status = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("⏳ Running"))
        .await;
    assert!(
        status
            .callback_buttons()
            .iter()
            .any(|(label, data)| label == "Cancel" && data.len() <= 64),
        "{:?}",
        status.reply_markup
    );
    let done = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("operation completed"))
        .await;
    let versions: Vec<String> = telegram
        .messages(1)
        .into_iter()
        .filter(|m| m.message_id == status.message_id)
        .map(|m| m.text)
        .collect();
    assert!(
        versions.iter().any(|t| t.contains("of 3)")),
        "progress shown: {versions:?}"
    );
    assert!(
        telegram.is_deleted(1, status.message_id),
        "the status goes when the result comes"
    );
    assert!(done.message_id > status.message_id);

    // The button.
    telegram.send_private(
        &alice,
        r#"/call every trigger-long-running-operation {"duration": 120, "steps": 120}"#,
    );
    let status = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("⏳ Running"))
        .await;
    let (_, cancel) = status.callback_buttons().remove(0);
    telegram.press_callback_button(&alice, 1, status.message_id, &cancel);
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.starts_with("Stopped trigger-long-running-operation")
        })
        .await;
    telegram.send_private(&alice, r#"/call every get-sum {"a": 1, "b": 2}"#);
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("The sum of 1 and 2 is 3."))
        .await;

    // The command, which the busy gate lets through.
    telegram.send_private(
        &alice,
        r#"/call every trigger-long-running-operation {"duration": 120, "steps": 120}"#,
    );
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("⏳ Running"))
        .await;
    telegram.send_private(&alice, "/cancel");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Stopped"))
        .await;
    telegram.send_private(&alice, "/cancel");
    telegram
        .wait_for_message(1, WAIT, |m| m.text == "Nothing of yours is running.")
        .await;

    bot.stop().await;
    telegram.assert_no_errors();
}

/// The label and callback data of the first button whose label contains
/// `part`.
fn button(message: &fake_telegram::SentMessage, part: &str) -> String {
    message
        .callback_buttons()
        .into_iter()
        .find(|(label, _)| label.contains(part))
        .unwrap_or_else(|| panic!("no {part:?} button in {:?}", message.reply_markup))
        .1
}

/// Opens the details of the tool whose button label contains `title`, on
/// whichever page of the browser it is.
async fn open_tool(
    telegram: &FakeTelegram,
    alice: &fake_telegram::FakeUser,
    title: &str,
) -> fake_telegram::SentMessage {
    telegram.send_private(alice, "/tools every");
    let mut page = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Tools of"))
        .await;
    let browser = page.message_id;
    loop {
        if let Some((_, data)) = page
            .callback_buttons()
            .into_iter()
            .find(|(label, _)| label.contains(title))
        {
            telegram.press_callback_button(alice, 1, browser, &data);
            return telegram
                .wait_for_message(1, WAIT, |m| m.text.contains("Parameters:"))
                .await;
        }
        let next = button(&page, "Next");
        telegram.press_callback_button(alice, 1, browser, &next);
        page = telegram
            .wait_for_message(1, WAIT, |m| m.edited && m.message_id == browser)
            .await;
    }
}

/// A guided call: each parameter asked in turn (an enum as buttons,
/// numbers as replies checked by the schema), then Run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guided_call_asks_for_each_parameter_then_runs() {
    let (_server, telegram, bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");

    // An enum: one tap.
    let details = open_tool(&telegram, &alice, "Structured").await;
    telegram.press_callback_button(&alice, 1, details.message_id, &button(&details, "Run it"));
    let question = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("1/1 · location"))
        .await;
    telegram.press_callback_button(
        &alice,
        1,
        question.message_id,
        &button(&question, "Chicago"),
    );
    let confirm = telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.starts_with("Run get-structured-content")
        })
        .await;
    assert!(
        confirm.text.contains(r#"{"location":"Chicago"}"#),
        "{}",
        confirm.text
    );
    telegram.press_callback_button(&alice, 1, confirm.message_id, &button(&confirm, "Run"));
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("temperature"))
        .await;

    // Numbers: a word is refused, then the values are taken.
    let details = open_tool(&telegram, &alice, "Sum").await;
    telegram.press_callback_button(&alice, 1, details.message_id, &button(&details, "Run it"));
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("1/2 · a"))
        .await;
    telegram.send_private(&alice, "two");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("That does not fit"))
        .await;
    telegram.send_private(&alice, "2");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("2/2 · b"))
        .await;
    telegram.send_private(&alice, "3.5");
    let confirm = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Run get-sum"))
        .await;
    telegram.press_callback_button(&alice, 1, confirm.message_id, &button(&confirm, "Run"));
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("The sum of 2 and 3.5 is 5.5."))
        .await;

    // /cancel leaves a dialogue.
    let details = open_tool(&telegram, &alice, "Sum").await;
    telegram.press_callback_button(&alice, 1, details.message_id, &button(&details, "Run it"));
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("1/2 · a"))
        .await;
    telegram.send_private(&alice, "/cancel");
    telegram
        .wait_for_message(1, WAIT, |m| m.edited && m.text.ends_with("✖ Cancelled."))
        .await;
    telegram.send_private(&alice, "5");
    telegram
        .wait_for_message(1, WAIT, |m| m.text == "Send /help to see what I can do.")
        .await;

    bot.stop().await;
    telegram.assert_no_errors();
}

/// A server's `elicitation/create` becomes questions in the chat; the
/// answers (with the schema's defaults for what was skipped) resume the
/// call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_question_is_answered_through_buttons() {
    let (_server, telegram, bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");

    telegram.send_private(&alice, "/call every trigger-elicitation-request");
    // Not read-only: confirmed first, and allowed for good.
    let consent = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("may change things"))
        .await;
    telegram.press_callback_button(
        &alice,
        1,
        consent.message_id,
        &button(&consent, "Always allow"),
    );
    let first = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Everything asks:"))
        .await;
    assert!(first.text.contains("name"), "{}", first.text);
    telegram.send_private(&alice, "Ada Lovelace");
    let check = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("check"))
        .await;
    telegram.send_private(&alice, "maybe");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("That does not fit"))
        .await;
    telegram.press_callback_button(&alice, 1, check.message_id, &button(&check, "Yes"));
    let third = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("firstLine"))
        .await;
    telegram.press_callback_button(
        &alice,
        1,
        third.message_id,
        &button(&third, "Skip the rest"),
    );
    let confirm = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Send them to Everything?"))
        .await;
    telegram.press_callback_button(&alice, 1, confirm.message_id, &button(&confirm, "Send"));
    let result = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("User inputs"))
        .await;
    assert!(
        result.text.contains("- Name: Ada Lovelace"),
        "{}",
        result.text
    );
    assert!(
        result.text.contains("- Agreed to terms: true"),
        "{}",
        result.text
    );
    assert!(
        result.text.contains("- Favorite Integer: 42"),
        "the schema's default for what was skipped: {}",
        result.text
    );

    // Declined; allowed before, so no Run this time.
    telegram.send_private(&alice, "/call every trigger-elicitation-request");
    let first = telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.starts_with("Everything asks:") || m.text.contains("may change things")
        })
        .await;
    assert!(first.text.starts_with("Everything asks:"), "{}", first.text);
    telegram.press_callback_button(&alice, 1, first.message_id, &button(&first, "Decline"));
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("User declined"))
        .await;

    // /status lists the consent and takes it back.
    telegram.send_private(&alice, "/status");
    let consents = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Tools you allowed"))
        .await;
    let again = button(&consents, "trigger-elicitation-request");
    telegram.press_callback_button(&alice, 1, consents.message_id, &again);
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.edited && m.text.contains("will ask you first again")
        })
        .await;
    telegram.send_private(&alice, "/call every trigger-elicitation-request");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("may change things"))
        .await;

    bot.stop().await;
    telegram.assert_no_errors();
}

/// Pages through a browser until a button whose label contains `part`
/// shows up, and taps it.
async fn tap_in_browser(
    telegram: &FakeTelegram,
    alice: &fake_telegram::FakeUser,
    first: fake_telegram::SentMessage,
    part: &str,
) {
    let browser = first.message_id;
    let mut page = first;
    loop {
        if let Some((_, data)) = page
            .callback_buttons()
            .into_iter()
            .find(|(label, _)| label.contains(part))
        {
            telegram.press_callback_button(alice, 1, browser, &data);
            return;
        }
        let next = button(&page, "Next");
        telegram.press_callback_button(alice, 1, browser, &next);
        page = telegram
            .wait_for_message(1, WAIT, |m| m.edited && m.message_id == browser)
            .await;
    }
}

/// /resources lists a server's resources as buttons, and a tap sends one:
/// text as text, a binary one as a document. /prompts fills a prompt's
/// arguments like a guided call and sends its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_and_prompts_from_the_chat() {
    let (_server, telegram, bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");

    telegram.send_private(&alice, "/resources");
    let list = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Resources of Everything"))
        .await;
    assert!(
        list.callback_buttons().iter().all(|(_, d)| d.len() <= 64),
        "{:?}",
        list.reply_markup
    );
    tap_in_browser(&telegram, &alice, list, "architecture.md").await;
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.contains("Everything Server – Architecture")
        })
        .await;

    // A binary resource of the session: a gzip file made by a tool.
    telegram.send_private(
        &alice,
        r#"/call every gzip-file-as-resource {"name": "notes.txt.gz", "data": "data:text/plain;base64,aGVsbG8gd29ybGQ=", "outputType": "resourceLink"}"#,
    );
    let consent = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("may change things"))
        .await;
    telegram.press_callback_button(&alice, 1, consent.message_id, &button(&consent, "Run"));
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.contains("🔗") && m.text.contains("notes.txt.gz")
        })
        .await;
    telegram.send_private(&alice, "/resources every");
    let list = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Resources of Everything"))
        .await;
    tap_in_browser(&telegram, &alice, list, "notes.txt.gz").await;
    let file = telegram
        .wait_for_message(1, WAIT, |m| m.media.is_some())
        .await;
    let media = file.media.unwrap();
    assert_eq!(media.kind, "document");
    assert_eq!(media.file_name.as_deref(), Some("notes.txt.gz"));
    assert!(media.data.starts_with(&[0x1f, 0x8b]));

    // A prompt with a required and an optional argument.
    telegram.send_private(&alice, "/prompts every");
    let list = telegram
        .wait_for_message(1, WAIT, |m| m.text.starts_with("Prompts of Everything"))
        .await;
    tap_in_browser(&telegram, &alice, list, "Arguments Prompt").await;
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("1/2 · city"))
        .await;
    telegram.send_private(&alice, "Paris");
    let state = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("2/2 · state"))
        .await;
    telegram.press_callback_button(&alice, 1, state.message_id, &button(&state, "Skip"));
    let confirm = telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.starts_with("Get the prompt args-prompt")
        })
        .await;
    telegram.press_callback_button(&alice, 1, confirm.message_id, &button(&confirm, "Get it"));
    let messages = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("What's weather in Paris?"))
        .await;
    assert!(messages.text.contains("User:"), "{}", messages.text);

    bot.stop().await;
    telegram.assert_no_errors();
}

/// URL-mode elicitation: the whole URL with its host in bold, nothing
/// opened or fetched; "Open the page" accepts and only then gives a link
/// button to the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_question_shows_the_whole_url_and_opens_only_on_a_tap() {
    let (_server, telegram, bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");

    telegram.send_private(
        &alice,
        r#"/call every trigger-url-elicitation {"url": "https://pay.example.com/approve?order=42", "message": "Approve the payment"}"#,
    );
    let consent = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("may change things"))
        .await;
    telegram.press_callback_button(&alice, 1, consent.message_id, &button(&consent, "Run"));
    let question = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Nothing opens until you tap"))
        .await;
    assert!(
        question.text.contains("Approve the payment"),
        "{}",
        question.text
    );
    assert!(
        question
            .text
            .contains("https://pay.example.com/approve?order=42"),
        "the whole URL: {}",
        question.text
    );
    assert!(
        question.raw_text.contains("<b>pay.example.com</b>"),
        "{}",
        question.raw_text
    );
    assert!(
        question.link_preview_disabled,
        "no preview fetches the page"
    );
    assert!(
        question.url_buttons().is_empty(),
        "nothing to open before consent"
    );
    telegram.press_callback_button(
        &alice,
        1,
        question.message_id,
        &button(&question, "Open the page"),
    );
    let opened = telegram
        .wait_for_message(1, WAIT, |m| m.edited && m.message_id == question.message_id)
        .await;
    assert_eq!(
        opened.url_buttons(),
        vec![(
            "Open pay.example.com".to_owned(),
            "https://pay.example.com/approve?order=42".to_owned()
        )]
    );
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.contains("User completed the URL elicitation")
        })
        .await;

    bot.stop().await;
    telegram.assert_no_errors();
}

/// URL elicitation's error path: the server answers `-32042` with a page
/// to open first; the bot asks as for any URL question, then offers the
/// call again, and the server then goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_required_first_is_asked_and_the_call_offered_again() {
    let (_server, telegram, bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");

    telegram.send_private(
        &alice,
        r#"/call every trigger-url-elicitation {"url": "https://pay.example.com/approve", "message": "Approve the payment", "errorPath": true}"#,
    );
    let consent = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("may change things"))
        .await;
    telegram.press_callback_button(&alice, 1, consent.message_id, &button(&consent, "Run"));
    let first = telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("Nothing opens until you tap"))
        .await;
    telegram.press_callback_button(
        &alice,
        1,
        first.message_id,
        &button(&first, "Open the page"),
    );
    let again = telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.starts_with("Run trigger-url-elicitation")
        })
        .await;
    telegram.press_callback_button(&alice, 1, again.message_id, &button(&again, "Run"));
    let second = telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.contains("Nothing opens until you tap") && m.text.contains("pay.example.com")
        })
        .await;
    telegram.press_callback_button(
        &alice,
        1,
        second.message_id,
        &button(&second, "Open the page"),
    );
    telegram
        .wait_for_message(1, WAIT, |m| {
            m.text.contains("User completed the URL elicitation")
        })
        .await;

    bot.stop().await;
    telegram.assert_no_errors();
}

/// "typing…" comes only once a call takes a while: a quick answer needs
/// no sign, and costs one Bot API call instead of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_shows_only_for_calls_that_take_a_while() {
    let (_server, telegram, _bot) = everything_bot(EverythingServer::start().await).await;
    let alice = telegram.user(1, "Alice");
    let typing = |telegram: &FakeTelegram| {
        telegram
            .calls()
            .iter()
            .filter(|c| c.method == "sendchataction")
            .count()
    };
    const SUM: &str = r#"/call every get-sum {"a": 1, "b": 2}"#;

    // The first call opens the session.
    telegram.send_private(&alice, SUM);
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("is 3"))
        .await;
    let before = typing(&telegram);
    telegram.send_private(&alice, SUM);
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("is 3"))
        .await;
    assert_eq!(typing(&telegram), before, "a quick call shows no typing");

    telegram.send_private(
        &alice,
        r#"/call every trigger-long-running-operation {"duration": 2, "steps": 2}"#,
    );
    telegram
        .wait_for_call_count("sendchataction", before + 1, WAIT)
        .await;
    let action = telegram.wait_for_call("sendchataction", WAIT).await;
    assert_eq!(action.params["action"], "typing");
    telegram
        .wait_for_message(1, WAIT, |m| m.text.contains("operation completed"))
        .await;
    telegram.assert_no_errors();
}
