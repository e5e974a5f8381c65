//! What every [`FlowStore`] must do, written once and run against each
//! implementation (the embedded table here, PostgreSQL in
//! `postgres::flows`), so the two cannot drift apart.

use std::time::Duration;

use rmcp::transport::auth::StoredAuthorizationState;

use super::{
    BindError, ChatMessage, ClientRecord, FlowOwner, FlowState, FlowStore, InsertError,
    PendingFlow, TakeError,
};
use crate::secret::Secret;

pub const ALICE: FlowOwner = FlowOwner {
    user_id: 1,
    chat_id: 1,
};
pub const BOB: FlowOwner = FlowOwner {
    user_id: 2,
    chat_id: 2,
};
pub const TTL: Duration = Duration::from_secs(600);
pub const VERIFIER: &str = "pkceVERIFIERinTHEclear0123456789abcdefghijklmn";

pub fn flow(owner: FlowOwner, server_id: &str, ttl: Duration) -> PendingFlow {
    let verifier = oauth2::PkceCodeVerifier::new(VERIFIER.into());
    let csrf = oauth2::CsrfToken::new("csrf".into());
    PendingFlow {
        state: FlowState::random(),
        start_id: FlowState::random(),
        owner,
        requester: "Alice".into(),
        server_id: server_id.into(),
        expires_at: PendingFlow::expires_after(ttl),
        authorization: StoredAuthorizationState::new(&verifier, &csrf),
        client: ClientRecord {
            client_id: "c".into(),
            client_secret: None,
            redirect_uri: "http://127.0.0.1/cb".into(),
            issuer: None,
            scopes: vec![],
            assumed_endpoints: false,
            challenge: None,
        },
        authorize_url: Secret::new("http://as/authorize?state=x"),
        binding: None,
        message: None,
        resume: None,
    }
}

pub async fn put(table: &dyn FlowStore, flow: PendingFlow) -> PendingFlow {
    table.insert(flow.clone(), 3).await.unwrap();
    flow
}

pub async fn a_state_is_single_use(table: &dyn FlowStore) {
    let f = put(table, flow(ALICE, "demo", TTL)).await;
    assert!(table.by_start_id(f.start_id.as_str()).await.is_ok());
    let taken = table.take(f.state.as_str()).await.unwrap();
    assert_eq!((taken.owner, taken.server_id.as_str()), (ALICE, "demo"));
    assert_eq!(
        taken.authorization.pkce_verifier, VERIFIER,
        "the PKCE verifier comes back whole"
    );
    assert!(matches!(
        table.take(f.state.as_str()).await,
        Err(TakeError::Unknown)
    ));
    assert!(matches!(
        table.by_start_id(f.start_id.as_str()).await,
        Err(TakeError::Unknown)
    ));
}

pub async fn an_expired_state_is_rejected_and_names_its_owner(table: &dyn FlowStore) {
    let f = put(table, flow(ALICE, "demo", Duration::ZERO)).await;
    assert!(matches!(
        table.by_start_id(f.start_id.as_str()).await,
        Err(TakeError::Expired { owner: ALICE, .. })
    ));
    assert!(matches!(
        table.take(f.state.as_str()).await,
        Err(TakeError::Expired { owner: ALICE, server_id }) if server_id == "demo"
    ));
    assert!(matches!(
        table.take(f.state.as_str()).await,
        Err(TakeError::Unknown)
    ));
}

pub async fn unknown_and_near_miss_states_are_rejected(table: &dyn FlowStore) {
    let f = put(table, flow(ALICE, "demo", TTL)).await;
    let mut near = f.state.as_str().to_owned();
    near.pop();
    assert!(matches!(table.take(&near).await, Err(TakeError::Unknown)));
    assert!(matches!(table.take("").await, Err(TakeError::Unknown)));
    // A start id is not a state.
    assert!(matches!(
        table.take(f.start_id.as_str()).await,
        Err(TakeError::Unknown)
    ));
    assert!(table.take(f.state.as_str()).await.is_ok());
}

pub async fn a_newer_link_replaces_the_older_one_for_the_same_server_only(table: &dyn FlowStore) {
    let old = put(table, flow(ALICE, "demo", TTL)).await;
    let other_server = put(table, flow(ALICE, "other", TTL)).await;
    let bobs = put(table, flow(BOB, "demo", TTL)).await;
    let new = put(table, flow(ALICE, "demo", TTL)).await;
    assert!(matches!(
        table.take(old.state.as_str()).await,
        Err(TakeError::Unknown)
    ));
    for f in [new, other_server, bobs] {
        assert!(table.take(f.state.as_str()).await.is_ok());
    }
}

