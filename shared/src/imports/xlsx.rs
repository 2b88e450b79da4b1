//! XLSX files: a pre-flight [`guard`] over the ZIP container, then `calamine`'s streaming cell
//! reader.
//!
//! # Limits
//! `calamine` streams a worksheet's cells, but holds the workbook's shared-strings table (every
//! distinct text of the workbook) in memory, and reserves room for the count the table
//! declares before reading it: a 2 KB file declaring `uniqueCount="999999999999"` would make it
//! reserve terabytes and abort the process (measured with calamine 0.38: allocation failure, not
//! a panic). So before calamine opens a file, [`guard`] decompresses every entry once, counting:
//!
//! - shared strings at most [`MAX_SHARED_STRINGS_BYTES`] uncompressed (about 300,000 rows of
//!   distinct emails and names; larger imports go as CSV), and a declared count no larger than
//!   the table could hold;
//! - the worksheets at most [`MAX_SHEET_BYTES`], other parts at most [`MAX_PART_BYTES`], all
//!   together at most [`MAX_TOTAL_BYTES`] (a zip bomb stops at the cap, not at the disk);
//! - no text run between two tags longer than [`super::MAX_RECORD_BYTES`].
//!
//! Only the first sheet, or the one named, is read; formulas are read as their cached values.

use std::{
    borrow::Cow,
    fs::File,
    io::{BufReader, Read},
    ops::ControlFlow,
    path::Path,
};

use calamine::{DataRef, Reader as _, Xlsx};

use super::{Cell, FileError, Format, Layout, MAX_COLUMNS, MAX_RECORD_BYTES, Row};

/// What [`rows`] calls with each row: its index, its cells, the sheet's last (row, column).
type OnRow<'a> = dyn FnMut(u32, Vec<Cell>, (u32, u32)) -> ControlFlow<()> + 'a;

/// Largest shared-strings part, uncompressed.
pub const MAX_SHARED_STRINGS_BYTES: u64 = 32 * 1024 * 1024;
/// Largest worksheet part, uncompressed.
pub const MAX_SHEET_BYTES: u64 = 1024 * 1024 * 1024;
/// Largest other part (styles, workbook, relationships, ...), uncompressed.
pub const MAX_PART_BYTES: u64 = 16 * 1024 * 1024;
/// Largest workbook, all parts uncompressed.
pub const MAX_TOTAL_BYTES: u64 = 1536 * 1024 * 1024;
/// Most parts in the container.
pub const MAX_PARTS: usize = 10_000;

fn damaged(e: impl std::fmt::Display) -> FileError {
    FileError::Unreadable(format!("the XLSX workbook is damaged: {e}"))
}

/// Checks the container as described in the module's documentation.
pub fn guard(path: &Path) -> Result<(), FileError> {
    let file = File::open(path).map_err(damaged)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(damaged)?;
    if zip.len() > MAX_PARTS {
        return Err(damaged(format!("it has more than {MAX_PARTS} parts")));
    }
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(damaged)?;
        let name = entry.name().map_err(damaged)?.to_ascii_lowercase();
        let shared = name.ends_with("sharedstrings.xml");
        let sheet = name.contains("worksheets/");
        let cap = if shared {
            MAX_SHARED_STRINGS_BYTES
        } else if sheet {
            MAX_SHEET_BYTES
        } else {
            MAX_PART_BYTES
        };
        let mut read = 0u64;
        let mut run = 0usize;
        let mut declared: Option<u64> = None;
        let mut head = Vec::new();
        loop {
            let n = entry.read(&mut buf).map_err(damaged)?;
            if n == 0 {
                break;
            }
            read += n as u64;
            total += n as u64;
            if read > cap {
                return Err(if shared {
                    FileError::Unreadable(format!(
                        "the workbook's shared strings exceed {} MiB uncompressed: import \
                         this many rows as CSV",
                        MAX_SHARED_STRINGS_BYTES >> 20
                    ))
                } else {
                    damaged(format!("a part exceeds {} MiB uncompressed", cap >> 20))
                });
            }
            if total > MAX_TOTAL_BYTES {
                return Err(damaged(format!(
                    "it exceeds {} MiB uncompressed",
                    MAX_TOTAL_BYTES >> 20
                )));
            }
            if shared || sheet {
                for &b in &buf[..n] {
                    match b {
                        b'<' | b'>' => run = 0,
                        _ => run += 1,
                    }
                    if run > MAX_RECORD_BYTES {
                        return Err(FileError::Unreadable(format!(
                            "a cell is longer than {} KiB",
                            MAX_RECORD_BYTES / 1024
                        )));
                    }
                }
            }
            if shared && head.len() < 4096 {
                head.extend_from_slice(&buf[..n.min(4096 - head.len())]);
                declared = declared.or_else(|| unique_count(&head));
            }
        }
        // calamine reserves this many strings up front: no more than the part could hold (an
        // entry `<si><t/></si>` takes at least 13 bytes)
        if let Some(count) = declared
            && count > read / 13 + 16
        {
            return Err(damaged(format!(
                "it declares {count} shared strings in {read} bytes"
            )));
        }
    }
    Ok(())
}

/// The `uniqueCount` attribute of the `sst` element in `head`, if complete there.
fn unique_count(head: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(head);
    let at = text.find("uniqueCount=")? + "uniqueCount=".len();
    let rest = text[at..].strip_prefix(['"', '\''])?;
    let end = rest.find(['"', '\''])?;
    // an unparsable count is ignored by calamine too
    Some(rest[..end].trim().parse().unwrap_or(0))
}

