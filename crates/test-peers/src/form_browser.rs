//! A scripted browser for sign-ins at oidc-provider through the bot: it
//! follows redirects by hand, keeps cookies per origin (oidc-provider ties
//! its login and consent steps to cookies, the bot's start page binds the
//! flow with one), names the page's origin on every form it posts, and
//! fills the server's own forms as a user would. Cookie paths and expiry
//! are left out: a later cookie of the same name replaces the earlier,
//! which is what these pages need. Many users can share one HTTP client;
//! the cookies are each browser's own.

use std::collections::HashMap;
use std::time::Instant;

use reqwest::header::{COOKIE, SET_COOKIE};
use url::Url;

/// A page at the end of its redirects.
pub struct Page {
    pub url: Url,
    pub status: u16,
    pub body: String,
}

pub struct FormBrowser {
    http: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
    /// When the bot's callback was last requested.
    pub callback_at: Option<Instant>,
}

impl FormBrowser {
    /// `http` must not follow redirects (`Policy::none()`).
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            jar: HashMap::new(),
            callback_at: None,
        }
    }

    /// Sends `form` (a POST) or a GET to `url`, then follows redirects
    /// with GETs to the page at the end. `Err` names what failed.
    pub async fn visit(
        &mut self,
        mut url: Url,
        mut form: Option<Vec<(&str, String)>>,
    ) -> Result<Page, String> {
        for _ in 0..10 {
            if url.path() == "/oauth/callback" {
                self.callback_at = Some(Instant::now());
            }
            let origin = url.origin().ascii_serialization();
            let mut request = match form.take() {
                // These forms are all posted to their own page's origin.
                Some(form) => self
                    .http
                    .post(url.clone())
                    .header("origin", &origin)
                    .form(&form),
                None => self.http.get(url.clone()),
            };
            if let Some(cookies) = self.jar.get(&origin).filter(|c| !c.is_empty()) {
                let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
                request = request.header(COOKIE, header.join("; "));
            }
            let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
            let cookies = self.jar.entry(origin).or_default();
            for set in response.headers().get_all(SET_COOKIE) {
                let pair = set.to_str().unwrap_or("").split(';').next().unwrap_or("");
                if let Some((name, value)) = pair.split_once('=') {
                    if value.is_empty() {
                        cookies.remove(name.trim());
                    } else {
                        cookies.insert(name.trim().to_owned(), value.to_owned());
                    }
                }
            }
            let status = response.status();
            if status.is_redirection() {
                url = crate::browser::redirect_target(&url, &response)?;
                continue;
            }
            let body = response.text().await.map_err(|e| format!("{url}: {e}"))?;
            return Ok(Page {
                url,
                status: status.as_u16(),
                body,
            });
        }
        Err(format!("more than ten redirects, at {url}"))
    }

    /// Opens a connect link, continues on the bot's start page (hosted
    /// mode), signs in as `login` (any password) and consents; the page
    /// the bot's callback answered with.
    pub async fn sign_in(&mut self, link: &str, login: &str) -> Result<Page, String> {
        let link = Url::parse(link).map_err(|e| e.to_string())?;
        let mut page = self.visit(link, None).await?;
        for _ in 0..4 {
            let form = if page.url.path().starts_with("/oauth/start/") && page.status == 200 {
                // The bot's start page: Continue.
                let target = page.url.clone();
                page = self.visit(target, Some(Vec::new())).await?;
                continue;
            } else if page.body.contains(r#"name="prompt" value="login""#) {
                vec![
                    ("prompt", "login".to_owned()),
                    ("login", login.to_owned()),
                    ("password", "anything".to_owned()),
                ]
            } else if page.body.contains(r#"name="prompt" value="consent""#) {
                vec![("prompt", "consent".to_owned())]
            } else {
                return Ok(page);
            };
            let action = form_action(&page.body)
                .ok_or_else(|| format!("a form without an action at {}", page.url))?;
            let target = page.url.join(&action).map_err(|e| e.to_string())?;
            page = self.visit(target, Some(form)).await?;
        }
        Ok(page)
    }
}

/// The first `<form action="…">` of `html`, unescaped as far as these
/// pages escape it.
fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let rest = &html[start..];
    let value = rest.split("action=\"").nth(1)?.split('"').next()?;
    Some(value.replace("&amp;", "&"))
}
