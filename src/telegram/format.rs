//! Fitting text into Telegram messages.

use url::{Host, Url};

/// Telegram's limit for one message's text, in UTF-16 code units.
pub const MAX_MESSAGE_UNITS: usize = 4096;

/// Splits `text` into pieces Telegram accepts, preferring to cut at line
/// breaks, then spaces, and never inside a character.
pub fn chunks(text: &str, limit: usize) -> Vec<String> {
    let text = if text.trim().is_empty() {
        "(empty)"
    } else {
        text
    };
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if utf16_len(rest) <= limit {
            out.push(rest.to_owned());
            break;
        }
        // The longest prefix within the limit, on a char boundary.
        let mut units = 0;
        let mut hard_end = 0;
        for (index, ch) in rest.char_indices() {
            if units + ch.len_utf16() > limit {
                break;
            }
            units += ch.len_utf16();
            hard_end = index + ch.len_utf8();
        }
        let window = &rest[..hard_end];
        let cut = window
            .rfind('\n')
            .or_else(|| window.rfind(' '))
            .filter(|&at| at > hard_end / 2)
            .map(|at| at + 1)
            .unwrap_or(hard_end);
        out.push(rest[..cut].trim_end_matches('\n').to_owned());
        rest = &rest[cut..];
    }
    out.retain(|piece| !piece.is_empty());
    out
}

pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// The URL to put on an inline button. Telegram refuses buttons whose host
/// is `localhost` (BUTTON_URL_INVALID); on the same machine 127.0.0.1 is
/// the same place, so such a host is rewritten.
pub fn button_url(url: &str) -> Option<Url> {
    let mut url = Url::parse(url).ok()?;
    if let Some(Host::Domain(host)) = url.host()
        && host.eq_ignore_ascii_case("localhost")
    {
        url.set_host(Some("127.0.0.1")).ok()?;
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(chunks("hi", 4096), vec!["hi"]);
        assert_eq!(chunks("", 4096), vec!["(empty)"]);
    }

    #[test]
    fn long_text_splits_at_lines_within_the_limit() {
        let line = "x".repeat(30);
        let text = vec![line.as_str(); 400].join("\n");
        let pieces = chunks(&text, 4096);
        assert!(pieces.len() >= 3);
        assert!(pieces.iter().all(|p| utf16_len(p) <= 4096));
        assert!(pieces.iter().all(|p| p.split('\n').all(|l| l == line)));
        assert_eq!(pieces.join("\n"), text);
    }

    #[test]
    fn astral_characters_count_twice_and_are_never_split() {
        let text = "😀".repeat(3000);
        let pieces = chunks(&text, 4096);
        assert_eq!(pieces.len(), 2);
        assert_eq!(utf16_len(&pieces[0]), 4096);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn unbroken_text_is_cut_hard() {
        let text = "y".repeat(10_000);
        let pieces = chunks(&text, 4096);
        assert_eq!(
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![4096, 4096, 1808]
        );
    }

    #[test]
    fn localhost_buttons_point_at_loopback() {
        assert_eq!(
            button_url("http://localhost:3001/authorize?a=b")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:3001/authorize?a=b"
        );
        assert_eq!(
            button_url("https://auth.example.com/x").unwrap().as_str(),
            "https://auth.example.com/x"
        );
    }
}
