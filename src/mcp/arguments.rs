//! Tool arguments checked against the tool's `inputSchema` before they
//! leave: a wrong type or a missing field is answered by the schema's own
//! words at once, rather than by a server's error (or worse, a server that
//! guesses). The schemas are compiled once per listing, and never resolve a
//! `$ref` over the network or from files: a server's schema must not make
//! the bot fetch anything.

use std::sync::{Arc, OnceLock};

use jsonschema::Validator;
use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// Longest rendering of one problem; a schema can quote a whole value.
const PROBLEM_CHARS: usize = 200;

/// At most this many problems are reported for one call.
const MAX_PROBLEMS: usize = 5;

/// One thing wrong with the arguments: where (a JSON pointer into the
/// arguments, empty for the object itself) and the schema's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at.trim_start_matches('/'), self.message)
        }
    }
}

/// A JSON Schema for an object, compiled on first use.
pub struct Schema {
    raw: Arc<JsonObject>,
    validator: OnceLock<Option<Arc<Validator>>>,
}

impl Schema {
    pub fn new(raw: Arc<JsonObject>) -> Self {
        Self {
            raw,
            validator: OnceLock::new(),
        }
    }

    pub fn raw(&self) -> &JsonObject {
        &self.raw
    }

    /// What is wrong with `arguments` (an absent object counts as `{}`);
    /// empty when they fit, or when the schema itself cannot be compiled,
    /// in which case the server has the last word.
    pub fn problems(&self, arguments: Option<&JsonObject>) -> Vec<Problem> {
        let Some(validator) = self.validator() else {
            return Vec::new();
        };
        // A null for an optional property means "not provided" (as MCP's
        // own SEP-2243 treats it): checked as absent, sent as given.
        let required: Vec<&str> = self
            .raw
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut instance = arguments.cloned().unwrap_or_default();
        instance.retain(|name, value| !value.is_null() || required.contains(&name.as_str()));
        let instance = Value::Object(instance);
        validator
            .iter_errors(&instance)
            .take(MAX_PROBLEMS)
            .map(|error| Problem {
                at: error.instance_path().as_str().to_owned(),
                message: crate::text::clip(&error.to_string(), PROBLEM_CHARS),
            })
            .collect()
    }

    /// The problems of one property's value alone, for a dialogue that
    /// asks for the values one at a time: the other properties' problems
    /// (and the object's missing required ones) do not count yet.
    pub fn problems_of(&self, arguments: &JsonObject, property: &str) -> Vec<Problem> {
        let at = format!("/{}", escape_pointer(property));
        self.problems(Some(arguments))
            .into_iter()
            .filter(|p| p.at == at || p.at.starts_with(&format!("{at}/")))
            .collect()
    }

    fn validator(&self) -> Option<&Arc<Validator>> {
        self.validator
            .get_or_init(|| {
                match jsonschema::validator_for(&Value::Object((*self.raw).clone())) {
                    Ok(validator) => Some(Arc::new(validator)),
                    Err(error) => {
                        tracing::info!(%error, "an input schema does not compile; values for it go unchecked");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// A listed tool with its input schema.
pub struct Checked {
    pub tool: Tool,
    pub schema: Schema,
}

impl Checked {
    pub fn new(tool: Tool) -> Self {
        let schema = Schema::new(tool.input_schema.clone());
        Self { tool, schema }
    }

    pub fn problems(&self, arguments: Option<&JsonObject>) -> Vec<Problem> {
        self.schema.problems(arguments)
    }
}

/// RFC 6901: `~` and `/` in a property name.
fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(schema: Value) -> Checked {
        let Value::Object(schema) = schema else {
            panic!("schema must be an object")
        };
        Checked::new(Tool::new("sum", "adds", Arc::new(schema)))
    }

    fn object(value: Value) -> JsonObject {
        let Value::Object(map) = value else {
            panic!("arguments must be an object")
        };
        map
    }

    fn sum() -> Checked {
        tool(json!({
            "type": "object",
            "properties": {
                "a": {"type": "number"},
                "b": {"type": "number"},
                "mode": {"enum": ["fast", "slow"]}
            },
            "required": ["a", "b"]
        }))
    }

    #[test]
    fn fitting_arguments_have_no_problems() {
        assert!(
            sum()
                .problems(Some(&object(json!({"a": 1, "b": 2.5}))))
                .is_empty()
        );
    }

    #[test]
    fn a_wrong_type_is_named_with_its_place() {
        let problems = sum().problems(Some(&object(json!({"a": "x", "b": 1}))));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].at, "/a");
        assert_eq!(problems[0].to_string(), r#"a: "x" is not of type "number""#);
    }

    #[test]
    fn a_null_optional_argument_counts_as_not_given() {
        let checked = sum();
        assert!(
            checked
                .problems(Some(&object(json!({"a": 1, "b": 2, "mode": null}))))
                .is_empty()
        );
        let problems = checked.problems(Some(&object(json!({"a": null, "b": 2}))));
        assert_eq!(
            problems.len(),
            1,
            "a required null is still wrong: {problems:?}"
        );
    }

    #[test]
    fn missing_arguments_count_as_an_empty_object() {
        let problems = sum().problems(None);
        assert!(
            problems.iter().any(|p| p.message.contains("required")),
            "{problems:?}"
        );
    }

    #[test]
    fn one_parameter_is_judged_alone() {
        let checked = sum();
        let arguments = object(json!({"mode": "medium"}));
        let problems = checked.schema.problems_of(&arguments, "mode");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(checked.schema.problems_of(&arguments, "a").is_empty());
    }

    #[test]
    fn a_schema_that_does_not_compile_leaves_the_server_to_judge() {
        let checked = tool(json!({"type": "object", "properties": {"a": {"type": 12}}}));
        assert!(checked.problems(Some(&object(json!({"a": 1})))).is_empty());
    }

    #[test]
    fn remote_references_are_never_fetched() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/schema.json", listener.local_addr().unwrap());
        let checked = tool(json!({
            "type": "object",
            "properties": {"a": {"$ref": url}}
        }));
        // Either the schema is refused (and the server judges) or the
        // reference stays unresolved; never a request.
        let _ = checked.problems(Some(&object(json!({"a": 1}))));
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the schema's $ref was fetched"
        );
    }

    #[test]
    fn pointers_escape_slashes_and_tildes() {
        assert_eq!(escape_pointer("a/b~c"), "a~1b~0c");
    }
}
