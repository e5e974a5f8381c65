//! What a tool result (or a resource) becomes in a chat: HTML-formatted
//! text with code blocks, photos, audio and documents, in the order the
//! server gave them. A plan of messages, made without I/O so it can be
//! tested; [`super::send::outgoing`] sends it.
//!
//! Text from servers is escaped, never interpreted: a server must not be
//! able to smuggle markup (or a broken entity that makes Telegram refuse
//! the whole message) into a chat.

use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock, GetPromptResult, ResourceContents, Role};
use serde_json::Value;
use teloxide::utils::html;

use super::format::{MAX_MESSAGE_UNITS, chunks, utf16_len};

/// Beyond this many messages' worth of text, a result comes as a file:
/// a chat flooded with pages is worse than a document to open.
const MAX_TEXT_MESSAGES: usize = 3;

/// Telegram's limit for a photo sent by upload.
const MAX_PHOTO_BYTES: usize = 10 * 1024 * 1024;

/// Telegram's limit for any other file a bot uploads.
const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

/// Telegram's limit for a caption, in UTF-16 units after parsing.
pub const MAX_CAPTION_UNITS: usize = 1024;

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// HTML (parse mode HTML) whose visible text fits one message.
    Text(String),
    Photo(Upload),
    /// MP3 or M4A, which Telegram plays as music.
    Audio(Upload),
    /// OGG/Opus, which Telegram plays as a voice message.
    Voice(Upload),
    Document(Upload),
}

/// A file to upload, with an HTML caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub data: Vec<u8>,
    pub file_name: String,
    pub caption: Option<String>,
}

/// A piece of text before it is laid out into messages.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    Plain(String),
    Code { language: String, text: String },
}

impl Block {
    fn raw(&self) -> &str {
        match self {
            Block::Plain(text) | Block::Code { text, .. } => text,
        }
    }

    fn html(&self) -> String {
        match self {
            Block::Plain(text) => html::escape(text),
            Block::Code { language, text } if language.is_empty() => {
                format!("<pre>{}</pre>", html::escape(text))
            }
            Block::Code { language, text } => format!(
                "<pre><code class=\"language-{}\">{}</code></pre>",
                html::escape(language),
                html::escape(text)
            ),
        }
    }

    fn with_text(&self, text: String) -> Block {
        match self {
            Block::Plain(_) => Block::Plain(text),
            Block::Code { language, .. } => Block::Code {
                language: language.clone(),
                text,
            },
        }
    }
}

/// Files Telegram would refuse for their size become a line saying so.
fn within_limits(messages: Vec<Outgoing>) -> Vec<Outgoing> {
    messages
        .into_iter()
        .map(|message| match &message {
            Outgoing::Audio(upload) | Outgoing::Voice(upload) | Outgoing::Document(upload)
                if upload.data.len() > MAX_UPLOAD_BYTES =>
            {
                Outgoing::Text(html::escape(&format!(
                    "[{}: {} MB, more than Telegram takes from a bot]",
                    upload.file_name,
                    upload.data.len() / (1024 * 1024)
                )))
            }
            _ => message,
        })
        .collect()
}

/// The messages for a tool's result.
pub fn call_result(result: &CallToolResult) -> Vec<Outgoing> {
    within_limits(call_result_unchecked(result))
}

fn call_result_unchecked(result: &CallToolResult) -> Vec<Outgoing> {
    let mut items: Vec<Item> = Vec::new();
    if result.is_error == Some(true) {
        items.push(Item::Text(Block::Plain(
            "⚠️ The tool reported an error:".to_owned(),
        )));
    }
    let structured = result.structured_content.as_ref();
    for block in &result.content {
        // Servers repeat their structured result as JSON text for older
        // clients; shown once, as the structured block below.
        if let (ContentBlock::Text(text), Some(structured)) = (block, structured)
            && serde_json::from_str::<Value>(&text.text).ok().as_ref() == Some(structured)
        {
            continue;
        }
        items.extend(content_block(block));
    }
    if let Some(structured) = structured {
        items.push(Item::Text(json_block(structured)));
    }
    if !items.iter().any(|item| match item {
        Item::Text(block) => !block.raw().trim().is_empty(),
        Item::File(_) => true,
    }) {
        items.push(Item::Text(Block::Plain(
            "(the tool returned no content)".to_owned(),
        )));
    }
    lay_out(items, "result", None)
}

