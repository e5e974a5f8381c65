//! A load balancer in front of several bot replicas: each request goes to
//! the next replica in turn (per request, not per connection, so a
//! client's keep-alive connection does not pin it), as a round-robin
//! proxy would. Like a real load balancer, it skips a replica that
//! refuses the connection (it is down) and tries the next one, so the
//! service goes on while one replica is dead; a replica that took the
//! request and then failed is not tried again (the request may have had
//! its effect). A test can send the next request for a path to a chosen
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
    /// prefix (and whose body holds the text, if any) goes to that
    /// replica.
    pinned: Vec<Pin>,
    /// (path, replica) of every request, in order: the replica that
    /// answered, or the last one tried.
    served: Vec<(String, usize)>,
}

struct Pin {
    prefix: String,
    body_holds: Option<String>,
    replica: usize,
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
        self.routing.lock().unwrap().pinned.push(Pin {
            prefix: prefix.to_owned(),
            body_holds: None,
            replica: index,
        });
    }

    /// The next request whose path starts with `prefix` and whose body
    /// holds `text` goes to replica `index` (a given update, say).
    pub fn pin_next_holding(&self, prefix: &str, text: &str, index: usize) {
        self.routing.lock().unwrap().pinned.push(Pin {
            prefix: prefix.to_owned(),
            body_holds: Some(text.to_owned()),
            replica: index,
        });
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
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let first = {
        let mut routing = front.routing.lock().unwrap();
        let text = String::from_utf8_lossy(&body);
        let pinned = routing.pinned.iter().position(|pin| {
            path.starts_with(pin.prefix.as_str())
                && pin
                    .body_holds
                    .as_deref()
                    .is_none_or(|needle| text.contains(needle))
        });
        match pinned {
            Some(at) => routing.pinned.remove(at).replica,
            None => {
                let index = routing.next % front.backends.len();
                routing.next += 1;
                index
            }
        }
    };
    let mut headers: HeaderMap = parts.headers;
    headers.remove(axum::http::header::HOST);
    let count = front.backends.len();
    let mut target = first;
    let mut sent = None;
    for attempt in 0..count {
        target = (first + attempt) % count;
        let backend = front.backends[target];
        let answer = front
            .http
            .request(
                parts.method.clone(),
                format!("http://{backend}{path_and_query}"),
            )
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        match answer {
            // Refused: nothing reached the replica; the next one may serve.
            Err(error) if error.is_connect() => continue,
            other => {
                sent = Some(other);
                break;
            }
        }
    }
    front
        .routing
        .lock()
        .unwrap()
        .served
        .push((path.clone(), target));
    match sent {
        Some(Ok(answer)) => {
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
        Some(Err(_)) | None => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from("no replica answered"))
            .expect("a response"),
    }
}
