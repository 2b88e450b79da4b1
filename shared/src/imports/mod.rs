//! Reading user-import files: what a file is (by content, [`sniff`]), its pre-flight check
//! ([`inspect`]: the API runs it on the spooled upload before accepting it), the column mapping
//! ([`columns`]) and the row stream the `bulk_import` job validates and writes
//! ([`for_each_row`]).
//!
//! Memory stays flat whatever the file's size: CSV is read record by record (`csv`), after a
//! pre-flight with `csv-core` that bounds every record ([`MAX_RECORD_BYTES`], [`MAX_COLUMNS`]);
//! XLSX cells are streamed by `calamine`'s cell reader. XLSX limits (calamine holds a
//! workbook's shared strings in memory): see [`xlsx`].
//!
//! Everything here is blocking I/O on a local file: callers run it in `spawn_blocking`.

pub mod columns;
mod csv_scan;
pub mod options;
pub mod xlsx;

use std::{fs::File, io::Read, ops::ControlFlow, path::Path};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use columns::{ColumnMap, Field};
pub use options::{ImportOptions, OnDuplicate};

/// Longest CSV record, and longest XLSX cell run, accepted (an unclosed quote otherwise makes
/// the rest of the file one record).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Most columns a row may have.
pub const MAX_COLUMNS: usize = 256;

/// A file's format, told by its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-, semicolon- or tab-separated text, UTF-8 (with or without a byte-order mark).
    Csv,
    /// An Office Open XML workbook.
    Xlsx,
}

impl Format {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Xlsx => "xlsx",
        }
    }

    /// The stored name back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "xlsx" => Some(Self::Xlsx),
            _ => None,
        }
    }
}

/// Why a file cannot be imported: said to the uploader as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    /// Nothing in it (or only a header, or only blank lines).
    #[error("{0}")]
    Empty(&'static str),
    /// Neither CSV nor XLSX, or damaged.
    #[error("{0}")]
    Unreadable(String),
    /// The header lacks a needed column, or names one twice.
    #[error("{0}")]
    Columns(String),
}

impl FileError {
    fn unreadable(msg: impl Into<String>) -> Self {
        Self::Unreadable(msg.into())
    }
}

/// The format of a file whose first bytes are `head` (at least the first 8 KiB, or the whole
/// file if shorter).
pub fn sniff(head: &[u8]) -> Result<Format, FileError> {
    if head.is_empty() {
        return Err(FileError::Empty("the file is empty"));
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Format::Xlsx);
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        return Err(FileError::unreadable(
            "this is an Excel 97-2003 (.xls) file: save it as .xlsx or .csv",
        ));
    }
    if head.starts_with(b"PK") {
        return Err(FileError::unreadable(
            "this is a ZIP archive but not an .xlsx workbook",
        ));
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if text.contains(&0) {
        return Err(FileError::unreadable(
            "the file is neither CSV nor XLSX: it holds binary data",
        ));
    }
    match std::str::from_utf8(text) {
        Ok(_) => Ok(Format::Csv),
        // a multi-byte character cut at the end of the head is fine
        Err(e) if e.error_len().is_none() => Ok(Format::Csv),
        Err(_) => Err(FileError::unreadable(
            "the file is not UTF-8 text (save the CSV as UTF-8) nor an XLSX workbook",
        )),
    }
}

/// How to read a file: what the upload found, the job reads with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    /// The format.
    pub format: Format,
    /// CSV: the field separator (`,`, `;` or a tab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// XLSX: the sheet read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// The header row's cells, trimmed.
    pub headers: Vec<String>,
    /// Data rows: exact for CSV (counted by the pre-flight); for XLSX, the sheet's declared
    /// dimension, which may count blank rows.
    pub rows: u64,
    /// Whether `rows` is exact.
    pub rows_exact: bool,
}

/// What the uploader may say about the file.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// CSV separator; detected from the header line when absent.
    pub delimiter: Option<u8>,
    /// XLSX sheet; the first one when absent.
    pub sheet: Option<String>,
}

