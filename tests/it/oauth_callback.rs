//! The OAuth callback endpoint on its own: the library's router served on
//! loopback, flows started against the TypeScript SDK's example server,
//! and a notifier that records what the chat would be told.

use std::sync::{Arc, Mutex};

use mcpgram::config;
use mcpgram::gateway::{ChatNotifier, Gateway, Notice};
use mcpgram::http::{HttpState, router};
use mcpgram::store::{FlowOwner, Stores};
use mcpgram::vault::{KeySource, Vault};
use test_peers::TsDemoServer;
use test_peers::browser;
use tokio::net::TcpListener;

/// Records what the chat would be told, in the core's own terms.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl ChatNotifier for Recorder {
    async fn notify(&self, notice: Notice<'_>) {
        let note = match notice {
            Notice::Connected { owner, server, .. } => format!(
                "connected {} {} {}",
                owner.user_id, owner.chat_id, server.id
            ),
            Notice::ConnectFailed {
                owner,
                server_id,
                error,
                ..
            } => format!(
                "failed {} {} {server_id}: {error:?}",
                owner.user_id, owner.chat_id
            ),
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap().push(note);
    }
}

struct Harness {
    base: String,
    gateway: Arc<Gateway>,
    notes: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

async fn harness(mcp_url: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[telegram]\ntoken = \"1:x\"\n[[mcp.servers]]\nid = \"demo\"\nname = \"Demo\"\nurl = \"{mcp_url}\"\ntrusted = true\n[mcp.servers.oauth]\nenabled = true\n"
    );
    let config = Arc::new(config::parse(&text, dir.path(), &|_| None).unwrap());
    let vault = Arc::new(
        Vault::open(
            &dir.path().join("vault"),
            &KeySource::File(dir.path().join("key")),
        )
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let notes = Arc::new(Recorder::default());
    let gateway = Arc::new(Gateway::new(
        config,
        Stores::embedded(vault).await.unwrap(),
        format!("{base}/oauth/callback"),
        notes.clone(),
    ));
    let state = HttpState {
        gateway: gateway.clone(),
        dependencies: Vec::new(),
        webhook: None,
    };
    tokio::spawn(async move { axum::serve(listener, router(state, true)).await });
    Harness {
        base,
        gateway,
        notes,
        _dir: dir,
    }
}

/// Starts Alice's flow for "demo" and returns its `state`.
async fn start_flow(h: &Harness) -> String {
    let server = h.gateway.find_server("demo").unwrap();
    let flow = h
        .gateway
        .start_connect(ALICE, "Alice", &server)
        .await
        .unwrap();
    url::Url::parse(flow.link.url().expose())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned()
}

async fn is_connected(h: &Harness) -> bool {
    let statuses = h.gateway.status(7).await;
    statuses[0].standing == mcpgram::gateway::Standing::Connected
}

const ALICE: FlowOwner = FlowOwner {
    user_id: 7,
    chat_id: 7,
};

#[tokio::test]
async fn health_and_direct_visits_are_answered_plainly() {
    let h = harness("http://localhost:9/mcp").await;
    let health = reqwest::get(format!("{}/healthz", h.base)).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    for query in ["", "?code=abc", "?code=abc&state=never-issued", "?state="] {
        let visit = browser::open(&format!("{}/oauth/callback{query}", h.base)).await;
        assert_eq!(visit.status, 400, "{query}: {}", visit.body);
        assert!(
            visit.body.contains("Not connected"),
            "{query}: {}",
            visit.body
        );
    }
    assert!(h.notes.0.lock().unwrap().is_empty(), "nobody to tell");
}

#[tokio::test]
async fn a_refusal_at_the_authorization_server_tells_the_owner_and_spends_the_link() {
    let demo = TsDemoServer::start().await;
    let h = harness(&demo.mcp_url()).await;
    let state = start_flow(&h).await;

    let denied = format!(
        "{}/oauth/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}",
        h.base
    );
    let visit = browser::open(&denied).await;
    assert_eq!(visit.status, 400);
    assert!(visit.body.contains("access_denied"), "{}", visit.body);
    assert!(!visit.body.contains("<script>"), "escaped: {}", visit.body);
    let notes = h.notes.0.lock().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("failed 7 7 demo: Denied") && notes[0].contains("access_denied"),
        "{notes:?}"
    );

