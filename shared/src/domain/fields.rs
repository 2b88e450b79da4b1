//! Field errors: every invalid field of an input, named the way the client wrote it
//! (`roleIds[1]`), with a message a person can act on.
//!
//! [`from_json_object`] reads a JSON object into a typed request and turns serde's errors into
//! [`FieldErrors`]: it names the field (through `serde_path_to_error`), says what was expected
//! in JSON's words ("a whole number", "an object"), never in Rust's ("u64", "struct
//! PingRequest with 7 elements"), and reports every field of the wrong type, not only the
//! first. A number with no fractional part (`82.0`) is read as the integer it is, as JSON Schema
//! counts it an `integer`: the OpenAPI document calls it valid, so the API takes it.

use std::{collections::HashSet, fmt};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use utoipa::ToSchema;

use super::Invalid;

/// The field name used for the input as a whole (a body that is not an object).
pub const WHOLE_BODY: &str = "body";

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field as the client named it: `email`, `roleIds[1]`, `body` for the whole input.
    pub field: String,
    /// What is wrong with it, e.g. "must be at most 100 characters".
    pub message: String,
}

/// Every invalid field of one input, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// No errors (yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// One invalid field.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Adds an invalid field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// The value of a parse, or `None` with the refusal recorded under `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, Invalid>) -> Option<T> {
        parsed.map_err(|e| self.add(field, e.message())).ok()
    }

    /// Whether every field was valid.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors.
    pub fn as_slice(&self) -> &[FieldError] {
        &self.0
    }

    /// The errors, owned.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// Adds the errors of `more` whose field is not named yet, neither itself nor as the parent
    /// or a child of a named one (`roleIds` and `roleIds[1]`), so a field refused twice (of the
    /// wrong type, then missing) is reported once, while siblings (`quietHours.start`,
    /// `quietHours.end`) are each reported.
    pub fn extend_new(&mut self, more: Self) {
        fn within(child: &str, parent: &str) -> bool {
            child == parent
                || child
                    .strip_prefix(parent)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        }
        for e in more.0 {
            if !self
                .0
                .iter()
                .any(|seen| within(&e.field, &seen.field) || within(&seen.field, &e.field))
            {
                self.0.push(e);
            }
        }
    }

    /// Both values, or the errors of both inputs (for a request read from several parts, such
    /// as a page and a filter).
    pub fn both<A, B>(a: Result<A, Self>, b: Result<B, Self>) -> Result<(A, B), Self> {
        match (a, b) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(mut e), Err(more)) => {
                e.0.extend(more.0);
                Err(e)
            }
        }
    }
}

impl fmt::Display for FieldErrors {
    /// `email: is required; name: must be at most 100 characters`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// Reads a JSON object into `T`, reporting every field serde refuses (see the module doc).
pub fn from_json_object<T: DeserializeOwned>(value: Value) -> Result<T, FieldErrors> {
    match read_json_object(value) {
        (Some(t), errors) if errors.is_empty() => Ok(t),
        (_, errors) => Err(errors),
    }
}

/// Reads a JSON object into `T`, and also returns the `T` read from the fields serde did not
/// refuse (those left out), so the caller can go on to check them: one answer then names the
/// fields of the wrong type and the fields with bad values. `None` when `T` cannot be built
/// without a refused field.
///
/// A refused field is reported, dropped, and the rest read again, so each pass finds the next
/// one. Serde checks for missing fields only once every present one has been read, so a
/// required field missing (or dropped) ends the reading with nothing else left to find.
pub fn read_json_object<T: DeserializeOwned>(value: Value) -> (Option<T>, FieldErrors) {
    if !value.is_object() {
        let message = format!("must be a JSON object, not {}", json_kind(&value));
        return (None, FieldErrors::one(WHOLE_BODY, message));
    }
    let mut value = value;
    integral_numbers_as_integers(&mut value);
    let mut errors = FieldErrors::new();
    let mut dropped = HashSet::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(t) => return (Some(t), errors),
            Err(e) => e,
        };
        let refusal = Refusal::of(e.path(), &e.inner().to_string());
        if refusal.missing && dropped.contains(&refusal.field) {
            // required, and dropped for an error already reported
            return (None, errors);
        }
        errors.add(refusal.field, refusal.message);
        let removed = match (&mut value, refusal.top_key) {
            (Value::Object(map), Some(key)) => map.remove(&key).map(|_| key),
            _ => None,
        };
        match removed {
            Some(key) => {
                dropped.insert(key);
            }
            None => return (None, errors),
        }
    }
}

