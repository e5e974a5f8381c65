//! Telegram Login: the signed identity Telegram appends to a `login_url`
//! button's URL when a user taps it (core.telegram.org/widgets/login).
//!
//! The data-check string is every received field but `hash`, as
//! `key=value`, sorted by key and joined by newlines; the signature is its
//! HMAC-SHA-256 keyed with the SHA-256 of the bot token. Only Telegram and
//! the bot know that key, so a valid signature says who clicked.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::store::records::now_secs;

/// How old a signature may be: a tap on a button, then a page load.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("no Telegram login data")]
    Missing,
    #[error("the Telegram login signature does not verify")]
    BadSignature,
    #[error("the Telegram login is too old")]
    Stale,
}

/// The user a valid signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramLogin {
    pub user_id: u64,
    pub username: Option<String>,
    pub first_name: Option<String>,
}

/// Checks the login fields of a query (`hash` included) against the bot
/// token; unrelated fields are ignored only if Telegram did not sign them,
/// which it never does, so every field but `hash` is part of the check.
pub fn verify(
    fields: &BTreeMap<String, String>,
    bot_token: &str,
) -> Result<TelegramLogin, LoginError> {
    let hash = fields.get("hash").ok_or(LoginError::Missing)?;
    let user_id: u64 = fields
        .get("id")
        .and_then(|id| id.parse().ok())
        .ok_or(LoginError::Missing)?;
    let auth_date: u64 = fields
        .get("auth_date")
        .and_then(|d| d.parse().ok())
        .ok_or(LoginError::Missing)?;
    let check = data_check_string(fields);
    let expected = hex::decode(hash).map_err(|_| LoginError::BadSignature)?;
    let mut mac = mac(bot_token);
    mac.update(check.as_bytes());
    // Constant time: the comparison must not tell how much of it matched.
    mac.verify_slice(&expected)
        .map_err(|_| LoginError::BadSignature)?;
    let now = now_secs();
    if auth_date > now + 60 || now - auth_date.min(now) > MAX_AGE.as_secs() {
        return Err(LoginError::Stale);
    }
    Ok(TelegramLogin {
        user_id,
        username: fields.get("username").cloned(),
        first_name: fields.get("first_name").cloned(),
    })
}

/// Signs `fields` as Telegram does (for tests and the fake Bot API).
pub fn sign(fields: &BTreeMap<String, String>, bot_token: &str) -> String {
    let mut mac = mac(bot_token);
    mac.update(data_check_string(fields).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn mac(bot_token: &str) -> Hmac<Sha256> {
    let key = Sha256::digest(bot_token.as_bytes());
    Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length")
}

fn data_check_string(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .filter(|(key, _)| key.as_str() != "hash")
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:ABC-token";

    fn signed(id: &str, age_secs: u64) -> BTreeMap<String, String> {
        let mut fields: BTreeMap<String, String> = [
            ("id", id.to_owned()),
            ("first_name", "Alice".to_owned()),
            ("username", "alice".to_owned()),
            ("auth_date", (now_secs() - age_secs).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let hash = sign(&fields, TOKEN);
        fields.insert("hash".into(), hash);
        fields
    }

    #[test]
    fn a_fresh_signature_names_the_user() {
        let login = verify(&signed("42", 5), TOKEN).unwrap();
        assert_eq!(login.user_id, 42);
        assert_eq!(login.username.as_deref(), Some("alice"));
    }

    #[test]
    fn tampering_another_token_or_age_is_refused() {
        let mut forged = signed("42", 5);
        forged.insert("id".into(), "43".into());
        assert_eq!(verify(&forged, TOKEN), Err(LoginError::BadSignature));
        assert_eq!(
            verify(&signed("42", 5), "999:other"),
            Err(LoginError::BadSignature)
        );
        assert_eq!(verify(&signed("42", 3600), TOKEN), Err(LoginError::Stale));
        assert_eq!(verify(&BTreeMap::new(), TOKEN), Err(LoginError::Missing));
    }

    /// The worked example of the data-check string from Telegram's docs:
    /// fields sorted by key, `key=value`, newline-joined, `hash` left out.
    #[test]
    fn the_check_string_is_sorted_and_leaves_out_the_hash() {
        let fields: BTreeMap<String, String> = [
            ("id", "1"),
            ("auth_date", "2"),
            ("hash", "x"),
            ("first_name", "A"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            data_check_string(&fields),
            "auth_date=2\nfirst_name=A\nid=1"
        );
    }
}
