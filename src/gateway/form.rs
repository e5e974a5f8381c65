//! An object described by a JSON Schema, filled in one property at a time:
//! a tool's arguments in a guided call, a prompt's arguments, or the
//! answer to a server's elicitation. Each value is checked against the
//! schema itself (by the schema validator, not by hand) as it is given, so
//! a wrong value is refused with the schema's own words at once.
//!
//! Choices (enums, booleans) are picked from a list; everything else is
//! typed. Properties of a shape no chat can ask for comfortably (objects,
//! arrays of free values) are typed as JSON.

use std::sync::Arc;

use rmcp::model::JsonObject;
use serde_json::Value;

use crate::mcp::Schema;

/// How a property is asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text,
    Integer,
    Number,
    /// Yes or no.
    Boolean,
    /// One of a list: (label, value).
    Choice(Vec<(String, Value)>),
    /// Any number of a list, picked one by one.
    Several(Vec<(String, Value)>),
    /// Typed as JSON.
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// The schema's title, when it has one; foreign text.
    pub title: Option<String>,
    /// Foreign text.
    pub description: Option<String>,
    pub kind: Kind,
    pub required: bool,
    pub default: Option<Value>,
    /// A string format (`email`, `date`, `uri`, …), as a hint.
    pub format: Option<String>,
}

/// Why a value was refused: the schema's words.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused(pub Vec<String>);

pub struct Form {
    schema: Arc<Schema>,
    fields: Vec<Field>,
    values: JsonObject,
    at: usize,
    /// For a [`Kind::Several`] field: what was picked so far.
    picked: Vec<Value>,
}