/// Rewrites every number with no fractional part (`82.0`, `1e2`) as an integer, where one can
/// hold it: JSON Schema counts such numbers as integers, and serde's integer types refuse them.
/// Numbers with a fraction, or too large for 64 bits, are left for serde to refuse.
fn integral_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // 2^64 and -2^63 are exact in f64; an integral value within them converts exactly
            if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *value = Value::from(f as u64);
            } else if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// One serde error, in the client's words.
struct Refusal {
    field: String,
    message: String,
    /// The top-level key to drop before reading again (`None`: reading cannot go on).
    top_key: Option<String>,
    /// A required field was absent.
    missing: bool,
}

impl Refusal {
    fn of(path: &serde_path_to_error::Path, error: &str) -> Self {
        // serde_json appends " at line L column C" when reading text; values carry none
        let error = error.split(" at line ").next().unwrap_or(error);
        let at = path.to_string();
        let top = path.iter().next().and_then(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let child = |name: &str| {
            if top.is_some() {
                format!("{at}.{name}")
            } else {
                name.to_owned()
            }
        };
        if let Some(name) = quoted(error, "missing field `") {
            return Self {
                field: child(name),
                message: "is required".into(),
                top_key: None,
                missing: top.is_none(),
            };
        }
        if let Some(name) = quoted(error, "unknown field `") {
            let expected = error.split_once(", expected ").map(|(_, e)| e);
            // the path already ends at the unknown key
            let ends_at_name = matches!(
                path.iter().next_back(),
                Some(serde_path_to_error::Segment::Map { key }) if key == name
            );
            return Self {
                field: if ends_at_name { at } else { child(name) },
                message: match expected {
                    Some(e) => format!("is not a field here; expected {}", e.replace('`', "")),
                    None => "is not a field here; there are none".into(),
                },
                top_key: top.clone().or_else(|| Some(name.to_owned())),
                missing: false,
            };
        }
        let field = if top.is_some() {
            at
        } else {
            WHOLE_BODY.to_owned()
        };
        Self {
            field,
            message: message_of(error),
            top_key: top,
            missing: false,
        }
    }
}

/// The name in `` prefix`name` ``.
fn quoted<'a>(error: &'a str, prefix: &str) -> Option<&'a str> {
    error.strip_prefix(prefix)?.split('`').next()
}

fn message_of(error: &str) -> String {
    if let Some(rest) = error.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!("must be {}, not {}", expected_kind(expected), got_kind(got));
    }
    if let Some(rest) = error.strip_prefix("invalid value: ") {
        let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        return match integer_range(expected) {
            Some((min, max)) => format!("must be a whole number from {min} to {max}"),
            None => format!("must be {}", expected_kind(expected)),
        };
    }
    if error.starts_with("invalid length ") {
        return "has the wrong number of items".into();
    }
    if let Some(rest) = error.strip_prefix("unknown variant `") {
        let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
        return format!("must be {}", expected.replace('`', ""));
    }
    if error.contains("UUID") {
        return "must be a UUID".into();
    }
    error.to_owned()
}

/// What serde expected, in JSON's words.
fn expected_kind(expected: &str) -> String {
    if integer_range(expected).is_some() {
        return "a whole number".into();
    }
    match expected {
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        e if e.starts_with("struct ") || e.starts_with("tuple") => "an object".into(),
        e if e.contains("UUID") => "a UUID".into(),
        "" => "something else".into(),
        e => e.to_owned(),
    }
}

