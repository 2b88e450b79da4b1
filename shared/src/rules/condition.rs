//! Rule conditions in CEL, the Common Expression Language (the `cel` crate), over one variable:
//! `event`, with `event.type`, `event.source`, `event.occurredAt` (a timestamp) and
//! `event.payload` (the event's JSON object).
//!
//! A condition is compiled when its rule is saved: a syntax error, an unknown variable or one
//! past the size limits is refused with a message and a position. CEL cannot do I/O or loop
//! without bound; what an evaluation can cost is bounded here by the source's size, its node
//! count and one level of comprehension (`all`, `exists`, `map`, `filter`) over lists of an
//! event payload that is itself bounded in size. An evaluation error (a missing field, a wrong
//! type) is no match: the caller counts it and records it on the rule.
//!
//! The CEL standard library (its functions, macros and types: the [`Env`]) is built once per
//! process and shared, read-only, by every evaluation; each evaluation gets a context of its
//! own holding only the event, which it borrows (see [`EventInput`]). Nothing one evaluation
//! binds is seen by another.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use cel::{
    Context, Env, Program, Value,
    common::{
        ast::{EntryExpr, Expr, IdedExpr},
        value::{CowVal, Val},
    },
    context::VariableResolver,
};
use chrono::{DateTime, Utc};

/// Longest condition source (characters).
pub const MAX_CONDITION: usize = 2_000;
/// Most nodes a compiled condition may have.
pub const MAX_NODES: usize = 400;
/// Comprehensions may not nest (one loop over a payload list, never a loop in a loop).
pub const MAX_COMPREHENSION_DEPTH: usize = 1;

/// The one variable a condition can read.
pub const VARIABLE: &str = "event";

/// The CEL standard library, built once per process (building it registers every standard
/// function and type: most of an evaluation's cost when done per call).
static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A condition refused at compile time, with where (1-based line and column, when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    /// What is wrong.
    pub message: String,
    /// Line of the error (1-based).
    pub line: Option<u32>,
    /// Column of the error (1-based).
    pub column: Option<u32>,
}

impl std::fmt::Display for ConditionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{} (line {l}, column {c})", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl ConditionError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line: None,
            column: None,
        }
    }

    fn at(message: impl Into<String>, source: &str, offset: Option<u32>) -> Self {
        let (line, column) = offset.map_or((None, None), |o| {
            let (l, c) = line_column(source, o as usize);
            (Some(l), Some(c))
        });
        Self {
            message: message.into(),
            line,
            column,
        }
    }
}

/// 1-based line and column of character `offset` in `source`.
fn line_column(source: &str, offset: usize) -> (u32, u32) {
    let (mut line, mut column) = (1u32, 1u32);
    for c in source.chars().take(offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// A compiled condition (cheap to clone).
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// Compiles `source`; see the module's documentation for what is refused.
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        if source.trim().is_empty() {
            return Err(ConditionError::new("must not be blank"));
        }
        if source.chars().count() > MAX_CONDITION {
            return Err(ConditionError::new(format!(
                "must be at most {MAX_CONDITION} characters"
            )));
        }
        if source.contains('\0') {
            return Err(ConditionError::new("must not contain NUL characters"));
        }
        let program = Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let (line, column) = first.map_or((None, None), |e| {
                (
                    u32::try_from(e.pos.0).ok().filter(|l| *l > 0),
                    // the parser's columns are 0-based
                    u32::try_from(e.pos.1).ok().map(|c| c + 1),
                )
            });
            ConditionError {
                message: first.map_or_else(|| "syntax error".to_owned(), |e| e.msg.clone()),
                line,
                column,
            }
        })?;
        let mut check = Check {
            source,
            program: &program,
            bound: Vec::new(),
            nodes: 0,
            depth: 0,
        };
        check.expr(program.expression())?;
        Ok(Self {
            source: source.into(),
            program: Arc::new(program),
        })
    }

    /// The source it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against an event: `Ok(true)` on a match; an evaluation error, or a result
    /// that is not a boolean, is `Err` with a readable reason.
    pub fn evaluate(&self, event: &EventInput) -> Result<bool, String> {
        // a fresh root over the shared library: it holds no variable, only the event's resolver
        let mut context = Context::with_env(Arc::clone(&STDLIB));
        context.set_variable_resolver(event);
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the condition gave {:?}, not a boolean",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Walks a compiled condition: free variables, node count, comprehension depth.
struct Check<'a> {
    source: &'a str,
    program: &'a Program,
    /// Names bound by the enclosing comprehensions.
    bound: Vec<String>,
    nodes: usize,
    depth: usize,
}

