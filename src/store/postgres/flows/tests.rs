//! The embedded flow table's tests, against PostgreSQL, and what only
//! several replicas can break: single use under concurrency.

use std::time::Duration;

use rmcp::transport::auth::StoredAuthorizationState;

use super::super::testing;
use super::*;
use crate::secret::Secret;
use crate::store::{ClientRecord, FlowOwner, FlowState};

const ALICE: FlowOwner = FlowOwner {
    user_id: 1,
    chat_id: 1,
};
const BOB: FlowOwner = FlowOwner {
    user_id: 2,
    chat_id: 2,
};
const TTL: Duration = Duration::from_secs(600);
const VERIFIER: &str = "pkceVERIFIERinTHEclear0123456789abcdefghijklmn";

fn flow(owner: FlowOwner, server_id: &str, ttl: Duration) -> PendingFlow {
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

async fn table() -> (testing::TestDb, PgFlows) {
    let db = testing::migrated().await;
    let flows = PgFlows::new(db.database.clone(), db.vault.clone());
    (db, flows)
}

async fn put(table: &PgFlows, flow: PendingFlow) -> PendingFlow {
    table.insert(flow.clone(), 3).await.unwrap();
    flow
}

#[tokio::test]
async fn a_state_is_single_use() {
    let (_db, table) = table().await;
    let f = put(&table, flow(ALICE, "demo", TTL)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_taking_one_state_at_once_complete_it_once() {
    let (db, first) = table().await;
    let second = Arc::new(PgFlows::new(db.replica().await, db.vault.clone()));
    let first = Arc::new(first);
    for round in 0..10 {
        let owner = FlowOwner {
            user_id: 100 + round,
            chat_id: 1,
        };
        let f = put(&first, flow(owner, "demo", TTL)).await;
        let takes = [first.clone(), second.clone(), first.clone(), second.clone()].map(|table| {
            let state = f.state.clone();
            tokio::spawn(async move { table.take(state.as_str()).await })
        });
        let mut won = 0;
        for take in takes {
            match take.await.unwrap() {
                Ok(flow) => {
                    assert_eq!(flow.owner, owner);
                    won += 1;
                }
                Err(TakeError::Unknown) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(won, 1, "exactly one take wins");
    }
}

#[tokio::test]
async fn an_expired_state_is_rejected_and_names_its_owner() {
    let (_db, table) = table().await;
    let f = put(&table, flow(ALICE, "demo", Duration::ZERO)).await;
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

#[tokio::test]
async fn unknown_and_near_miss_states_are_rejected() {
    let (_db, table) = table().await;
    let f = put(&table, flow(ALICE, "demo", TTL)).await;
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

#[tokio::test]
async fn a_newer_link_replaces_the_older_one_for_the_same_server_only() {
    let (_db, table) = table().await;
    let old = put(&table, flow(ALICE, "demo", TTL)).await;
    let other_server = put(&table, flow(ALICE, "other", TTL)).await;
    let bobs = put(&table, flow(BOB, "demo", TTL)).await;
    let new = put(&table, flow(ALICE, "demo", TTL)).await;
    assert!(matches!(
        table.take(old.state.as_str()).await,
        Err(TakeError::Unknown)
    ));
    for f in [new, other_server, bobs] {
        assert!(table.take(f.state.as_str()).await.is_ok());
    }
}

#[tokio::test]
async fn a_user_may_have_only_so_many_links_waiting() {
    let (_db, table) = table().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_of_one_user_keep_the_limit_and_one_link_per_server() {
    let (db, first) = table().await;
    let second = Arc::new(PgFlows::new(db.replica().await, db.vault.clone()));
    let first = Arc::new(first);
    let inserts = (0..8).map(|i| {
        let table = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        // Four servers, two links each.
        let flow = flow(ALICE, &format!("s{}", i / 2), TTL);
        tokio::spawn(async move { table.insert(flow, 3).await })
    });
    let mut refused = 0;
    for insert in inserts.collect::<Vec<_>>() {
        match insert.await.unwrap() {
            Ok(()) => {}
            Err(InsertError::TooMany(3)) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused >= 1, "a fourth server cannot get a link");
    let servers: Vec<(String,)> =
        sqlx::query_as("SELECT server_id FROM pending_flows ORDER BY server_id")
            .fetch_all(db.database.pool())
            .await
            .unwrap();
    let mut distinct = servers.clone();
    distinct.dedup();
    assert_eq!(servers, distinct, "one live link per server");
    assert!(servers.len() <= 3, "{servers:?}");
}

#[tokio::test]
async fn the_first_browser_binds_a_flow_and_a_second_is_refused() {
    let (_db, table) = table().await;
    let f = put(&table, flow(ALICE, "demo", TTL)).await;
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

    let late = put(&table, flow(BOB, "demo", Duration::ZERO)).await;
    assert!(matches!(
        table.bind(late.start_id.as_str(), "h3").await,
        Err(BindError::Take(TakeError::Expired { owner: BOB, .. }))
    ));
}

#[tokio::test]
async fn the_message_and_a_restored_flow_come_back() {
    let (_db, table) = table().await;
    let f = put(&table, flow(ALICE, "demo", TTL)).await;
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

#[tokio::test]
async fn sweeping_returns_the_expired_flows_once() {
    let (_db, table) = table().await;
    put(&table, flow(ALICE, "demo", Duration::ZERO)).await;
    let live = put(&table, flow(BOB, "demo", TTL)).await;
    assert_eq!(table.count().await.unwrap(), 2);
    let swept = table.sweep().await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].owner, ALICE);
    assert!(table.sweep().await.unwrap().is_empty());
    assert_eq!(table.count().await.unwrap(), 1);
    assert!(table.take(live.state.as_str()).await.is_ok());
}

#[tokio::test]
async fn the_database_sees_no_state_verifier_or_link() {
    let (db, table) = table().await;
    let f = put(&table, flow(ALICE, "demo", TTL)).await;
    table
        .bind(f.start_id.as_str(), "binding-hash")
        .await
        .unwrap();
    let cells = db
        .raw(
            "SELECT convert_to(t::text, 'UTF8') FROM pending_flows t
             UNION ALL SELECT flow FROM pending_flows",
        )
        .await;
    assert_eq!(cells.len(), 2);
    for cell in cells {
        for needle in [
            f.state.as_str().as_bytes(),
            f.start_id.as_str().as_bytes(),
            VERIFIER.as_bytes(),
            b"http://as/authorize",
        ] {
            assert!(
                !cell.windows(needle.len()).any(|w| w == needle),
                "a flow's secret in clear in the database"
            );
        }
    }
}