/// The messages for a resource's contents (one tap in `/resources`, or a
/// resource embedded in a result).
pub fn resource(contents: &ResourceContents) -> Outgoing {
    match contents {
        ResourceContents::TextResourceContents {
            uri,
            mime_type,
            text,
            ..
        } => Outgoing::Document(Upload {
            data: text.as_bytes().to_vec(),
            file_name: file_name(uri, mime_type.as_deref(), "txt"),
            caption: Some(caption(uri)),
        }),
        ResourceContents::BlobResourceContents {
            uri,
            mime_type,
            blob,
            ..
        } => match decode(blob) {
            Some(data) => Outgoing::Document(Upload {
                data,
                file_name: file_name(uri, mime_type.as_deref(), "bin"),
                caption: Some(caption(uri)),
            }),
            None => Outgoing::Text(html::escape(&format!(
                "[resource {uri}: its contents could not be decoded]"
            ))),
        },
        #[allow(unreachable_patterns)] // rmcp's enum is non-exhaustive
        _ => Outgoing::Text(html::escape("[a resource of a kind this bot cannot show]")),
    }
}

/// A resource read with `/resources`: text as text (JSON as a code block,
/// a long one as a file), images as photos, audio as audio, anything
/// else as a document.
pub fn resource_contents(contents: &[ResourceContents]) -> Vec<Outgoing> {
    within_limits(resource_contents_unchecked(contents))
}

fn resource_contents_unchecked(contents: &[ResourceContents]) -> Vec<Outgoing> {
    let mut items = Vec::new();
    let mut name = None;
    for content in contents {
        match content {
            ResourceContents::TextResourceContents {
                uri,
                mime_type,
                text,
                ..
            } => {
                name = Some(file_name(uri, mime_type.as_deref(), "txt"));
                let json = mime_type.as_deref().is_some_and(|m| m.contains("json"));
                match serde_json::from_str::<Value>(text) {
                    Ok(value) if json => items.push(Item::Text(json_block(&value))),
                    _ => items.extend(text_blocks(text).into_iter().map(Item::Text)),
                }
            }
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => {
                let mime = mime_type
                    .as_deref()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let block = if mime.starts_with("image/") {
                    ContentBlock::image(blob.clone(), mime)
                } else if mime.starts_with("audio/") {
                    ContentBlock::audio(blob.clone(), mime)
                } else {
                    items.push(Item::File(resource(content)));
                    continue;
                };
                items.extend(content_block(&block).into_iter().map(|item| match item {
                    Item::File(Outgoing::Photo(mut upload)) => {
                        upload.file_name = file_name(uri, mime_type.as_deref(), "img");
                        Item::File(Outgoing::Photo(upload))
                    }
                    other => other,
                }));
            }
            #[allow(unreachable_patterns)] // rmcp's enum is non-exhaustive
            _ => {}
        }
    }
    if items.is_empty() {
        items.push(Item::Text(Block::Plain(
            "(the resource is empty)".to_owned(),
        )));
    }
    lay_out(items, "resource", name)
}

/// A prompt's messages, each under who says it.
pub fn prompt(result: &GetPromptResult) -> Vec<Outgoing> {
    let mut items = Vec::new();
    if let Some(description) = result
        .description
        .as_deref()
        .filter(|d| !d.trim().is_empty())
    {
        items.push(Item::Text(Block::Plain(description.to_owned())));
    }
    for message in &result.messages {
        let who = match message.role {
            Role::User => "🧑 User:",
            Role::Assistant => "🤖 Assistant:",
        };
        items.push(Item::Text(Block::Plain(who.to_owned())));
        items.extend(content_block(&message.content));
    }
    if result.messages.is_empty() {
        items.push(Item::Text(Block::Plain(
            "(the prompt has no messages)".to_owned(),
        )));
    }
    within_limits(lay_out(items, "prompt", None))
}

/// Either text to lay out or a file to send as it is.
enum Item {
    Text(Block),
    File(Outgoing),
}

