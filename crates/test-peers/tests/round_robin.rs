//! The round-robin front goes on serving when a replica is down, as a
//! real load balancer does.

use std::net::SocketAddr;

use test_peers::round_robin::RoundRobin;

/// A backend answering its own name to every request.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move { name });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// An address nothing listens on: connections to it are refused.
fn dead() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn front(backends: Vec<SocketAddr>) -> RoundRobin {
    RoundRobin::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        backends,
    )
}

async fn get(front: &RoundRobin, path: &str) -> (u16, String) {
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}{path}", front.url()))
        .body("an update")
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test]
async fn requests_alternate_between_live_replicas() {
    let front = front(vec![backend("a").await, backend("b").await]);
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get(&front, "/x").await.1);
    }
    assert_eq!(answers, ["a", "b", "a", "b"]);
}

#[tokio::test]
async fn a_replica_that_refuses_connections_is_skipped() {
    let dead = dead();
    let front = front(vec![dead, backend("live").await]);
    for _ in 0..4 {
        assert_eq!(
            get(&front, "/telegram/webhook").await,
            (200, "live".to_owned())
        );
    }
    // Pinned to the dead one, it still lands on the live one.
    front.pin_next("/oauth/callback", 0);
    assert_eq!(
        get(&front, "/oauth/callback").await,
        (200, "live".to_owned())
    );
    assert!(
        front.served().iter().all(|(_, replica)| *replica == 1),
        "{:?}",
        front.served()
    );
}

#[tokio::test]
async fn with_every_replica_down_the_answer_is_bad_gateway() {
    let front = front(vec![dead(), dead()]);
    assert_eq!(get(&front, "/healthz").await.0, 502);
}
