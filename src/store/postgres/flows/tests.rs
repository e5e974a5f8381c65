//! Every flow store's contract (`store::flow_contract`), against
//! PostgreSQL, and what only several replicas can break: single use under
//! concurrency.

use super::super::testing;
use super::*;
use crate::store::FlowOwner;
use crate::store::flow_contract::{ALICE, TTL, VERIFIER, flow, put};

async fn table() -> (testing::TestDb, PgFlows) {
    let db = testing::migrated().await;
    let flows = PgFlows::new(db.database.clone(), db.vault.clone());
    (db, flows)
}

crate::flow_store_contract!(table());

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
        let f = put(&*first, flow(owner, "demo", TTL)).await;
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