pub async fn a_user_may_have_only_so_many_links_waiting(table: &dyn FlowStore) {
    for server in ["a", "b"] {
        table.insert(flow(ALICE, server, TTL), 2).await.unwrap();
    }
    assert!(matches!(
        table.insert(flow(ALICE, "c", TTL), 2).await,
        Err(InsertError::TooMany(2))
    ));
    // Replacing a link is not one more; other users are not counted, and
    // neither are expired links.
    table.insert(flow(ALICE, "a", TTL), 2).await.unwrap();
    table.insert(flow(BOB, "c", TTL), 2).await.unwrap();
    table
        .insert(flow(BOB, "d", Duration::ZERO), 2)
        .await
        .unwrap();
    table.insert(flow(BOB, "e", TTL), 2).await.unwrap();
}

pub async fn the_first_browser_binds_a_flow_and_a_second_is_refused(table: &dyn FlowStore) {
    let f = put(table, flow(ALICE, "demo", TTL)).await;
    let bound = table.bind(f.start_id.as_str(), "h1").await.unwrap();
    assert_eq!(bound.binding.as_deref(), Some("h1"));
    assert!(matches!(
        table.bind(f.start_id.as_str(), "h2").await,
        Err(BindError::AlreadyBound { owner: ALICE, .. })
    ));
    assert!(matches!(
        table.bind("no such start", "h2").await,
        Err(BindError::Take(TakeError::Unknown))
    ));
    let taken = table.take(f.state.as_str()).await.unwrap();
    assert_eq!(taken.binding.as_deref(), Some("h1"));

    let late = put(table, flow(BOB, "demo", Duration::ZERO)).await;
    assert!(matches!(
        table.bind(late.start_id.as_str(), "h3").await,
        Err(BindError::Take(TakeError::Expired { owner: BOB, .. }))
    ));
}

pub async fn the_message_and_a_restored_flow_come_back(table: &dyn FlowStore) {
    let f = put(table, flow(ALICE, "demo", TTL)).await;
    let message = ChatMessage {
        chat_id: 1,
        message_id: 9,
    };
    table
        .set_message(f.start_id.as_str(), message)
        .await
        .unwrap();
    let taken = table.take(f.state.as_str()).await.unwrap();
    assert_eq!(taken.message, Some(message));
    assert_eq!(table.count().await.unwrap(), 0);

    // The token endpoint was down: the flow goes back, as it was.
    table.restore(taken).await.unwrap();
    assert_eq!(table.count().await.unwrap(), 1);
    let again = table.take(f.state.as_str()).await.unwrap();
    assert_eq!(again.message, Some(message));
}

pub async fn sweeping_returns_the_expired_flows_once(table: &dyn FlowStore) {
    put(table, flow(ALICE, "demo", Duration::ZERO)).await;
    let live = put(table, flow(BOB, "demo", TTL)).await;
    assert_eq!(table.count().await.unwrap(), 2);
    let swept = table.sweep().await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].owner, ALICE);
    assert!(table.sweep().await.unwrap().is_empty());
    assert_eq!(table.count().await.unwrap(), 1);
    assert!(table.take(live.state.as_str()).await.is_ok());
}

/// Declares one `#[tokio::test]` per contract check, each on a fresh
/// store: `$make` is an async block answering (what must live as long as
/// the store, the store).
#[macro_export]
#[doc(hidden)]
macro_rules! flow_store_contract {
    ($make:expr) => {
        $crate::flow_store_contract!(@each $make;
            a_state_is_single_use,
            an_expired_state_is_rejected_and_names_its_owner,
            unknown_and_near_miss_states_are_rejected,
            a_newer_link_replaces_the_older_one_for_the_same_server_only,
            a_user_may_have_only_so_many_links_waiting,
            the_first_browser_binds_a_flow_and_a_second_is_refused,
            the_message_and_a_restored_flow_come_back,
            sweeping_returns_the_expired_flows_once,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_keep, table) = $make.await;
                $crate::store::flow_contract::$check(&table).await;
            }
        )*
    };
}