/// What was sent, by kind only (the value itself may be long or secret).
fn got_kind(got: &str) -> &'static str {
    match got.split([' ', '`']).next().unwrap_or_default() {
        "string" | "character" => "a string",
        "integer" | "floating" => "a number",
        "boolean" => "a boolean",
        "null" | "unit" => "null",
        "sequence" => "an array",
        "map" => "an object",
        _ => "another type",
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn integer_range(ty: &str) -> Option<(i128, i128)> {
    Some(match ty {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "usize" => (0, u64::MAX.into()),
        "i8" => (i8::MIN.into(), i8::MAX.into()),
        "i16" => (i16::MIN.into(), i16::MAX.into()),
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" | "isize" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        enabled: bool,
        #[serde(default)]
        ids: Vec<uuid::Uuid>,
    }

    fn refused(v: Value) -> Vec<(String, String)> {
        from_json_object::<Sample>(v)
            .unwrap_err()
            .into_vec()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn a_valid_object_is_read() {
        let s: Sample = from_json_object(json!({"name": "a", "count": 2})).unwrap();
        assert_eq!((s.name.as_str(), s.count), ("a", 2));
    }

    #[test]
    fn every_field_of_the_wrong_type_is_named_in_json_words() {
        let errors = refused(json!({
            "name": "a", "count": "many", "enabled": "yes", "ids": ["x"], "colour": 1
        }));
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields.len(), 4, "{errors:?}");
        for f in ["count", "enabled", "ids[0]", "colour"] {
            assert!(fields.contains(&f), "{f} is named: {errors:?}");
        }
        let message = |f: &str| &errors.iter().find(|(n, _)| n == f).unwrap().1;
        assert_eq!(message("count"), "must be a whole number, not a string");
        assert_eq!(message("enabled"), "must be a boolean, not a string");
        assert_eq!(message("ids[0]"), "must be a UUID");
        assert!(message("colour").starts_with("is not a field here; expected"));
    }

    #[test]
    fn a_missing_required_field_is_named() {
        assert_eq!(
            refused(json!({"count": 1})),
            [("name".to_owned(), "is required".to_owned())]
        );
        // dropped for its type, a required field is not reported missing a second time
        assert_eq!(
            refused(json!({"name": 5})),
            [(
                "name".to_owned(),
                "must be a string, not a number".to_owned()
            )]
        );
    }

    #[test]
    fn the_fields_serde_accepted_are_read_for_further_checks() {
        let (rest, errors) =
            read_json_object::<Sample>(json!({"name": "a", "count": "many", "enabled": true}));
        let rest = rest.expect("built without `count`");
        assert_eq!(
            (rest.name.as_str(), rest.count, rest.enabled),
            ("a", 0, true)
        );
        assert_eq!(errors.as_slice().len(), 1);

        let mut errors = errors;
        errors.extend_new(FieldErrors::one("count", "is required"));
        errors.extend_new(FieldErrors::one("name", "is too short"));
        let fields: Vec<_> = errors.as_slice().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["count", "name"], "count is named once");
    }

    #[test]
    fn numbers_without_a_fraction_are_integers_as_json_schema_says() {
        let s: Sample = from_json_object(json!({"name": "a", "count": 82.0})).unwrap();
        assert_eq!(s.count, 82);
        let s: Sample = from_json_object(json!({"name": "a", "count": 1e2})).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(
            refused(json!({"name": "a", "count": 82.5})),
            [(
                "count".to_owned(),
                "must be a whole number, not a number".to_owned()
            )]
        );
        assert_eq!(
            refused(json!({"name": "a", "count": -1.0})),
            [(
                "count".to_owned(),
                "must be a whole number from 0 to 4294967295".to_owned()
            )]
        );
    }

    #[test]
    fn out_of_range_integers_name_the_range() {
        assert_eq!(
            refused(json!({"name": "a", "count": -1})),
            [(
                "count".to_owned(),
                "must be a whole number from 0 to 4294967295".to_owned()
            )]
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_says_so_without_rust_internals() {
        for (v, kind) in [
            (json!([]), "an array"),
            (json!([1, 2, 3]), "an array"),
            (json!("x"), "a string"),
            (json!(null), "null"),
        ] {
            let errors = refused(v);
            assert_eq!(
                errors,
                [(
                    "body".to_owned(),
                    format!("must be a JSON object, not {kind}")
                )]
            );
        }
    }

    #[test]
    fn errors_combine_and_read_as_one_message() {
        let both = FieldErrors::both::<(), ()>(
            Err(FieldErrors::one("page", "must be at least 1")),
            Err(FieldErrors::one("status", "must be ACTIVE")),
        )
        .unwrap_err();
        assert_eq!(
            both.to_string(),
            "page: must be at least 1; status: must be ACTIVE"
        );
    }
}
