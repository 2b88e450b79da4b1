//! Notification titles and bodies: tera templates over the event (`{{ event.payload.amount }}`),
//! compiled when the rule is saved and rendered by `process_event`.
//!
//! A rule's author is a project admin, not the platform: what a template can cost is bounded.
//! Only these tags are allowed: `if`/`elif`/`else`, `for` (not nested), `set`, `raw`; only an
//! allow-list of filters that cannot multiply their input (no `replace`, `indent`, `join`, …);
//! and rendering stops at the output limit. Output is plain text: the channels escape it
//! for where it goes (HTML email, JSON).

use std::{io::Write, sync::Arc};

use chrono::{DateTime, SecondsFormat, Utc};

/// Longest title template and rendered title (characters).
pub const MAX_TITLE: usize = 200;
/// Longest body template (characters).
pub const MAX_BODY_TEMPLATE: usize = 4_000;
/// Longest rendered body (bytes).
pub const MAX_BODY: usize = 10_000;

/// Tags a template may use.
const ALLOWED_TAGS: &[&str] = &[
    "if", "elif", "else", "endif", "for", "endfor", "set", "raw", "endraw", "break", "continue",
];
/// Filters a template may use: none of them makes its output much longer than its input.
const ALLOWED_FILTERS: &[&str] = &[
    "default",
    "upper",
    "lower",
    "trim",
    "trim_start",
    "trim_end",
    "capitalize",
    "title",
    "truncate",
    "length",
    "first",
    "last",
    "nth",
    "round",
    "abs",
    "int",
    "float",
    "str",
    "wordcount",
    "get",
];