/// Checks a whole file before anything is written, and finds how to read it: the format, the
/// separator or sheet, the header, the row count. CSV: every record is bounded; XLSX: see
/// [`xlsx::guard`].
pub fn inspect(path: &Path, options: &ReadOptions) -> Result<Layout, FileError> {
    let mut head = Vec::with_capacity(8192);
    File::open(path)
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .map_err(|e| FileError::unreadable(format!("the file could not be read: {e}")))?;
    match sniff(&head)? {
        Format::Csv => {
            let delimiter = match options.delimiter {
                Some(d) => d,
                None => csv_scan::detect_delimiter(&head),
            };
            let scan = csv_scan::scan(open(path)?, delimiter)?;
            Ok(Layout {
                format: Format::Csv,
                delimiter: Some(char::from(delimiter)),
                sheet: None,
                headers: scan.header,
                rows: scan.records,
                rows_exact: true,
            })
        }
        Format::Xlsx => xlsx::inspect(path, options.sheet.as_deref()),
    }
}

fn open(path: &Path) -> Result<File, FileError> {
    File::open(path).map_err(|e| FileError::unreadable(format!("the file could not be read: {e}")))
}

/// A cell that is not UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotText;

/// A cell: trimmed text, or [`NotText`].
pub type Cell = Result<String, NotText>;

/// One data row: its number as a spreadsheet shows it (the header is row 1) and its cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 2 for the first data row.
    pub number: u64,
    /// The cells, as many as the row has.
    pub cells: Vec<Cell>,
}

impl Row {
    /// The cell at `index`, blank when the row is shorter; `Err` if it is not text.
    pub fn cell(&self, index: usize) -> Result<&str, NotText> {
        match self.cells.get(index) {
            None => Ok(""),
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(*e),
        }
    }
}

/// Calls `f` with every data row of a file that passed [`inspect`] with `layout`, in order, and
/// with the bytes read so far (CSV; 0 for XLSX). Blank rows are skipped (their numbers too).
/// Stops early when `f` breaks.
pub fn for_each_row(
    path: &Path,
    layout: &Layout,
    mut f: impl FnMut(Row, u64) -> ControlFlow<()>,
) -> Result<(), FileError> {
    match layout.format {
        Format::Csv => {
            let delimiter = layout.delimiter.map_or(b',', |c| c as u8);
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .has_headers(false)
                .flexible(true)
                .from_reader(std::io::BufReader::with_capacity(256 * 1024, open(path)?));
            let mut record = csv::ByteRecord::new();
            let mut number = 0u64;
            loop {
                match reader.read_byte_record(&mut record) {
                    Ok(false) => return Ok(()),
                    Ok(true) => {}
                    Err(e) => {
                        return Err(FileError::unreadable(format!("the CSV is damaged: {e}")));
                    }
                }
                number += 1;
                if number == 1 {
                    continue; // the header
                }
                let mut cells: Vec<Cell> = record
                    .iter()
                    .map(|b| {
                        std::str::from_utf8(b)
                            .map(|s| s.trim().to_owned())
                            .map_err(|_| NotText)
                    })
                    .collect();
                if cells.iter().all(|c| matches!(c, Ok(s) if s.is_empty())) {
                    continue;
                }
                cells.truncate(MAX_COLUMNS);
                let at = reader.position().byte();
                if f(Row { number, cells }, at).is_break() {
                    return Ok(());
                }
            }
        }
        Format::Xlsx => xlsx::for_each_row(path, layout, |row| f(row, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_content() {
        assert_eq!(sniff(b"email,name\n"), Ok(Format::Csv));
        assert_eq!(sniff(b"\xEF\xBB\xBFemail\n"), Ok(Format::Csv));
        assert_eq!(sniff(b"PK\x03\x04rest"), Ok(Format::Xlsx));
        assert!(matches!(sniff(b""), Err(FileError::Empty(_))));
        assert!(matches!(
            sniff(b"\x7fELF\x02\x01\x01\0\0"),
            Err(FileError::Unreadable(_))
        ));
        assert!(
            matches!(sniff(&[0xD0, 0xCF, 0x11, 0xE0, 1]), Err(FileError::Unreadable(m)) if m.contains(".xls"))
        );
        assert!(
            matches!(sniff(b"caf\xE9,x\n"), Err(FileError::Unreadable(m)) if m.contains("UTF-8"))
        );
        // a character cut by the head's end is not an error
        assert_eq!(
            sniff("email,é".as_bytes().split_last().unwrap().1),
            Ok(Format::Csv)
        );
    }
}
