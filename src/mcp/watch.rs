//! What a running tool call lets its caller see and answer: the server's
//! progress notifications and its questions (elicitation, in both protocol
//! generations: a 2025 `elicitation/create` request and a 2026-07-28
//! `input_required` round both reach the client handler).
//!
//! Each session has its own [`Hooks`]; a call attaches its [`Watch`] there
//! for as long as it runs. A session serves one user, and that user one
//! command at a time, so whatever the session's server sends belongs to
//! the attached call. (rmcp puts a progress token of its own on every
//! request, one per MRTR round, so the token itself tells nothing more.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rmcp::model::{ElicitRequestParams, ElicitResult};

/// A progress notification, as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    /// Foreign text.
    pub message: Option<String>,
}

/// The caller's side of a running call (a chat, say).
pub trait CallObserver: Send + Sync {
    fn progress(&self, update: Progress);

    /// The server asks the user something; the answer may take minutes.
    fn elicit(&self, request: ElicitRequestParams) -> BoxFuture<'static, ElicitResult>;
}

/// One call's observer, and how long it has waited on its user (which
/// the call's time limit does not count).
pub struct Watch {
    observer: Arc<dyn CallObserver>,
    asking: AtomicUsize,
    answered: Mutex<Option<Instant>>,
}

impl Watch {
    pub fn new(observer: Arc<dyn CallObserver>) -> Arc<Self> {
        Arc::new(Self {
            observer,
            asking: AtomicUsize::new(0),
            answered: Mutex::new(None),
        })
    }

    /// When a call whose time limit ran out at `now` may go on until: the
    /// server has `limit` after the user last answered, and the clock
    /// stops while a question waits.
    pub fn extended(&self, now: Instant, limit: Duration) -> Option<Instant> {
        if self.asking.load(Ordering::SeqCst) > 0 {
            return Some(now + limit);
        }
        let answered = *self.answered.lock().unwrap_or_else(|p| p.into_inner());
        answered.map(|at| at + limit).filter(|until| *until > now)
    }

    async fn elicit(&self, request: ElicitRequestParams) -> ElicitResult {
        self.asking.fetch_add(1, Ordering::SeqCst);
        let answer = self.observer.elicit(request).await;
        *self.answered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.asking.fetch_sub(1, Ordering::SeqCst);
        answer
    }
}

/// A session's slot for the call running on it.
#[derive(Default)]
pub struct Hooks {
    current: Mutex<Option<Arc<Watch>>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

impl Hooks {
    /// Attaches `watch` until the guard is dropped.
    pub fn attach(self: &Arc<Self>, watch: Arc<Watch>) -> Attached {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(watch.clone());
        Attached {
            hooks: self.clone(),
            watch,
        }
    }

    fn current(&self) -> Option<Arc<Watch>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Passes a progress notification on to the running call.
    pub fn progress(&self, update: Progress) {
        match self.current() {
            Some(watch) => watch.observer.progress(update),
            None => tracing::debug!("a progress notification for no running call; dropped"),
        }
    }

    /// Asks the running call's user; `None` when no call is watched.
    pub async fn elicit(&self, request: ElicitRequestParams) -> Option<ElicitResult> {
        let watch = self.current()?;
        Some(watch.elicit(request).await)
    }
}

/// Detaches its watch when dropped (unless another took its place).
pub struct Attached {
    hooks: Arc<Hooks>,
    watch: Arc<Watch>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut current = self.hooks.current.lock().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .is_some_and(|w| Arc::ptr_eq(w, &self.watch))
        {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Mutex<Vec<Progress>>);

    impl CallObserver for Recorder {
        fn progress(&self, update: Progress) {
            self.0.lock().unwrap().push(update);
        }
        fn elicit(&self, _: ElicitRequestParams) -> BoxFuture<'static, ElicitResult> {
            Box::pin(async { ElicitResult::new(rmcp::model::ElicitationAction::Decline) })
        }
    }

    fn update(progress: f64) -> Progress {
        Progress {
            progress,
            total: Some(3.0),
            message: None,
        }
    }

    #[test]
    fn progress_reaches_only_a_call_that_is_attached() {
        let hooks = Arc::new(Hooks::default());
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        hooks.progress(update(1.0));
        {
            let _attached = hooks.attach(Watch::new(recorder.clone()));
            hooks.progress(update(2.0));
        }
        hooks.progress(update(3.0));
        assert_eq!(*recorder.0.lock().unwrap(), vec![update(2.0)]);
    }

    #[test]
    fn the_clock_stops_while_the_user_is_asked() {
        let watch = Watch::new(Arc::new(Recorder(Mutex::new(Vec::new()))));
        let now = Instant::now();
        let limit = Duration::from_secs(30);
        assert_eq!(watch.extended(now, limit), None);
        watch.asking.fetch_add(1, Ordering::SeqCst);
        assert_eq!(watch.extended(now, limit), Some(now + limit));
        watch.asking.fetch_sub(1, Ordering::SeqCst);
        *watch.answered.lock().unwrap() = Some(now);
        assert_eq!(
            watch.extended(now + Duration::from_secs(10), limit),
            Some(now + limit)
        );
        assert_eq!(watch.extended(now + limit, limit), None);
    }
}
