//! CSV downloads: a header row, then one row per item of a database stream, written as the rows
//! arrive (the export is never held in memory).
//!
//! Cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return
//! first, also behind leading whitespace or invisible characters such as U+FEFF or U+200B, which
//! spreadsheets skip) get a leading `'`: names and emails are chosen by users, and an export is
//! opened in spreadsheets (OWASP "CSV injection").

use axum::{
    body::{Body, Bytes},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::{StreamExt, stream::BoxStream};

use crate::error::{ApiError, Result};

/// Characters a spreadsheet may skip before reading a formula: whitespace, format characters
/// (zero-width spaces and joiners, the byte-order mark, direction marks) and other controls.
fn skipped(c: char) -> bool {
    c.is_whitespace() || c.is_control() || shared::domain::is_invisible(c)
}

fn sanitize(cell: &str) -> std::borrow::Cow<'_, str> {
    let first_visible = cell.trim_start_matches(|c: char| skipped(c) && c != '\t' && c != '\r');
    if cell.starts_with(['\t', '\r']) || first_visible.starts_with(['=', '+', '-', '@', '\t', '\r'])
    {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// One CSV record (with its line end).
fn record<S: AsRef<str>>(cells: &[S]) -> std::io::Result<Bytes> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(256));
    w.write_record(cells.iter().map(|c| sanitize(c.as_ref()).into_owned()))?;
    w.into_inner()
        .map(Bytes::from)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A `200 text/csv` attachment: `header`, then `to_cells` of every row.
///
/// The first row is read before answering, so a database that is down gives a proper error
/// (503) instead of a truncated download; a failure later aborts the body (and is logged).
pub async fn response<T: Send + 'static>(
    filename: &str,
    header_row: &[&str],
    rows: BoxStream<'static, Result<T, sqlx::Error>>,
    to_cells: fn(T) -> Vec<String>,
) -> Result<Response> {
    // fused: an empty export has ended at `next()` and must not be polled again by `chain`
    let mut rows = rows.fuse();
    let first = match rows.next().await {
        Some(Err(e)) => return Err(ApiError::from(e)),
        first => first,
    };
    let rows = futures::stream::iter(first).chain(rows);
    let head = record(header_row).map_err(|e| ApiError::Internal(e.into()))?;
    let body =
        futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
            .chain(rows.map(move |row| match row {
            Ok(row) => record(&to_cells(row)),
            Err(e) => {
                tracing::error!(error = %e, "CSV export aborted: the database failed mid-stream");
                Err(std::io::Error::other(e))
            }
        }));
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused_and_quoting_is_csv() {
        let line = record(&["=1+1", "a,b", "plain", "-2", "say \"hi\""]).unwrap();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "'=1+1,\"a,b\",plain,'-2,\"say \"\"hi\"\"\"\n"
        );
    }

    #[test]
    fn formulas_behind_invisible_characters_are_defused_too() {
        for cell in [
            "\u{FEFF}=HYPERLINK(\"x\")",
            "\u{200B}+1",
            " \u{2060}@SUM(A1)",
            "\u{00A0}-2",
            "\u{202E}=1",
        ] {
            assert!(sanitize(cell).starts_with('\''), "{cell:?}");
        }
        for cell in ["plain", "\u{200B}plain", "a=b"] {
            assert!(!sanitize(cell).starts_with('\''), "{cell:?}");
        }
    }
}
