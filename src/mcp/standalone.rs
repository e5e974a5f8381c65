//! Knowing when a 2025 session's standalone stream is open.
//!
//! After the handshake, rmcp opens the session's GET stream (where the
//! server sends requests and notifications not tied to a request of ours)
//! in a task of its own, while the first request goes out at once. A server
//! that sends something on that stream before it exists drops it: the
//! TypeScript SDK's servers do exactly that with an `elicitation/create`
//! sent from a tool, and the tool then hangs. So a session is handed out
//! only once its stream has been answered (opened or refused), or after
//! [`STREAM_WAIT`] at most.
//!
//! [`Watched`] wraps the HTTP client under the transport and reports two
//! facts: the server issued a session id (only then is a GET stream
//! opened), and the first GET was answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;
use tokio::sync::watch;

/// How long a new session waits for its stream: one round trip on a
/// working server; a server that leaves the GET unanswered costs this once
/// per session.
pub const STREAM_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Watched<C> {
    inner: C,
    state: Arc<watch::Sender<State>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    session_issued: bool,
    stream_answered: bool,
}

impl<C> Watched<C> {
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            state: Arc::new(watch::Sender::new(State::default())),
        }
    }

    /// Returns when the session's stream was answered, at once when the
    /// server issued no session (no stream is opened then), or after
    /// [`STREAM_WAIT`].
    pub async fn stream_ready(&self) {
        let mut state = self.state.subscribe();
        if !state.borrow().session_issued {
            return;
        }
        let _ =
            tokio::time::timeout(STREAM_WAIT, state.wait_for(|state| state.stream_answered)).await;
    }

    fn saw(&self, response: &StreamableHttpPostResponse) {
        let issued = match response {
            StreamableHttpPostResponse::Json(_, session)
            | StreamableHttpPostResponse::Sse(_, session) => session.is_some(),
            _ => false,
        };
        if issued {
            self.state.send_if_modified(|state| {
                let changed = !state.session_issued;
                state.session_issued = true;
                changed
            });
        }
    }

    fn answered(&self) {
        self.state.send_if_modified(|state| {
            let changed = !state.stream_answered;
            state.stream_answered = true;
            changed
        });
    }
}

type PostResult<E> = Result<StreamableHttpPostResponse, StreamableHttpError<E>>;
type StreamResult<E> = Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<E>>;

impl<C: StreamableHttpClient + Sync> StreamableHttpClient for Watched<C> {
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> PostResult<C::Error> {
        let response = self
            .inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await;
        if let Ok(response) = &response {
            self.saw(response);
        }
        response
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> PostResult<C::Error> {
        let response = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        if let Ok(response) = &response {
            self.saw(response);
        }
        response
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> PostResult<C::Error> {
        let response = self
            .inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await;
        if let Ok(response) = &response {
            self.saw(response);
        }
        response
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<C::Error>> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> StreamResult<C::Error> {
        let stream = self
            .inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await;
        self.answered();
        stream
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> StreamResult<C::Error> {
        let stream = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.answered();
        stream
    }
}
