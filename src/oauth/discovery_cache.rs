//! Discovery's answers, kept a few minutes per server.
//!
//! rmcp keeps what discovery learns private to one `AuthorizationManager`,
//! and a manager is built for every `/connect`, every callback and every
//! session opened: each time two to five GETs of metadata documents that
//! change perhaps once a year, after an unauthenticated request to the MCP
//! server for its challenge. With a thousand users connecting that was
//! most of the bot's work per flow. Here the answers are kept, so rmcp
//! still runs its whole discovery (and keeps its rules and private state)
//! without the network.
//!
//! Kept: GETs sent without credentials that answered 200, or 404/410 (the
//! well-known locations a server does not serve), for
//! [`DISCOVERY_TTL`] or less when `Cache-Control` says so (`no-store` and
//! `no-cache` keep nothing). A code exchange the server refuses empties a
//! server's cache ([`DiscoveryCache::forget`]): its metadata may have
//! moved.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};

/// How long an answer is kept at most.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Answers kept per server at most: a few well-known locations per
/// document, and the challenge.
const MAX_ENTRIES: usize = 32;

/// A response as rmcp's discovery reads it.
#[derive(Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

struct Entry<T> {
    until: Instant,
    value: T,
}

/// One server's discovery answers, by URL, and its challenge.
#[derive(Default)]
pub struct DiscoveryCache {
    answers: Mutex<HashMap<String, Entry<Answer>>>,
    challenge: Mutex<Option<Entry<(String, String)>>>,
}

impl DiscoveryCache {
    /// The answer to a GET of `url`, if one is kept and fresh.
    pub fn answer(&self, url: &str) -> Option<Answer> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .get(url)
            .filter(|entry| entry.until > Instant::now())
            .map(|entry| entry.value.clone())
    }

    /// Keeps the answer to a GET of `url`, when its status and
    /// `Cache-Control` allow.
    pub fn keep(&self, url: &str, answer: &Answer) {
        if !matches!(answer.status.as_u16(), 200 | 404 | 410) {
            return;
        }
        let Some(ttl) = lifetime(answer.headers.get(CACHE_CONTROL)) else {
            return;
        };
        let now = Instant::now();
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.len() >= MAX_ENTRIES && !answers.contains_key(url) {
            answers.retain(|_, entry| entry.until > now);
            if answers.len() >= MAX_ENTRIES {
                answers.clear();
            }
        }
        answers.insert(
            url.to_owned(),
            Entry {
                until: now + ttl,
                value: answer.clone(),
            },
        );
    }

    /// The MCP server's challenge to an unauthenticated request at `url`,
    /// if one is kept and fresh.
    pub fn challenge(&self, url: &str) -> Option<String> {
        let kept = self.challenge.lock().unwrap_or_else(|p| p.into_inner());
        kept.as_ref()
            .filter(|entry| entry.until > Instant::now() && entry.value.0 == url)
            .map(|entry| entry.value.1.clone())
    }

    /// Keeps the server's challenge (only a challenge: a server that
    /// answered otherwise, or not at all, is asked again next time).
    pub fn keep_challenge(&self, url: &str, challenge: &str) {
        *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = Some(Entry {
            until: Instant::now() + DISCOVERY_TTL,
            value: (url.to_owned(), challenge.to_owned()),
        });
    }

    /// Drops everything kept: the server's metadata may have changed.
    pub fn forget(&self) {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// How long `Cache-Control` lets an answer be kept, capped at
/// [`DISCOVERY_TTL`]; `None` to keep nothing.
fn lifetime(cache_control: Option<&HeaderValue>) -> Option<Duration> {
    let Some(value) = cache_control.and_then(|v| v.to_str().ok()) else {
        return Some(DISCOVERY_TTL);
    };
    let mut ttl = DISCOVERY_TTL;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        match directive.split_once('=') {
            _ if directive == "no-store" || directive == "no-cache" => return None,
            Some(("max-age", seconds)) => {
                let seconds = seconds.trim_matches('"').parse::<u64>().ok()?;
                ttl = ttl.min(Duration::from_secs(seconds));
            }
            _ => {}
        }
    }
    (!ttl.is_zero()).then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, cache_control: Option<&'static str>) -> Answer {
        let mut headers = HeaderMap::new();
        if let Some(value) = cache_control {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn cache_control_sets_the_lifetime() {
        let header = |v: &'static str| Some(HeaderValue::from_static(v));
        assert_eq!(lifetime(None), Some(DISCOVERY_TTL));
        assert_eq!(
            lifetime(header("public, max-age=60").as_ref()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            lifetime(header("max-age=86400").as_ref()),
            Some(DISCOVERY_TTL)
        );
        assert_eq!(lifetime(header("max-age=0").as_ref()), None);
        assert_eq!(lifetime(header("No-Store").as_ref()), None);
        assert_eq!(lifetime(header("private, no-cache").as_ref()), None);
        assert_eq!(lifetime(header("max-age=soon").as_ref()), None);
    }

    #[test]
    fn only_documents_and_their_absence_are_kept() {
        let cache = DiscoveryCache::default();
        cache.keep("http://as/a", &answer(200, None));
        cache.keep("http://as/b", &answer(404, None));
        cache.keep("http://as/c", &answer(503, None));
        cache.keep("http://as/d", &answer(200, Some("no-store")));
        cache.keep("http://as/e", &answer(429, None));
        assert_eq!(cache.answer("http://as/a").unwrap().status, 200);
        assert_eq!(cache.answer("http://as/b").unwrap().status, 404);
        assert!(cache.answer("http://as/c").is_none());
        assert!(cache.answer("http://as/d").is_none());
        assert!(cache.answer("http://as/e").is_none());
        cache.forget();
        assert!(cache.answer("http://as/a").is_none());
    }

    #[test]
    fn the_challenge_is_kept_for_its_url_only() {
        let cache = DiscoveryCache::default();
        cache.keep_challenge("http://mcp/a", "Bearer realm=\"a\"");
        assert_eq!(
            cache.challenge("http://mcp/a").as_deref(),
            Some("Bearer realm=\"a\"")
        );
        assert!(cache.challenge("http://mcp/b").is_none());
        cache.forget();
        assert!(cache.challenge("http://mcp/a").is_none());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = DiscoveryCache::default();
        for i in 0..(MAX_ENTRIES * 3) {
            cache.keep(&format!("http://as/{i}"), &answer(200, None));
        }
        let kept = cache.answers.lock().unwrap().len();
        assert!(kept <= MAX_ENTRIES, "{kept}");
        assert!(
            cache
                .answer(&format!("http://as/{}", MAX_ENTRIES * 3 - 1))
                .is_some()
        );
    }
}
