//! Optional query-string filters (`?role=&status=&from=`) and their OpenAPI schemas.
//!
//! An absent or empty filter is no filter: an HTML form sends `role=` for a field left blank.
//! Anything else must be a value of the filter's kind exactly as the document describes it (a
//! hyphenated UUID, an RFC 3339 `date-time`, one of the listed words): no trimming, no other
//! spellings, so the API accepts what its OpenAPI document allows and refuses the rest. The
//! document says "the value, or the empty string" with the schemas built here.

use chrono::{DateTime, Utc};
use shared::domain::{Invalid, parse_instant, parse_uuid};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type},
    },
};
use uuid::Uuid;

/// The filter's value, `None` when absent or empty.
pub fn given(raw: Option<&str>) -> Option<&str> {
    raw.filter(|v| !v.is_empty())
}

/// An optional UUID filter; `what` names the id in the refusal ("a role id").
pub fn uuid(raw: Option<&str>, what: &str) -> Result<Option<Uuid>, Invalid> {
    given(raw)
        .map(|v| parse_uuid(v).map_err(|_| Invalid::new(format!("must be {what} (UUID)"))))
        .transpose()
}

/// An optional RFC 3339 instant filter.
pub fn instant(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, Invalid> {
    given(raw).map(parse_instant).transpose()
}

/// The empty string: "no filter".
fn empty() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([""]))
        .description(Some("Empty: no filter."))
}

/// A string of `format`, or empty.
fn format_or_empty(format: KnownFormat) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(format))),
        )
        .item(empty())
        .into()
}

/// The OpenAPI schema of [`uuid`]: a UUID, or empty (`#[param(value_type = Option<UuidOrEmpty>,
/// inline)]`).
pub struct UuidOrEmpty;

impl PartialSchema for UuidOrEmpty {
    fn schema() -> RefOr<Schema> {
        format_or_empty(KnownFormat::Uuid)
    }
}

impl ToSchema for UuidOrEmpty {}

/// The OpenAPI schema of [`instant`]: an RFC 3339 `date-time`, or empty.
pub struct DateTimeOrEmpty;

impl PartialSchema for DateTimeOrEmpty {
    fn schema() -> RefOr<Schema> {
        format_or_empty(KnownFormat::DateTime)
    }
}

impl ToSchema for DateTimeOrEmpty {}

/// The OpenAPI schema of a filter that takes one of `words`, or empty.
pub fn one_of_or_empty<'a>(words: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(words.into_iter().chain([""])))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_absent_is_no_filter_and_anything_else_is_checked() {
        assert_eq!(uuid(None, "a role id"), Ok(None));
        assert_eq!(uuid(Some(""), "a role id"), Ok(None));
        let id = Uuid::now_v7();
        assert_eq!(uuid(Some(&id.to_string()), "a role id"), Ok(Some(id)));
        for bad in [" ", "admins", &format!(" {id}"), &id.simple().to_string()] {
            let err = uuid(Some(bad), "a role id").unwrap_err();
            assert_eq!(err.message(), "must be a role id (UUID)", "{bad:?}");
        }
        assert_eq!(instant(Some("")), Ok(None));
        assert!(instant(Some("2026-01-01T00:00:00Z")).unwrap().is_some());
        assert!(instant(Some(" ")).is_err());
    }
}