    // The same state cannot be used again, with or without a code.
    let again = browser::open(&format!("{}/oauth/callback?code=x&state={state}", h.base)).await;
    assert_eq!(again.status, 400);
    assert!(!is_connected(&h).await);
}

#[tokio::test]
async fn a_newer_link_replaces_the_older_one() {
    let demo = TsDemoServer::start().await;
    let h = harness(&demo.mcp_url()).await;
    let server = h.gateway.find_server("demo").unwrap();
    let first = h
        .gateway
        .start_connect(ALICE, "Alice", &server)
        .await
        .unwrap();
    let second = h
        .gateway
        .start_connect(ALICE, "Alice", &server)
        .await
        .unwrap();

    let stale = browser::open(first.link.url().expose()).await;
    assert_eq!(stale.status, 400, "{}", stale.body);
    let fresh = browser::open(second.link.url().expose()).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert!(is_connected(&h).await);
    assert_eq!(
        h.notes.0.lock().unwrap().clone(),
        vec!["connected 7 7 demo".to_owned()]
    );
}

#[tokio::test]
async fn a_known_state_without_a_code_is_the_browsers_problem_not_a_bad_gateway() {
    let demo = TsDemoServer::start().await;
    let h = harness(&demo.mcp_url()).await;
    let state = start_flow(&h).await;

    let visit = browser::open(&format!("{}/oauth/callback?state={state}", h.base)).await;
    assert_eq!(visit.status, 400, "{}", visit.body);
    assert!(
        visit.body.contains("neither a code nor an error"),
        "{}",
        visit.body
    );
    assert!(visit.body.contains("/connect demo"), "{}", visit.body);
    let notes = h.notes.0.lock().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("failed 7 7 demo: MissingCode"),
        "{notes:?}"
    );
}

#[tokio::test]
async fn an_unreadable_stored_connection_is_reported_not_hidden() {
    let h = harness("http://localhost:9/mcp").await;
    let vault = Vault::open(
        &h._dir.path().join("vault"),
        &KeySource::File(h._dir.path().join("key")),
    )
    .unwrap();
    // A record from an older or hand-edited vault.
    vault
        .put(
            mcpgram::vault::Namespace::User(7),
            "mcp.oauth.demo.credentials",
            mcpgram::secret::Secret::new("{\"not\": \"credentials\"}"),
        )
        .await
        .unwrap();
    let statuses = h.gateway.status(7).await;
    assert_eq!(statuses[0].standing, mcpgram::gateway::Standing::Unreadable);
    let text = mcpgram::telegram::wording::servers(&statuses, true);
    assert!(text.contains("stored data unreadable"), "{text}");
}

/// RFC 9207: a response naming another issuer than the one discovered is a
/// mix-up attempt; it connects nothing.
#[tokio::test]
async fn a_callback_naming_another_issuer_is_refused() {
    let demo = TsDemoServer::start().await;
    let h = harness(&demo.mcp_url()).await;
    let server = h.gateway.find_server("demo").unwrap();
    let flow = h
        .gateway
        .start_connect(ALICE, "Alice", &server)
        .await
        .unwrap();
    let approved = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(flow.link.url().expose())
        .send()
        .await
        .unwrap();
    let callback = approved.headers()["location"].to_str().unwrap().to_owned();
    let forged = format!("{callback}&iss=https%3A%2F%2Fevil.example");
    let visit = browser::open(&forged).await;
    assert_eq!(visit.status, 400, "{}", visit.body);
    assert!(
        visit.body.contains("different authorization server"),
        "{}",
        visit.body
    );
    assert!(!is_connected(&h).await);
}
