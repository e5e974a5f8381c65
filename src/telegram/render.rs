//! Tool lists and tool results as plain text for a chat.
//!
//! Plain text, not HTML: tool output is arbitrary and must never be able
//! to break Telegram's entity parser or smuggle markup into a message.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents, Tool};

/// One line per tool: name and the first line of its description.
pub fn tool_list(tools: &[Tool]) -> String {
    if tools.is_empty() {
        return "This server offers no tools.".to_owned();
    }
    let mut sorted: Vec<&Tool> = tools.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .iter()
        .map(|tool| {
            let description = tool
                .description
                .as_deref()
                .or(tool.title.as_deref())
                .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()));
            match description {
                Some(line) => format!("• {} — {}", tool.name, line),
                None => format!("• {}", tool.name),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a tool result; non-text content is described, not dumped.
pub fn call_result(result: &CallToolResult) -> String {
    let mut parts: Vec<String> = result.content.iter().map(content_block).collect();
    if parts.iter().all(|p| p.trim().is_empty()) {
        parts = match &result.structured_content {
            Some(value) => vec![serde_json::to_string_pretty(value).unwrap_or_default()],
            None => vec!["(the tool returned no content)".to_owned()],
        };
    }
    let body = parts.join("\n\n");
    if result.is_error == Some(true) {
        format!("The tool reported an error:\n{body}")
    } else {
        body
    }
}

fn content_block(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!("[image: {}]", image.mime_type),
        ContentBlock::Audio(audio) => format!("[audio: {}]", audio.mime_type),
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => {
                format!("[resource {uri}]\n{text}")
            }
            ResourceContents::BlobResourceContents { uri, .. } => format!("[resource {uri}]"),
            #[allow(unreachable_patterns)] // rmcp may add kinds
            _ => "[resource]".to_owned(),
        },
        ContentBlock::ResourceLink(link) => format!("[link: {}]", link.uri),
        _ => "[content of a kind this bot cannot show]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock as Content;

    #[test]
    fn text_results_are_joined_and_errors_flagged() {
        let ok = CallToolResult::success(vec![Content::text("Hello"), Content::text("World")]);
        assert_eq!(call_result(&ok), "Hello\n\nWorld");
        let failed = CallToolResult::error(vec![Content::text("boom")]);
        assert_eq!(call_result(&failed), "The tool reported an error:\nboom");
    }
}