/// A rule's title and body templates, compiled (cheap to clone).
#[derive(Clone)]
pub struct Templates {
    tera: Arc<tera::Tera>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

/// Which template was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// `title` or `body`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Checks the tags and filters a template uses; returns the first refusal.
fn check_source(source: &str, max: usize) -> Result<(), String> {
    if source.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if source.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    let mut depth = 0usize;
    for tag in source.split("{%").skip(1) {
        let name: String = tag
            .trim_start_matches(['-', ' ', '\t', '\n', '\r'])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !ALLOWED_TAGS.contains(&name.as_str()) {
            return Err(format!(
                "the tag `{name}` is not allowed (allowed: {})",
                ALLOWED_TAGS.join(", ")
            ));
        }
        match name.as_str() {
            "for" => {
                depth += 1;
                if depth > 1 {
                    return Err("`for` loops must not nest".into());
                }
            }
            "endfor" => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    // `| name` applies a filter; a `|` inside a string literal may be refused too (safe side)
    for after in source.split('|').skip(1) {
        let name: String = after
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        if !ALLOWED_FILTERS.contains(&name.as_str()) {
            return Err(format!(
                "the filter `{name}` is not allowed (allowed: {})",
                ALLOWED_FILTERS.join(", ")
            ));
        }
    }
    Ok(())
}

impl Templates {
    /// Compiles a title and a body template.
    pub fn compile(title: &str, body: &str) -> Result<Self, TemplateError> {
        let refuse = |field, message| TemplateError { field, message };
        if title.trim().is_empty() {
            return Err(refuse("title", "must not be blank".into()));
        }
        check_source(title, MAX_TITLE).map_err(|m| refuse("title", m))?;
        check_source(body, MAX_BODY_TEMPLATE).map_err(|m| refuse("body", m))?;
        let mut tera = tera::Tera::default();
        // no HTML escaping: the output is text, escaped by each channel
        tera.autoescape_on(Vec::<&'static str>::new());
        tera.add_raw_template("title", title)
            .map_err(|e| refuse("title", first_line(&e)))?;
        tera.add_raw_template("body", body)
            .map_err(|e| refuse("body", first_line(&e)))?;
        Ok(Self {
            tera: Arc::new(tera),
        })
    }

    /// Renders (title, body) for an event; an error (a missing field without `default`, a
    /// wrong type) is returned as a readable reason. Over-long output is cut.
    pub fn render(&self, event: &EventView<'_>) -> Result<(String, String), String> {
        let mut context = tera::Context::new();
        context.insert("event", event);
        let title = self.render_one("title", &context, MAX_TITLE * 4)?;
        let title: String = crate::domain::one_line(&title, MAX_TITLE);
        let body = self.render_one("body", &context, MAX_BODY)?;
        Ok((title, body))
    }

    fn render_one(
        &self,
        name: &str,
        context: &tera::Context,
        max: usize,
    ) -> Result<String, String> {
        let mut out = Capped {
            buf: Vec::new(),
            max,
            full: false,
        };
        match self.tera.render_to(name, context, &mut out) {
            Ok(()) => {}
            // the output limit stopped the rendering: keep what fits
            Err(_) if out.full => {}
            Err(e) => return Err(format!("{name}: {}", first_line(&e))),
        }
        let mut text = String::from_utf8_lossy(&out.buf).into_owned();
        if out.full {
            text.push('…');
        }
        Ok(text)
    }
}

fn first_line(e: &tera::Error) -> String {
    let text = e.to_string();
    let mut line = text.lines().next().unwrap_or("invalid template").to_owned();
    // tera puts the cause in the source chain
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        line = format!(
            "{line}: {}",
            s.to_string().lines().next().unwrap_or_default()
        );
        source = s.source();
    }
    line
}

/// A writer that takes at most `max` bytes, then fails (which stops the rendering).
struct Capped {
    buf: Vec<u8>,
    max: usize,
    full: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.max - self.buf.len();
        if data.len() > room {
            // cut on a character boundary
            let mut end = room;
            while end > 0 && (data[end] & 0xC0) == 0x80 {
                end -= 1;
            }
            self.buf.extend_from_slice(&data[..end]);
            self.full = true;
            return Err(std::io::Error::other("output limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An event as templates see it: `event.type`, `event.source`, `event.occurredAt` (RFC 3339)
/// and `event.payload`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView<'a> {
    /// The type.
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// The source, if any.
    pub source: Option<&'a str>,
    /// When it happened (RFC 3339).
    pub occurred_at: String,
    /// The payload.
    pub payload: &'a serde_json::Value,
}

impl<'a> EventView<'a> {
    /// The view of an event.
    pub fn new(
        event_type: &'a str,
        source: Option<&'a str>,
        occurred_at: DateTime<Utc>,
        payload: &'a serde_json::Value,
    ) -> Self {
        Self {
            event_type,
            source,
            occurred_at: occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> serde_json::Value {
        serde_json::json!({"amount": 1500, "currency": "EUR", "items": ["a", "b"],
                           "note": "<b>hi</b>"})
    }

    fn render(title: &str, body: &str) -> Result<(String, String), String> {
        let p = payload();
        let view = EventView::new(
            "transfer.failed",
            Some("bank"),
            "2026-12-01T10:00:00Z".parse().unwrap(),
            &p,
        );
        Templates::compile(title, body)
            .map_err(|e| e.message)?
            .render(&view)
    }

    #[test]
    fn templates_render_the_event_as_plain_text() {
        let (title, body) = render(
            "{{ event.type }}: {{ event.payload.amount }} {{ event.payload.currency }}",
            "{% for i in event.payload.items %}[{{ i | upper }}]{% endfor %} {{ event.payload.note }} \
             {{ event.payload.missing | default(value=\"-\") }} {{ event.occurredAt }}",
        )
        .unwrap();
        assert_eq!(title, "transfer.failed: 1500 EUR");
        assert_eq!(body, "[A][B] <b>hi</b> - 2026-12-01T10:00:00.000Z");
    }

    #[test]
    fn a_missing_field_is_a_render_error() {
        let e = render("{{ event.payload.nope }}", "").unwrap_err();
        assert!(e.contains("title"), "{e}");
    }

    #[test]
    fn dangerous_tags_filters_and_nesting_are_refused_at_compile_time() {
        for (title, body, what) in [
            ("t", "{% include \"title\" %}", "include"),
            ("t", "{% macro m() %}{% endmacro %}", "macro"),
            (
                "t",
                "{% for a in x %}{% for b in x %}{% endfor %}{% endfor %}",
                "nest",
            ),
            (
                "t",
                "{{ event.type | replace(from=\"a\", to=\"bbbb\") }}",
                "replace",
            ),
            ("t", "{{ event.payload.items | join(sep=\",\") }}", "join"),
            ("{{ oops", "", "title"),
            ("  ", "", "blank"),
        ] {
            assert!(Templates::compile(title, body).is_err(), "{what}");
        }
        let too_long = "x".repeat(MAX_BODY_TEMPLATE + 1);
        assert_eq!(
            Templates::compile("t", &too_long).unwrap_err().field,
            "body"
        );
    }

    #[test]
    fn output_is_cut_at_the_limit() {
        let (title, body) = render(
            "{% for i in range(end=50) %}{{ event.type }} {% endfor %}",
            "{% for i in range(end=100000) %}{{ event.type }}{% endfor %}",
        )
        .unwrap();
        assert!(title.chars().count() <= MAX_TITLE, "{title}");
        assert!(body.len() <= MAX_BODY + '…'.len_utf8(), "{}", body.len());
        assert!(body.ends_with('…'));
    }
}
