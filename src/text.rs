//! Text that comes from elsewhere (an authorization server's error, a
//! remote server's error body) shown to a user in a chat or a page.

/// At most `limit` characters of `text` without control characters,
/// trimmed, with an ellipsis when something was cut.
pub fn clip(text: &str, limit: usize) -> String {
    let mut chars = text.chars().filter(|c| !c.is_control());
    let mut out: String = chars.by_ref().take(limit).collect();
    let cut = chars.next().is_some();
    out = out.trim().to_owned();
    if cut {
        out.push('…');
    }
    out
}

/// Foreign text made fit to show: URL query strings (which may hold API
/// keys) redacted, control characters gone, at most `limit` characters.
pub fn foreign(text: &str, limit: usize) -> String {
    clip(&crate::logging::scrub(text), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_text_loses_query_strings() {
        assert_eq!(
            foreign("see https://x.example/a?key=SECRET now", 100),
            "see https://x.example/a?[redacted] now"
        );
    }

    #[test]
    fn control_characters_go_and_long_text_is_cut() {
        assert_eq!(clip(" a\u{7}b\n ", 10), "ab");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