impl Check<'_> {
    fn error_at(&self, e: &IdedExpr, message: String) -> ConditionError {
        let offset = self.program.source_info().offset_for(e.id).map(|o| o.0);
        ConditionError::at(message, self.source, offset)
    }

    fn expr(&mut self, e: &IdedExpr) -> Result<(), ConditionError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.error_at(e, format!("is too complex (more than {MAX_NODES} terms)")));
        }
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => {
                if name == VARIABLE || self.bound.iter().any(|b| b == name) {
                    Ok(())
                } else {
                    Err(self.error_at(
                        e,
                        format!("unknown variable `{name}`: a condition can read only `event`"),
                    ))
                }
            }
            Expr::Select(s) => self.expr(&s.operand),
            Expr::Call(c) => {
                if let Some(t) = &c.target {
                    self.expr(t)?;
                }
                c.args.iter().try_for_each(|a| self.expr(a))
            }
            Expr::List(l) => l.elements.iter().try_for_each(|x| self.expr(x)),
            Expr::Map(m) => m.entries.iter().try_for_each(|x| self.entry(&x.expr)),
            Expr::Struct(s) => s.entries.iter().try_for_each(|x| self.entry(&x.expr)),
            Expr::Comprehension(c) => {
                if self.depth >= MAX_COMPREHENSION_DEPTH {
                    return Err(self.error_at(
                        e,
                        "must not nest `all`, `exists`, `exists_one`, `map` or `filter`".into(),
                    ));
                }
                self.expr(&c.iter_range)?;
                self.expr(&c.accu_init)?;
                let before = self.bound.len();
                self.bound.push(c.iter_var.clone());
                self.bound.extend(c.iter_var2.clone());
                self.bound.push(c.accu_var.clone());
                self.depth += 1;
                let inner = [&c.loop_cond, &c.loop_step, &c.result]
                    .into_iter()
                    .try_for_each(|x| self.expr(x));
                self.depth -= 1;
                self.bound.truncate(before);
                inner
            }
        }
    }

    fn entry(&mut self, e: &EntryExpr) -> Result<(), ConditionError> {
        match e {
            EntryExpr::StructField(f) => self.expr(&f.value),
            EntryExpr::MapEntry(m) => {
                self.expr(&m.key)?;
                self.expr(&m.value)
            }
        }
    }
}

/// An event as conditions see it, converted once and evaluated by every rule, which borrow it
/// (no copy per evaluation).
#[derive(Debug, Clone)]
pub struct EventInput {
    value: Box<dyn Val>,
}

impl VariableResolver for EventInput {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        (variable == VARIABLE).then(|| CowVal::Borrowed(self.value.as_ref()))
    }
}

