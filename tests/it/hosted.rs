//! Hosted mode in a real browser: the bot behind https (`public_url`),
//! Chromium over WebDriver, one profile per person. Cookies, forms,
//! redirects and same-site rules are only honest in a real browser.
//!
//! The attack played: Mallory asks for a connect link and gets a victim to
//! complete it, hoping the victim's account lands in Mallory's chat.

use std::net::SocketAddr;
use std::time::Duration;

use axum::response::Html;
use fake_telegram::{FakeTelegram, FakeUser, SentMessage};
use test_peers::{Browser, Chromedriver, TlsFront, TsDemoServer};

use crate::support::bot::{BotProcess, base_config};
use crate::support::text_contains;

const WAIT: Duration = Duration::from_secs(60);

struct Hosted {
    telegram: FakeTelegram,
    bot: BotProcess,
    tls: TlsFront,
    chrome: Chromedriver,
    _demo: TsDemoServer,
}

impl Hosted {
    async fn start(login_url: bool) -> Self {
        let demo = TsDemoServer::start().await;
        let telegram = FakeTelegram::start().await;
        let port = crate::support::free_port();
        let tls = TlsFront::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
        let public = tls.url();
        let mcp_url = demo.mcp_url();
        let bot = BotProcess::start(&telegram, |dir| {
            let login = if login_url { "login_url = true\n" } else { "" };
            base_config(&telegram, dir)
                .replace("[http]", &format!("{login}\n[http]"))
                .replace(
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"{public}\""),
                )
                + &format!(
                    "\n[[mcp.servers]]\nid = \"demo\"\nname = \"Demo\"\nurl = \"{mcp_url}\"\ntrusted = true\ntimeout_secs = 20\n[mcp.servers.oauth]\nenabled = true\n"
                )
        })
        .await;
        Self {
            telegram,
            bot,
            tls,
            chrome: Chromedriver::start().await,
            _demo: demo,
        }
    }

    /// `user` sends /connect demo; returns the link message.
    async fn link_for(&self, user: &FakeUser) -> SentMessage {
        self.telegram.send_private(user, "/connect demo");
        let offer = self
            .telegram
            .wait_for_message(user.id as i64, WAIT, |m| {
                m.reply_markup
                    .as_ref()
                    .is_some_and(|r| r.to_string().contains("/oauth/start/"))
            })
            .await;
        assert!(offer.link_preview_disabled, "no previews of a connect link");
        let sent = self
            .telegram
            .calls()
            .into_iter()
            .rfind(|c| c.method == "sendmessage" && c.params["chat_id"] == user.id)
            .expect("the link was sent");
        assert_eq!(sent.params["protect_content"], true, "{:?}", sent.params);
        offer
    }

    async fn status_of(&self, user: &FakeUser) -> String {
        self.telegram.send_private(user, "/status");
        self.telegram
            .wait_for_message(user.id as i64, WAIT, text_contains("Your connections"))
            .await
            .text
    }
}

/// A plain HTTP client that trusts the test's certificate and follows no
/// redirects: a link-preview fetcher, or Mallory's own scripted browser.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The binding cookie a browser holds for the bot's site.
async fn binding_cookie(browser: &Browser) -> cookie::Cookie<'static> {
    browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c.name().starts_with("mcpgram-flow-"))
        .expect("the browser holds the flow's cookie")
}

fn assert_cookie_is_bound_safely(cookie: &cookie::Cookie<'_>) {
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly: {cookie:?}");
    assert_eq!(cookie.secure(), Some(true), "Secure on https: {cookie:?}");
    assert_eq!(
        cookie.same_site(),
        Some(cookie::SameSite::Lax),
        "SameSite=Lax: {cookie:?}"
    );
}