fn content_block(block: &ContentBlock) -> Vec<Item> {
    match block {
        ContentBlock::Text(text) => text_blocks(&text.text)
            .into_iter()
            .map(Item::Text)
            .collect(),
        ContentBlock::Image(image) => vec![match decode(&image.data) {
            Some(data) => {
                let file_name = file_name("image", Some(&image.mime_type), "img");
                let upload = Upload {
                    data,
                    file_name,
                    caption: None,
                };
                if is_photo(&image.mime_type) && upload.data.len() <= MAX_PHOTO_BYTES {
                    Item::File(Outgoing::Photo(upload))
                } else {
                    Item::File(Outgoing::Document(upload))
                }
            }
            None => undecodable("image"),
        }],
        ContentBlock::Audio(audio) => vec![match decode(&audio.data) {
            Some(data) => {
                let mime = audio.mime_type.to_ascii_lowercase();
                let upload = Upload {
                    data,
                    file_name: file_name("audio", Some(&mime), "audio"),
                    caption: None,
                };
                Item::File(match mime.as_str() {
                    "audio/mpeg" | "audio/mp3" | "audio/mp4" | "audio/m4a" | "audio/x-m4a" => {
                        Outgoing::Audio(upload)
                    }
                    "audio/ogg" | "audio/opus" => Outgoing::Voice(upload),
                    _ => Outgoing::Document(upload),
                })
            }
            None => undecodable("audio clip"),
        }],
        ContentBlock::Resource(embedded) => vec![Item::File(resource(&embedded.resource))],
        ContentBlock::ResourceLink(link) => {
            let name = link.title.as_deref().unwrap_or(&link.name);
            let mut line = format!("🔗 {name}: {}", link.uri);
            if let Some(description) = link.description.as_deref().filter(|d| !d.is_empty()) {
                line.push_str(&format!("\n{description}"));
            }
            vec![Item::Text(Block::Plain(line))]
        }
        #[allow(unreachable_patterns)] // rmcp's enum is non-exhaustive
        _ => vec![Item::Text(Block::Plain(
            "[content of a kind this bot cannot show]".to_owned(),
        ))],
    }
}

fn undecodable(what: &str) -> Item {
    Item::Text(Block::Plain(format!(
        "[an {what} that could not be decoded]"
    )))
}

/// Text as blocks: JSON becomes a pretty code block, Markdown code fences
/// become code blocks, the rest stays plain.
fn text_blocks(text: &str) -> Vec<Block> {
    let trimmed = text.trim();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(value) = serde_json::from_str::<Value>(trimmed)
    {
        return vec![json_block(&value)];
    }
    let mut blocks = Vec::new();
    let mut plain = String::new();
    let mut code: Option<(String, String)> = None;
    for line in text.split_inclusive('\n') {
        let fence = line.trim_end().strip_prefix("```");
        match (&mut code, fence) {
            (None, Some(language)) if !language.contains('`') => {
                blocks.push(Block::Plain(std::mem::take(&mut plain)));
                // Only a plain language name goes into the HTML attribute.
                let language: String = language
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_' | '#'))
                    .collect();
                code = Some((language, String::new()));
            }
            (Some(_), Some("")) => {
                let (language, text) = code.take().unwrap_or_default();
                blocks.push(Block::Code {
                    language,
                    text: text.trim_end_matches('\n').to_owned(),
                });
            }
            (Some((_, text)), _) => text.push_str(line),
            (None, _) => plain.push_str(line),
        }
    }
    if let Some((language, text)) = code {
        // An unclosed fence: still code.
        blocks.push(Block::Code { language, text });
    }
    blocks.push(Block::Plain(plain));
    blocks.retain(|b| !b.raw().trim().is_empty());
    blocks
}

fn json_block(value: &Value) -> Block {
    Block::Code {
        language: "json".to_owned(),
        text: serde_json::to_string_pretty(value).unwrap_or_default(),
    }
}

/// Text blocks packed into messages, files kept in place; text beyond a
/// few messages goes out as one document, named `name` or else `stem`
/// with the extension its text calls for.
fn lay_out(items: Vec<Item>, stem: &str, name: Option<String>) -> Vec<Outgoing> {
    let text_units: usize = items
        .iter()
        .map(|item| match item {
            Item::Text(block) => utf16_len(block.raw()) + 2,
            Item::File(_) => 0,
        })
        .sum();
    if text_units > MAX_TEXT_MESSAGES * MAX_MESSAGE_UNITS {
        return as_document(items, stem, name);
    }
    let mut out = Vec::new();
    let mut pending: Vec<Block> = Vec::new();
    for item in items {
        match item {
            Item::Text(block) => pending.push(block),
            Item::File(file) => {
                out.extend(pack(std::mem::take(&mut pending)));
                out.push(file);
            }
        }
    }
    out.extend(pack(pending));
    out
}

