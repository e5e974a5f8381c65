//! Tool lists and tool results as plain text for a chat.
//!
//! Plain text, not HTML: tool output is arbitrary and must never be able
//! to break Telegram's entity parser or smuggle markup into a message.

use rmcp::model::{Prompt, Resource, Tool};
use serde_json::Value;

/// Entries per page of a browser: a keyboard of this many buttons stays
/// readable on a phone.
pub const PER_PAGE: usize = 8;

/// What a browser lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Tools,
    Resources,
    Prompts,
}

/// One entry of a browser: its name, its button label, and a line about it.
pub struct Entry {
    pub name: String,
    pub label: String,
    pub about: Option<String>,
}

/// The tools sorted by name: the order the browser's indexes refer to.
pub fn sorted(tools: &[Tool]) -> Vec<&Tool> {
    let mut sorted: Vec<&Tool> = tools.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
}

/// The resources sorted by name, then URI.
pub fn sorted_resources(resources: &[Resource]) -> Vec<&Resource> {
    let mut sorted: Vec<&Resource> = resources.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.uri).cmp(&(&b.name, &b.uri)));
    sorted
}

/// The prompts sorted by name.
pub fn sorted_prompts(prompts: &[Prompt]) -> Vec<&Prompt> {
    let mut sorted: Vec<&Prompt> = prompts.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
}

pub fn tool_entries(tools: &[Tool]) -> Vec<Entry> {
    sorted(tools)
        .into_iter()
        .map(|tool| Entry {
            name: tool.name.to_string(),
            label: tool.title.as_deref().unwrap_or(&tool.name).to_owned(),
            about: first_line(tool.description.as_deref().or(tool.title.as_deref())),
        })
        .collect()
}

pub fn resource_entries(resources: &[Resource]) -> Vec<Entry> {
    sorted_resources(resources)
        .into_iter()
        .map(|resource| Entry {
            name: resource.name.clone(),
            label: resource
                .title
                .as_deref()
                .unwrap_or(&resource.name)
                .to_owned(),
            about: first_line(resource.description.as_deref())
                .or_else(|| Some(resource.uri.clone())),
        })
        .collect()
}

pub fn prompt_entries(prompts: &[Prompt]) -> Vec<Entry> {
    sorted_prompts(prompts)
        .into_iter()
        .map(|prompt| Entry {
            name: prompt.name.clone(),
            label: prompt.title.as_deref().unwrap_or(&prompt.name).to_owned(),
            about: first_line(prompt.description.as_deref().or(prompt.title.as_deref())),
        })
        .collect()
}

fn first_line(text: Option<&str>) -> Option<String> {
    text.and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(str::to_owned)
}

/// One page of a browser.
pub struct Page {
    pub text: String,
    /// A button per entry on the page: its label and its index.
    pub buttons: Vec<(String, usize)>,
    pub previous: Option<usize>,
    pub next: Option<usize>,
}

pub fn tool_page(server_name: &str, tools: &[Tool], page: usize) -> Page {
    list_page(Listing::Tools, server_name, &tool_entries(tools), page)
}

pub fn list_page(listing: Listing, server_name: &str, entries: &[Entry], page: usize) -> Page {
    let (what, tap) = match listing {
        Listing::Tools => ("Tools", "for its parameters"),
        Listing::Resources => ("Resources", "to get it"),
        Listing::Prompts => ("Prompts", "to fill it in"),
    };
    let pages = entries.len().div_ceil(PER_PAGE).max(1);
    let page = page.min(pages - 1);
    let first = page * PER_PAGE;
    let on_page = entries.iter().enumerate().skip(first).take(PER_PAGE);
    let mut lines = Vec::new();
    let mut buttons = Vec::new();
    for (index, entry) in on_page {
        lines.push(match &entry.about {
            Some(line) => format!("• {} — {}", entry.name, clip(line, 120)),
            None => format!("• {}", entry.name),
        });
        buttons.push((clip(&entry.label, 40), index));
    }
    let header = if entries.is_empty() {
        format!("This server offers no {}.", what.to_lowercase())
    } else if pages > 1 {
        format!(
            "{what} of {server_name} ({} in all, page {} of {pages}). Tap one {tap}.",
            entries.len(),
            page + 1
        )
    } else {
        format!("{what} of {server_name}. Tap one {tap}.")
    };
    Page {
        text: format!("{header}\n{}", lines.join("\n"))
            .trim_end()
            .to_owned(),
        buttons,
        previous: page.checked_sub(1),
        next: (page + 1 < pages).then_some(page + 1),
    }
}

fn clip(text: &str, max: usize) -> String {
    crate::text::clip(text, max)
}