/// A page on another site that posts a form to `target` as soon as it
/// loads: the forged confirmation a real attacker would host.
async fn attacker_site(target: String) -> (String, tokio::task::JoinHandle<()>) {
    let page = format!(
        "<!doctype html><html><body><form method=\"post\" action=\"{target}\"><button>Win a prize</button></form>\
         <script>document.forms[0].submit()</script></body></html>"
    );
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { Html(page) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_page_binds_one_browser_and_refuses_forwarded_and_forged_attempts() {
    let h = Hosted::start(false).await;
    let alice = h.telegram.user(1001, "Alice");
    let mallory = h.telegram.user(666, "Mallory");

    let offer = h.link_for(&mallory).await;
    let start_url = offer.url_buttons()[0].1.clone();
    assert!(
        start_url.starts_with(&format!("{}/oauth/start/", h.tls.url())),
        "{start_url}"
    );

    // Link previews and crawlers GET the page: it names Mallory, and
    // nothing is spent or bound.
    for _ in 0..2 {
        let page = raw_client().get(&start_url).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let body = page.text().await.unwrap();
        assert!(body.contains("Continue only if you are Mallory"), "{body}");
    }

    // A forged form on another site, auto-submitted in the victim's
    // browser, is refused: only the bot's own page may confirm.
    let victim = h.chrome.browser().await;
    let (attacker, attacker_task) = attacker_site(start_url.clone()).await;
    victim.client.goto(&attacker).await.unwrap();
    victim
        .client
        .wait()
        .for_url(&url::Url::parse(&start_url).unwrap())
        .await
        .unwrap();
    let (_, text) = victim.here().await;
    assert!(
        text.contains("can only be sent from its own page"),
        "{text}"
    );
    attacker_task.abort();

    // Mallory takes her flow in her own (scripted) browser and forwards
    // the authorization server's URL. The victim approves, but the
    // callback comes from a browser without the flow's cookie.
    let taken = raw_client()
        .post(&start_url)
        .header("origin", h.tls.url())
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 303);
    assert!(taken.headers().get("set-cookie").is_some());
    let authorize = taken.headers()["location"].to_str().unwrap().to_owned();
    let (at, text) = victim.open(&authorize).await;
    assert_eq!(at.path(), "/oauth/callback", "{at}");
    assert!(text.contains("started in another browser"), "{text}");
    h.telegram
        .wait_for_message(666, WAIT, text_contains("A browser other than yours tried"))
        .await;
    assert!(
        h.status_of(&mallory)
            .await
            .contains("Demo (demo): not connected")
    );
    victim.close().await;

    // Alice, in her own browser: her page, one click, connected.
    let offer = h.link_for(&alice).await;
    let mine = h.chrome.browser().await;
    let (_, page) = mine.open(&offer.url_buttons()[0].1).await;
    assert!(page.contains("Continue only if you are Alice"), "{page}");
    let (at, page) = mine.click_button().await;
    assert_eq!(at.path(), "/oauth/callback", "{at}");
    assert!(page.contains("Connected to Demo"), "{page}");
    assert_cookie_is_bound_safely(&binding_cookie(&mine).await);
    h.telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Demo"))
        .await;
    assert!(h.status_of(&alice).await.contains("Demo (demo): connected"));
    mine.close().await;

    h.bot.stop().await;
    h.telegram.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_login_lets_only_the_requester_through() {
    let h = Hosted::start(true).await;
    let alice = h.telegram.user(1001, "Alice");
    let mallory = h.telegram.user(666, "Mallory");

    let malloys_link = h.link_for(&mallory).await;
    assert!(
        malloys_link
            .reply_markup
            .as_ref()
            .unwrap()
            .to_string()
            .contains("login_url"),
        "a Telegram Login button: {:?}",
        malloys_link.reply_markup
    );

    // The victim taps Mallory's button: Telegram signs the victim's
    // identity, and the start page refuses it.
    let victim = h.chrome.browser().await;
    let opened = h
        .telegram
        .login_url_for(&alice, 666, malloys_link.message_id);
    let (_, text) = victim.open(&opened).await;
    assert!(text.contains("belongs to someone else"), "{text}");
    h.telegram
        .wait_for_message(
            666,
            WAIT,
            text_contains("Telegram user Alice (id 1001) tried"),
        )
        .await;

    // A forged identity does not verify.
    let forged = opened.replace("id=1001", "id=666");
    let (_, text) = victim.open(&forged).await;
    assert!(text.contains("could not confirm who you are"), "{text}");
    victim.close().await;
    assert!(
        h.status_of(&mallory)
            .await
            .contains("Demo (demo): not connected")
    );

    // Alice taps her own button: straight through to connected.
    let her_link = h.link_for(&alice).await;
    let mine = h.chrome.browser().await;
    let opened = h.telegram.login_url_for(&alice, 1001, her_link.message_id);
    let (at, page) = mine.open(&opened).await;
    assert_eq!(at.path(), "/oauth/callback", "{at}");
    assert!(page.contains("Connected to Demo"), "{page}");
    assert_cookie_is_bound_safely(&binding_cookie(&mine).await);
    h.telegram
        .wait_for_message(1001, WAIT, text_contains("Connected to Demo"))
        .await;
    mine.close().await;

    h.bot.stop().await;
    h.telegram.assert_no_errors();
}
