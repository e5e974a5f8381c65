//! The "browser" of the tests: an HTTP client that opens a link and follows
//! redirects by hand, so each hop (the bot's callback URL with its code)
//! can be inspected.

use std::time::Duration;

use reqwest::header::LOCATION;
use url::Url;

pub struct Visit {
    /// Every URL requested, in order.
    pub hops: Vec<Url>,
    pub status: u16,
    pub body: String,
}

impl Visit {
    /// The last hop's query parameter `name`.
    pub fn last_param(&self, name: &str) -> Option<String> {
        self.hops
            .last()?
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// Where a redirect from `current` leads: its `Location`, resolved
/// against `current`.
pub(crate) fn redirect_target(current: &Url, response: &reqwest::Response) -> Result<Url, String> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| format!("{current}: a redirect without Location"))?;
    current
        .join(location)
        .map_err(|e| format!("{current}: {e}"))
}

/// GETs `url` and follows up to ten redirects.
pub async fn open(url: &str) -> Visit {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut hops = vec![Url::parse(url).expect("button URL parses")];
    loop {
        let current = hops.last().unwrap().clone();
        let response = client
            .get(current.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("browser GET {current} failed: {e}"));
        let status = response.status();
        if status.is_redirection() {
            let next = redirect_target(&current, &response).expect("a usable Location");
            assert!(hops.len() < 10, "redirect loop: {hops:?}");
            hops.push(next);
            continue;
        }
        let body = response.text().await.unwrap_or_default();
        return Visit {
            hops,
            status: status.as_u16(),
            body,
        };
    }
}