/// Like [`clip`], keeping line breaks.
fn clip_block(text: &str, max: usize) -> String {
    let mut chars = text.chars().filter(|c| *c == '\n' || !c.is_control());
    let mut out: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// A tool's description and parameters, read from its input schema, and
/// how to call it.
pub fn tool_details(server_id: &str, tool: &Tool) -> String {
    let mut out = match &tool.title {
        Some(title) if title.as_str() != tool.name.as_ref() => {
            format!("{} — {}", tool.name, clip(title, 100))
        }
        _ => tool.name.to_string(),
    };
    if let Some(description) = tool.description.as_deref().filter(|d| !d.trim().is_empty()) {
        out.push_str("\n\n");
        out.push_str(&clip_block(description.trim(), 1500));
    }
    let schema = Value::Object((*tool.input_schema).clone());
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let properties = schema.get("properties").and_then(Value::as_object);
    let mut example = serde_json::Map::new();
    match properties {
        Some(properties) if !properties.is_empty() => {
            out.push_str("\n\nParameters:");
            for (name, property) in properties {
                let is_required = required.contains(&name.as_str());
                out.push_str(&format!("\n• {}", parameter(name, property, is_required)));
                if is_required {
                    example.insert(name.clone(), placeholder(property));
                }
            }
        }
        _ => out.push_str("\n\nNo parameters."),
    }
    let arguments = if example.is_empty() {
        String::new()
    } else {
        format!(" {}", Value::Object(example))
    };
    out.push_str(&format!(
        "\n\nCall it: /call {server_id} {}{arguments}",
        tool.name
    ));
    out
}

fn type_of(property: &Value) -> String {
    match property.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ if property.get("enum").is_some() => "one of".to_owned(),
        _ => "any".to_owned(),
    }
}

fn parameter(name: &str, property: &Value, required: bool) -> String {
    let mut facts = vec![type_of(property)];
    if required {
        facts.push("required".to_owned());
    }
    if let Some(default) = property.get("default") {
        facts.push(format!("default {}", clip(&default.to_string(), 40)));
    }
    let mut line = format!("{name} ({})", facts.join(", "));
    if let Some(choices) = property.get("enum").and_then(Value::as_array) {
        let choices: Vec<String> = choices.iter().map(|c| clip(&c.to_string(), 30)).collect();
        line.push_str(&format!(": {}", clip(&choices.join(" | "), 200)));
    }
    if let Some(description) = property.get("description").and_then(Value::as_str) {
        line.push_str(&format!(" — {}", clip(description.trim(), 200)));
    }
    line
}

/// A value of the right shape for the example call.
fn placeholder(property: &Value) -> Value {
    if let Some(first) = property
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    {
        return first.clone();
    }
    if let Some(default) = property.get("default") {
        return default.clone();
    }
    match type_of(property).split(' ').next().unwrap_or_default() {
        "integer" | "number" => Value::from(1),
        "boolean" => Value::Bool(true),
        "array" => Value::Array(Vec::new()),
        "object" => Value::Object(serde_json::Map::new()),
        _ => Value::String("…".to_owned()),
    }
}

/// One line per tool: name and the first line of its description.
pub fn tool_list(tools: &[Tool]) -> String {
    if tools.is_empty() {
        return "This server offers no tools.".to_owned();
    }
    sorted(tools)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, schema: serde_json::Value) -> Tool {
        let serde_json::Value::Object(schema) = schema else {
            panic!("an object schema")
        };
        Tool::new(name.to_owned(), format!("Does {name}"), schema)
    }

    #[test]
    fn the_browser_pages_tools_by_name() {
        let tools: Vec<Tool> = (0..19)
            .rev()
            .map(|i| tool(&format!("t{i:02}"), serde_json::json!({"type": "object"})))
            .collect();
        let first = tool_page("S", &tools, 0);
        assert_eq!(first.buttons.len(), PER_PAGE);
        assert_eq!(first.buttons[0], ("t00".to_owned(), 0));
        assert_eq!((first.previous, first.next), (None, Some(1)));
        assert!(
            first.text.contains("19 in all, page 1 of 3"),
            "{}",
            first.text
        );
        let last = tool_page("S", &tools, 7);
        assert_eq!(last.buttons.len(), 3, "past the end shows the last page");
        assert_eq!((last.previous, last.next), (Some(1), None));
    }

    #[test]
    fn details_read_the_schema() {
        let weather = tool(
            "weather",
            serde_json::json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "units": {"type": "string", "enum": ["metric", "imperial"], "default": "metric"},
                    "days": {"type": "integer"}
                },
                "required": ["city", "days"]
            }),
        );
        let text = tool_details("w", &weather);
        assert!(
            text.contains("• city (string, required) — City name"),
            "{text}"
        );
        assert!(
            text.contains("• units (string, default \"metric\"): \"metric\" | \"imperial\""),
            "{text}"
        );
        assert!(
            text.contains("/call w weather {\"city\":\"…\",\"days\":1}"),
            "{text}"
        );
    }
}