fn open(path: &Path) -> Result<Xlsx<BufReader<File>>, FileError> {
    let file = File::open(path).map_err(damaged)?;
    Xlsx::new(BufReader::with_capacity(256 * 1024, file)).map_err(damaged)
}

fn sheet_name(xlsx: &Xlsx<BufReader<File>>, wanted: Option<&str>) -> Result<String, FileError> {
    let names = xlsx.sheet_names();
    match wanted {
        Some(w) => names
            .iter()
            .find(|n| n.as_str() == w)
            .cloned()
            .ok_or_else(|| {
                FileError::Unreadable(format!(
                    "the workbook has no sheet \"{w}\" (it has: {})",
                    names.join(", ")
                ))
            }),
        None => names
            .first()
            .cloned()
            .ok_or(FileError::Empty("the workbook has no sheet")),
    }
}

/// A cell as text (integers without a decimal point, errors as Excel shows them).
fn text(value: &DataRef<'_>) -> Cow<'static, str> {
    match value {
        DataRef::Empty => Cow::Borrowed(""),
        DataRef::String(s) => Cow::Owned(s.trim().to_owned()),
        DataRef::SharedString(s) => Cow::Owned(s.trim().to_owned()),
        DataRef::Int(i) => Cow::Owned(i.to_string()),
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
            Cow::Owned(format!("{}", *f as i64))
        }
        DataRef::Float(f) => Cow::Owned(f.to_string()),
        DataRef::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        DataRef::DateTime(d) => Cow::Owned(d.to_string()),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Cow::Owned(s.clone()),
        DataRef::Error(e) => Cow::Owned(e.to_string()),
    }
}

/// Streams the sheet's rows (row index, cells), blank rows left out.
fn rows(
    path: &Path,
    sheet: Option<&str>,
    mut f: impl FnMut(u32, Vec<Cell>, (u32, u32)) -> ControlFlow<()>,
) -> Result<String, FileError> {
    let mut xlsx = open(path)?;
    let name = sheet_name(&xlsx, sheet)?;
    let mut cells = xlsx.worksheet_cells_reader(&name).map_err(damaged)?;
    let dims = cells.dimensions();
    let end = (dims.end.0, dims.end.1);
    let mut current: Option<u32> = None;
    let mut row: Vec<Cell> = Vec::new();
    let flush = |index: Option<u32>, row: &mut Vec<Cell>, f: &mut OnRow<'_>| match index {
        Some(i) if row.iter().any(|c| matches!(c, Ok(s) if !s.is_empty())) => {
            f(i, std::mem::take(row), end)
        }
        _ => {
            row.clear();
            ControlFlow::Continue(())
        }
    };
    while let Some(cell) = cells.next_cell().map_err(damaged)? {
        let (r, c) = cell.get_position();
        if current != Some(r) {
            if flush(current, &mut row, &mut f).is_break() {
                return Ok(name);
            }
            current = Some(r);
        }
        let c = c as usize;
        if c >= MAX_COLUMNS {
            continue;
        }
        if row.len() <= c {
            row.resize(c + 1, Ok(String::new()));
        }
        row[c] = Ok(text(cell.get_value()).into_owned());
    }
    let _ = flush(current, &mut row, &mut f);
    Ok(name)
}

/// [`super::inspect`] for XLSX: [`guard`], then the header (the first row that is not blank)
/// and the declared size.
pub(super) fn inspect(path: &Path, sheet: Option<&str>) -> Result<Layout, FileError> {
    guard(path)?;
    let mut header: Option<(u32, Vec<String>)> = None;
    let mut has_rows = false;
    let mut last_row = 0u32;
    let name = rows(path, sheet, |index, cells, end| {
        last_row = end.0;
        if header.is_none() {
            header = Some((
                index,
                cells.into_iter().map(|c| c.unwrap_or_default()).collect(),
            ));
            ControlFlow::Continue(())
        } else {
            has_rows = true;
            ControlFlow::Break(())
        }
    })?;
    let (index, headers) = header.ok_or(FileError::Empty("the sheet is empty"))?;
    if !has_rows {
        return Err(FileError::Empty("the sheet has a header but no rows"));
    }
    Ok(Layout {
        format: Format::Xlsx,
        delimiter: None,
        sheet: Some(name),
        headers,
        rows: u64::from(last_row.saturating_sub(index)),
        rows_exact: false,
    })
}

/// [`super::for_each_row`] for XLSX.
pub(super) fn for_each_row(
    path: &Path,
    layout: &Layout,
    mut f: impl FnMut(Row) -> ControlFlow<()>,
) -> Result<(), FileError> {
    let mut seen_header = false;
    rows(path, layout.sheet.as_deref(), |index, cells, _| {
        if !seen_header {
            seen_header = true;
            return ControlFlow::Continue(());
        }
        f(Row {
            number: u64::from(index) + 1,
            cells,
        })
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_count_is_read_from_the_head() {
        assert_eq!(
            unique_count(br#"<sst xmlns="x" count="3" uniqueCount="2"><si>"#),
            Some(2)
        );
        assert_eq!(
            unique_count(b"<sst count='3' uniqueCount='999999999999'>"),
            Some(999_999_999_999)
        );
        assert_eq!(unique_count(b"<sst>"), None);
    }
}