impl Form {
    /// The form for `schema`'s properties: required ones first, in the
    /// schema's order, then the optional ones.
    pub fn new(schema: Arc<Schema>) -> Self {
        let raw = schema.raw();
        let required: Vec<&str> = raw
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut fields: Vec<Field> = raw
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .map(|(name, property)| {
                        field(name, property, required.contains(&name.as_str()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        fields.sort_by_key(|f| !f.required);
        Self {
            schema,
            fields,
            values: JsonObject::new(),
            at: 0,
            picked: Vec::new(),
        }
    }

    /// A form already filled in with `values`, for a confirmation.
    pub fn filled(schema: Arc<Schema>, values: JsonObject) -> Self {
        let mut form = Self::new(schema);
        form.at = form.fields.len();
        form.values = values;
        form
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The property asked for now; `None` once all are answered.
    pub fn current(&self) -> Option<&Field> {
        self.fields.get(self.at)
    }

    /// (number of the current property, how many there are), from 1.
    pub fn position(&self) -> (usize, usize) {
        (self.at + 1, self.fields.len())
    }

    pub fn values(&self) -> &JsonObject {
        &self.values
    }

    /// What has been picked so far for a [`Kind::Several`] property.
    pub fn picked(&self) -> &[Value] {
        &self.picked
    }

    /// A typed answer for the current property.
    pub fn answer_text(&mut self, text: &str) -> Result<(), Refused> {
        let Some(field) = self.current() else {
            return Ok(());
        };
        let text = text.trim();
        let value = match &field.kind {
            Kind::Text => Value::String(text.to_owned()),
            Kind::Integer => match text.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Err(Refused(vec![format!("{text:?} is not a whole number")])),
            },
            Kind::Number => match text.replace(',', ".").parse::<f64>() {
                Ok(n) if n.is_finite() => serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                _ => return Err(Refused(vec![format!("{text:?} is not a number")])),
            },
            Kind::Boolean => match text.to_lowercase().as_str() {
                "yes" | "y" | "true" | "1" => Value::Bool(true),
                "no" | "n" | "false" | "0" => Value::Bool(false),
                _ => return Err(Refused(vec!["answer yes or no".to_owned()])),
            },
            Kind::Choice(choices) | Kind::Several(choices) => {
                let found = choices.iter().position(|(label, value)| {
                    label.eq_ignore_ascii_case(text) || value.as_str() == Some(text)
                });
                match found {
                    Some(index) => return self.choose(index),
                    None => return Err(Refused(vec!["pick one of the buttons".to_owned()])),
                }
            }
            Kind::Json => match serde_json::from_str::<Value>(text) {
                Ok(value) => value,
                // A bare word for a string-or-anything property.
                Err(error) => return Err(Refused(vec![format!("not valid JSON: {error}")])),
            },
        };
        self.set(value)
    }

    /// A pick from the current property's list (for booleans: 0 is yes,
    /// 1 is no). For [`Kind::Several`], toggles the pick; [`Self::done`]
    /// ends the property.
    pub fn choose(&mut self, index: usize) -> Result<(), Refused> {
        let Some(field) = self.current() else {
            return Ok(());
        };
        match &field.kind {
            Kind::Boolean if index < 2 => self.set(Value::Bool(index == 0)),
            Kind::Choice(choices) => match choices.get(index) {
                Some((_, value)) => self.set(value.clone()),
                None => Err(Refused(vec!["that choice is gone".to_owned()])),
            },
            Kind::Several(choices) => {
                let Some((_, value)) = choices.get(index) else {
                    return Err(Refused(vec!["that choice is gone".to_owned()]));
                };
                match self.picked.iter().position(|v| v == value) {
                    Some(at) => {
                        self.picked.remove(at);
                    }
                    None => self.picked.push(value.clone()),
                }
                Ok(())
            }
            _ => Err(Refused(vec!["type the value instead".to_owned()])),
        }
    }

    /// Ends a [`Kind::Several`] property with what was picked.
    pub fn done(&mut self) -> Result<(), Refused> {
        let picked = Value::Array(std::mem::take(&mut self.picked));
        self.set(picked)
    }

    /// Leaves the current property out (optional ones only).
    pub fn skip(&mut self) -> bool {
        match self.current() {
            Some(field) if !field.required => {
                self.picked.clear();
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    /// Leaves out the current property and all after it, when none of
    /// them is required (required ones come first).
    pub fn skip_rest(&mut self) -> bool {
        if self.fields[self.at.min(self.fields.len())..]
            .iter()
            .any(|f| f.required)
        {
            return false;
        }
        self.picked.clear();
        self.at = self.fields.len();
        true
    }

    /// Whether optional properties other than the current one are left.
    pub fn more_optional_after(&self) -> bool {
        self.fields.len() > self.at + 1 && !self.fields[self.at].required
    }

    /// Takes the current property's default, when it has one.
    pub fn use_default(&mut self) -> Result<(), Refused> {
        match self.current().and_then(|f| f.default.clone()) {
            Some(default) => self.set(default),
            None => Err(Refused(vec!["there is no default".to_owned()])),
        }
    }

    /// The values so far, checked as a whole (the last word before they
    /// are sent: required properties, cross-property rules).
    pub fn problems(&self) -> Vec<String> {
        self.schema
            .problems(Some(&self.values))
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn set(&mut self, value: Value) -> Result<(), Refused> {
        let Some(field) = self.current() else {
            return Ok(());
        };
        let name = field.name.clone();
        let mut trial = self.values.clone();
        trial.insert(name.clone(), value);
        let problems = self.schema.problems_of(&trial, &name);
        if !problems.is_empty() {
            return Err(Refused(problems.into_iter().map(|p| p.message).collect()));
        }
        self.values = trial;
        self.picked.clear();
        self.at += 1;
        Ok(())
    }
}

fn field(name: &str, property: &Value, required: bool) -> Field {
    let text = |key: &str| {
        property
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    Field {
        name: name.to_owned(),
        title: text("title"),
        description: text("description"),
        kind: kind(property),
        required,
        default: property.get("default").cloned(),
        format: text("format"),
    }
}

fn kind(property: &Value) -> Kind {
    if let Some(choices) = choices(property) {
        return Kind::Choice(choices);
    }
    let types: Vec<&str> = match property.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        ["string"] => Kind::Text,
        ["integer"] => Kind::Integer,
        ["number"] => Kind::Number,
        ["boolean"] => Kind::Boolean,
        ["array"] => match property.get("items").and_then(choices) {
            Some(choices) => Kind::Several(choices),
            None => Kind::Json,
        },
        _ => Kind::Json,
    }
}

/// The values of an `enum` (labelled by `enumNames` where given), or of a
/// `oneOf`/`anyOf` of `const`s (labelled by their titles).
fn choices(schema: &Value) -> Option<Vec<(String, Value)>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names = schema.get("enumNames").and_then(Value::as_array);
        return Some(
            values
                .iter()
                .enumerate()
                .map(|(i, value)| {
                    let label = names
                        .and_then(|n| n.get(i))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| label_of(value));
                    (label, value.clone())
                })
                .collect(),
        );
    }
    let options = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)?;
    options
        .iter()
        .map(|option| {
            let value = option.get("const")?.clone();
            let label = option
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| label_of(&value));
            Some((label, value))
        })
        .collect()
}

fn label_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(schema: Value) -> Form {
        let Value::Object(schema) = schema else {
            panic!("an object schema")
        };
        Form::new(Arc::new(Schema::new(Arc::new(schema))))
    }

    fn sample() -> Form {
        form(json!({
            "type": "object",
            "properties": {
                "note": {"type": "string", "maxLength": 5},
                "count": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "ok": {"type": "boolean"},
                "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}}
            },
            "required": ["count", "mode"]
        }))
    }

    #[test]
    fn required_properties_come_first_and_kinds_follow_the_schema() {
        let form = sample();
        let names: Vec<&str> = form.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["count", "mode", "note", "ok", "tags"]);
        assert_eq!(form.fields[0].kind, Kind::Integer);
        assert!(matches!(form.fields[1].kind, Kind::Choice(ref c) if c.len() == 2));
        assert_eq!(form.fields[3].kind, Kind::Boolean);
        assert!(matches!(form.fields[4].kind, Kind::Several(ref c) if c.len() == 3));
    }

    #[test]
    fn values_are_checked_by_the_schema_one_at_a_time() {
        let mut form = sample();
        let refused = form.answer_text("42").unwrap_err();
        assert!(refused.0[0].contains("maximum of 10"), "{refused:?}");
        assert!(form.answer_text("seven").is_err());
        form.answer_text("7").unwrap();
        assert_eq!(form.current().unwrap().name, "mode");
        assert!(!form.skip(), "required");
        form.choose(1).unwrap();
        assert!(form.answer_text("too long").is_err());
        assert!(form.skip());
        form.choose(0).unwrap();
        form.choose(2).unwrap();
        form.choose(1).unwrap();
        form.choose(0).unwrap();
        form.choose(1).unwrap();
        form.done().unwrap();
        assert!(form.current().is_none());
        assert_eq!(
            Value::Object(form.values().clone()),
            json!({"count": 7, "mode": "slow", "ok": true, "tags": ["c", "a"]})
        );
        assert!(form.problems().is_empty());
    }

    #[test]
    fn defaults_and_titled_choices() {
        let mut form = form(json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "default": 3},
                "c": {"oneOf": [{"const": "r", "title": "Red"}, {"const": "g", "title": "Green"}]}
            }
        }));
        form.use_default().unwrap();
        assert_eq!(
            form.current().unwrap().kind,
            Kind::Choice(vec![
                ("Red".into(), json!("r")),
                ("Green".into(), json!("g"))
            ])
        );
        form.answer_text("green").unwrap();
        assert_eq!(
            Value::Object(form.values().clone()),
            json!({"n": 3, "c": "g"})
        );
    }
}