/// Blocks joined into as few messages as fit, a block too long for one
/// message split on line boundaries (code stays code in every piece).
fn pack(blocks: Vec<Block>) -> Vec<Outgoing> {
    let mut messages = Vec::new();
    let mut html_parts: Vec<String> = Vec::new();
    let mut units = 0;
    for block in blocks {
        for piece in chunks(block.raw(), MAX_MESSAGE_UNITS) {
            let piece_units = utf16_len(&piece);
            if !html_parts.is_empty() && units + 2 + piece_units > MAX_MESSAGE_UNITS {
                messages.push(Outgoing::Text(html_parts.join("\n\n")));
                html_parts.clear();
                units = 0;
            }
            units += piece_units + if html_parts.is_empty() { 0 } else { 2 };
            html_parts.push(block.with_text(piece).html());
        }
    }
    if !html_parts.is_empty() {
        messages.push(Outgoing::Text(html_parts.join("\n\n")));
    }
    messages
}

fn as_document(items: Vec<Item>, stem: &str, name: Option<String>) -> Vec<Outgoing> {
    let texts: Vec<&Block> = items
        .iter()
        .filter_map(|item| match item {
            Item::Text(block) => Some(block),
            Item::File(_) => None,
        })
        .collect();
    let only_json =
        matches!(texts.as_slice(), [Block::Code { language, .. }] if language == "json");
    let body = texts
        .iter()
        .map(|block| block.raw())
        .collect::<Vec<_>>()
        .join("\n\n");
    let units = body.chars().count();
    let document = Outgoing::Document(Upload {
        data: body.into_bytes(),
        file_name: name
            .unwrap_or_else(|| format!("{stem}.{}", if only_json { "json" } else { "txt" })),
        caption: Some(html::escape(&format!(
            "The text is long ({} characters), so it comes as a file.",
            group_digits(units)
        ))),
    });
    let mut out = vec![document];
    out.extend(items.into_iter().filter_map(|item| match item {
        Item::File(file) => Some(file),
        Item::Text(_) => None,
    }));
    out
}

fn group_digits(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn decode(data: &str) -> Option<Vec<u8>> {
    let data: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(&data)
        .ok()
        .filter(|bytes| !bytes.is_empty())
}

fn is_photo(mime: &str) -> bool {
    matches!(
        mime.to_ascii_lowercase().as_str(),
        "image/png" | "image/jpeg" | "image/jpg" | "image/webp" | "image/gif"
    )
}

/// A file name for a URI's last segment, or `fallback` with an extension
/// that matches the MIME type; only characters safe in any file system.
fn file_name(uri: &str, mime: Option<&str>, default_extension: &str) -> String {
    let last = uri
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit('/')
        .find(|segment| !segment.is_empty())
        .unwrap_or("file");
    let last = last.rsplit(':').next().unwrap_or(last);
    let mut name: String = last
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    let name_trimmed = name.trim_matches('.');
    if name_trimmed.is_empty() {
        name = "file".to_owned();
    } else {
        name = name_trimmed.to_owned();
    }
    if !name.contains('.') {
        let extension = mime.and_then(extension_for).unwrap_or(default_extension);
        name = format!("{name}.{extension}");
    }
    name
}

fn extension_for(mime: &str) -> Option<&'static str> {
    Some(
        match mime
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "image/png" => "png",
            "image/jpeg" | "image/jpg" => "jpg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            "image/svg+xml" => "svg",
            "audio/mpeg" | "audio/mp3" => "mp3",
            "audio/mp4" | "audio/m4a" | "audio/x-m4a" => "m4a",
            "audio/ogg" | "audio/opus" => "ogg",
            "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
            "application/json" => "json",
            "text/plain" => "txt",
            "text/markdown" => "md",
            "text/html" => "html",
            "text/csv" => "csv",
            "application/pdf" => "pdf",
            "application/gzip" => "gz",
            "application/zip" => "zip",
            _ => return None,
        },
    )
}

