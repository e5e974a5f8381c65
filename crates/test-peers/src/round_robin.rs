//! A load balancer in front of several bot replicas: each request goes to
//! the next replica in turn (per request, not per connection, so a
//! client's keep-alive connection does not pin it), as a round-robin
//! proxy would. A test can send the next request for a path to a chosen
//! replica, and sees which replica served each request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

#[derive(Default)]
struct Routing {
    next: usize,
    /// One-shot choices: the next request whose path starts with the
    /// prefix goes to that replica.
    pinned: Vec<(String, usize)>,
    /// (path, replica) of every request, in order.
    served: Vec<(String, usize)>,
}

#[derive(Clone)]
struct Front {
    backends: Arc<Vec<SocketAddr>>,
    routing: Arc<Mutex<Routing>>,
    http: reqwest::Client,
}

pub struct RoundRobin {
    addr: SocketAddr,
    routing: Arc<Mutex<Routing>>,
    server: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    /// Listens on `listener` (bound by the caller, so the replicas' config
    /// can name its port first) and forwards to `backends`.
    pub fn start(listener: std::net::TcpListener, backends: Vec<SocketAddr>) -> Self {
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        let addr = listener.local_addr().expect("its address");
        let routing = Arc::new(Mutex::new(Routing::default()));
        let front = Front {
            backends: Arc::new(backends),
            routing: routing.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .expect("the front's client"),
        };
        let app = axum::Router::new().fallback(forward).with_state(front);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            routing,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next request whose path starts with `prefix` goes to replica
    /// `index`.
    pub fn pin_next(&self, prefix: &str, index: usize) {
        self.routing
            .lock()
            .unwrap()
            .pinned
            .push((prefix.to_owned(), index));
    }

    /// Which replica served each request so far: (path, replica).
    pub fn served(&self) -> Vec<(String, usize)> {
        self.routing.lock().unwrap().served.clone()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(State(front): State<Front>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let target = {
        let mut routing = front.routing.lock().unwrap();
        let pinned = routing
            .pinned
            .iter()
            .position(|(prefix, _)| path.starts_with(prefix.as_str()));
        let index = match pinned {
            Some(at) => routing.pinned.remove(at).1,
            None => {
                let index = routing.next % front.backends.len();
                routing.next += 1;
                index
            }
        };
        routing.served.push((path.clone(), index));
        index
    };
    let backend = front.backends[target];
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut headers: HeaderMap = parts.headers;
    headers.remove(axum::http::header::HOST);
    let sent = front
        .http
        .request(parts.method, format!("http://{backend}{path_and_query}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                // Hop-by-hop: the body is passed on whole.
                if name != axum::http::header::TRANSFER_ENCODING
                    && name != axum::http::header::CONNECTION
                {
                    response = response.header(name, value);
                }
            }
            let body = answer.bytes().await.unwrap_or_default();
            response.body(Body::from(body)).expect("a response")
        }
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from("the replica did not answer"))
            .expect("a response"),
    }
}