impl EventInput {
    /// The `event` variable: `type`, `source` (null when absent), `occurredAt` (a timestamp)
    /// and `payload`.
    pub fn new(
        event_type: &str,
        source: Option<&str>,
        occurred_at: DateTime<Utc>,
        payload: &serde_json::Value,
    ) -> Self {
        let payload = cel::to_value(payload).unwrap_or(Value::Null);
        let mut map: HashMap<String, Value> = HashMap::with_capacity(4);
        map.insert("type".into(), event_type.into());
        map.insert(
            "source".into(),
            source.map_or(Value::Null, |s| s.to_owned().into()),
        );
        map.insert(
            "occurredAt".into(),
            Value::Timestamp(occurred_at.fixed_offset()),
        );
        map.insert("payload".into(), payload);
        Self {
            // a map of plain values always converts
            value: <Box<dyn Val>>::try_from(Value::from(map))
                .unwrap_or_else(|_| Box::new(cel::common::types::CelNull)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventInput {
        EventInput::new(
            "transfer.failed",
            Some("bank"),
            "2026-12-01T10:00:00Z".parse().unwrap(),
            &serde_json::json!({"amount": 1500, "currency": "EUR", "fee": 2.5,
                                "items": [1, 2, 3], "who": {"name": "Ada"}}),
        )
    }

    fn eval(src: &str) -> Result<bool, String> {
        Condition::compile(src)
            .expect("compiles")
            .evaluate(&event())
    }

    #[test]
    fn conditions_read_the_event_type_source_time_and_payload() {
        assert_eq!(
            eval(r#"event.payload.amount > 1000 && event.payload.currency == "EUR""#),
            Ok(true)
        );
        assert_eq!(eval(r#"event.payload.currency == "USD""#), Ok(false));
        assert_eq!(eval(r#"event.type.startsWith("transfer.")"#), Ok(true));
        assert_eq!(eval(r#"event.source == "bank""#), Ok(true));
        assert_eq!(eval(r#"event.payload.who.name == "Ada""#), Ok(true));
        assert_eq!(eval("event.payload.items.all(i, i > 0)"), Ok(true));
        assert_eq!(eval("event.payload.fee < 3.0"), Ok(true));
        assert_eq!(
            eval(r#"event.occurredAt < timestamp("2027-01-01T00:00:00Z")"#),
            Ok(true)
        );
        assert_eq!(eval("has(event.payload.missing)"), Ok(false));
    }

    #[test]
    fn evaluation_errors_are_reasons_not_panics() {
        assert!(eval("event.payload.missing > 1").is_err());
        assert!(eval(r#"event.payload.currency > 1"#).is_err());
        let not_bool = eval("event.payload.amount").unwrap_err();
        assert!(not_bool.contains("not a boolean"), "{not_bool}");
    }

    #[test]
    fn syntax_errors_and_unknown_variables_are_refused_with_a_position() {
        let e = Condition::compile("event.payload.amount >").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.column.is_some(), "{e:?}");
        let e = Condition::compile("event.type == \"a\" &&\n  user.admin").unwrap_err();
        assert!(e.message.contains("unknown variable `user`"), "{e:?}");
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        // a comprehension's own variable is not unknown
        assert!(Condition::compile("event.payload.items.exists(x, x == 2)").is_ok());
        assert!(Condition::compile("x == 1").is_err());
        assert!(Condition::compile("  ").is_err());
    }

    #[test]
    fn evaluations_share_the_library_but_never_an_event() {
        // one program, many events, on several threads at once: each sees only its own event
        let c =
            Condition::compile("event.payload.n + event.payload.n == event.payload.twice").unwrap();
        let other = Condition::compile("has(event.payload.leak)").unwrap();
        std::thread::scope(|s| {
            for t in 0..4_i64 {
                let (c, other) = (&c, &other);
                s.spawn(move || {
                    for n in 0..200_i64 {
                        let v = t * 1000 + n;
                        let good = EventInput::new(
                            "a.b",
                            None,
                            Utc::now(),
                            &serde_json::json!({"n": v, "twice": v * 2, "leak": true}),
                        );
                        let bad = EventInput::new(
                            "a.b",
                            None,
                            Utc::now(),
                            &serde_json::json!({"n": v, "twice": v * 2 + 1}),
                        );
                        assert_eq!(c.evaluate(&good), Ok(true));
                        assert_eq!(c.evaluate(&bad), Ok(false));
                        // nothing of the previous evaluation's event is left behind
                        assert_eq!(other.evaluate(&bad), Ok(false));
                        assert_eq!(other.evaluate(&good), Ok(true));
                    }
                });
            }
        });
        // the shared library still has no variable but the event, and the standard functions
        let e = event();
        assert!(eval("size(event.payload.items) == 3").unwrap());
        assert!(
            Condition::compile("event.type == \"x\"")
                .unwrap()
                .evaluate(&e)
                .is_ok()
        );
        let missing = Context::with_env(Arc::clone(&STDLIB));
        assert!(
            Program::compile("event")
                .unwrap()
                .execute(&missing)
                .is_err(),
            "the shared library holds no event of its own"
        );
    }

    #[test]
    fn conditions_past_the_size_limits_are_refused() {
        let long = format!("event.type == \"{}\"", "a".repeat(MAX_CONDITION));
        assert!(Condition::compile(&long).is_err());
        let many = vec!["event.a==1"; 100].join("||");
        let e = Condition::compile(&many).unwrap_err();
        assert!(e.message.contains("too complex"), "{e:?}");
        let nested = "event.payload.items.all(x, event.payload.items.all(y, x == y))";
        let e = Condition::compile(nested).unwrap_err();
        assert!(e.message.contains("must not nest"), "{e:?}");
    }
}