fn caption(uri: &str) -> String {
    html::escape(&crate::text::clip(uri, 300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock as Content;
    use serde_json::json;

    fn texts(out: &[Outgoing]) -> Vec<&str> {
        out.iter()
            .filter_map(|o| match o {
                Outgoing::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn text_is_escaped_and_json_becomes_a_code_block() {
        let result = CallToolResult::success(vec![
            Content::text("<b>not bold</b> & co"),
            Content::text(r#"{"a":1}"#),
        ]);
        let out = call_result(&result);
        assert_eq!(
            texts(&out),
            vec![
                "&lt;b&gt;not bold&lt;/b&gt; &amp; co\n\n<pre><code class=\"language-json\">{\n  \"a\": 1\n}</code></pre>"
            ]
        );
    }

    #[test]
    fn fenced_code_keeps_its_language() {
        let blocks = text_blocks("Run this:\n```rust\nfn main() {}\n```\nDone.");
        assert_eq!(
            blocks,
            vec![
                Block::Plain("Run this:\n".to_owned()),
                Block::Code {
                    language: "rust".to_owned(),
                    text: "fn main() {}".to_owned()
                },
                Block::Plain("Done.".to_owned()),
            ]
        );
    }

    #[test]
    fn structured_content_is_shown_once() {
        let value = json!({"temperature": 21});
        let mut result = CallToolResult::structured(value.clone());
        result.content = vec![Content::text(value.to_string())];
        let out = call_result(&result);
        let shown = texts(&out);
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0].matches("temperature").count(), 1, "{shown:?}");
    }

    #[test]
    fn errors_are_flagged() {
        let out = call_result(&CallToolResult::error(vec![Content::text("boom")]));
        assert_eq!(texts(&out), vec!["⚠️ The tool reported an error:\n\nboom"]);
    }

    #[test]
    fn images_are_photos_in_place_and_svg_a_document() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG....");
        let result = CallToolResult::success(vec![
            Content::text("before"),
            Content::image(png.clone(), "image/png"),
            Content::text("after"),
            Content::image(png, "image/svg+xml"),
        ]);
        let out = call_result(&result);
        assert!(matches!(&out[0], Outgoing::Text(t) if t == "before"));
        assert!(matches!(&out[1], Outgoing::Photo(u) if u.file_name == "image.png"));
        assert!(matches!(&out[2], Outgoing::Text(t) if t == "after"));
        assert!(matches!(&out[3], Outgoing::Document(u) if u.file_name == "image.svg"));
    }

    #[test]
    fn long_text_is_split_within_the_limit_and_very_long_text_is_a_file() {
        let line = "x".repeat(99) + "\n";
        let result = CallToolResult::success(vec![Content::text(line.repeat(60))]);
        let out = call_result(&result);
        assert_eq!(out.len(), 2);
        for text in texts(&out) {
            assert!(utf16_len(text) <= MAX_MESSAGE_UNITS);
        }
        let huge = CallToolResult::success(vec![Content::text("y".repeat(100_000))]);
        let out = call_result(&huge);
        assert_eq!(out.len(), 1);
        let Outgoing::Document(upload) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(upload.data.len(), 100_000);
        assert_eq!(upload.file_name, "result.txt");
        assert!(
            upload
                .caption
                .as_deref()
                .unwrap()
                .contains("100,000 characters")
        );
    }

    #[test]
    fn code_split_across_messages_stays_code() {
        let code = (0..300)
            .map(|i| format!("line {i:04} <&>"))
            .collect::<Vec<_>>()
            .join("\n");
        let out = call_result(&CallToolResult::success(vec![Content::text(format!(
            "```\n{code}\n```"
        ))]));
        let shown = texts(&out);
        assert!(shown.len() >= 2, "{shown:?}");
        for text in shown {
            assert!(
                text.starts_with("<pre>") && text.ends_with("</pre>"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_file_too_large_for_telegram_is_named_not_sent() {
        let big = vec![0u8; MAX_UPLOAD_BYTES + 1];
        let out = within_limits(vec![Outgoing::Document(Upload {
            data: big,
            file_name: "dump.bin".to_owned(),
            caption: None,
        })]);
        assert!(
            matches!(&out[0], Outgoing::Text(t) if t.contains("dump.bin: 50 MB")),
            "{out:?}"
        );
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("file:///tmp/../a b.txt", None, "txt"), "ab.txt");
        assert_eq!(
            file_name(
                "demo://resource/static/document/x",
                Some("application/json"),
                "bin"
            ),
            "x.json"
        );
        assert_eq!(file_name("test://", None, "bin"), "file.bin");
    }
}
