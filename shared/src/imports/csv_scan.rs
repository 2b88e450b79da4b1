//! The CSV pre-flight: one pass with `csv-core` into fixed buffers that finds the header,
//! counts the records and refuses any record over [`MAX_RECORD_BYTES`] or [`MAX_COLUMNS`]
//! (an unclosed quote would otherwise make the rest of the file one record, held in memory by
//! the `csv` reader later).

use std::io::Read;

use csv_core::{ReadRecordResult, ReaderBuilder};

use super::{FileError, MAX_COLUMNS, MAX_RECORD_BYTES};

/// What the scan found.
pub(super) struct Scan {
    /// The header's cells, trimmed.
    pub header: Vec<String>,
    /// Data records that are not blank.
    pub records: u64,
}

/// The separator of the first line of `head`: the most frequent of `,`, `;` and tab outside
/// quotes (a comma on a tie or when there is none).
pub(super) fn detect_delimiter(head: &[u8]) -> u8 {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in head {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3)
        .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
        .unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        candidates[best]
    }
}

/// Scans `input`, whole.
pub(super) fn scan(mut input: impl Read, delimiter: u8) -> Result<Scan, FileError> {
    let mut reader = ReaderBuilder::new().delimiter(delimiter).build();
    let mut buf = vec![0u8; 256 * 1024];
    let mut out = vec![0u8; MAX_RECORD_BYTES];
    let mut ends = vec![0usize; MAX_COLUMNS + 1];
    let (mut start, mut len) = (0usize, 0usize);
    let (mut out_at, mut ends_at) = (0usize, 0usize);
    let mut header: Option<Vec<String>> = None;
    let mut records = 0u64;
    let mut eof = false;
    let mut first = true;
    loop {
        if start == len && !eof {
            len = input
                .read(&mut buf)
                .map_err(|e| FileError::unreadable(format!("the file could not be read: {e}")))?;
            start = 0;
            eof = len == 0;
            if first {
                first = false;
                if buf[..len].starts_with(b"\xEF\xBB\xBF") {
                    start = 3;
                }
            }
        }
        let (res, nin, nout, nend) =
            reader.read_record(&buf[start..len], &mut out[out_at..], &mut ends[ends_at..]);
        start += nin;
        out_at += nout;
        ends_at += nend;
        let row = records + u64::from(header.is_some()) + 1;
        match res {
            ReadRecordResult::InputEmpty => continue,
            ReadRecordResult::OutputFull => {
                return Err(FileError::unreadable(format!(
                    "row {row} is longer than {} KiB: is a quote left open?",
                    MAX_RECORD_BYTES / 1024
                )));
            }
            ReadRecordResult::OutputEndsFull => {
                return Err(FileError::unreadable(format!(
                    "row {row} has more than {MAX_COLUMNS} columns"
                )));
            }
            ReadRecordResult::Record => {
                let fields = &ends[..ends_at];
                let blank = out_at == 0 || fields.is_empty();
                match &header {
                    None if !blank => {
                        let mut cells = Vec::with_capacity(fields.len());
                        let mut from = 0;
                        for &to in fields {
                            let cell = std::str::from_utf8(&out[from..to]).map_err(|_| {
                                FileError::unreadable("the header row is not UTF-8 text")
                            })?;
                            cells.push(cell.trim().to_owned());
                            from = to;
                        }
                        header = Some(cells);
                    }
                    Some(_) if !only_blanks(&out[..out_at]) => records += 1,
                    _ => {}
                }
                out_at = 0;
                ends_at = 0;
            }
            ReadRecordResult::End => break,
        }
    }
    let header = header.ok_or(FileError::Empty("the file has no header row"))?;
    if records == 0 {
        return Err(FileError::Empty("the file has a header but no rows"));
    }
    Ok(Scan { header, records })
}

fn only_blanks(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_separator_is_the_most_frequent_outside_quotes() {
        assert_eq!(detect_delimiter(b"email,name,roles\na;b"), b',');
        assert_eq!(detect_delimiter(b"email;name;\"a,b,c\"\n"), b';');
        assert_eq!(detect_delimiter(b"\xEF\xBB\xBFemail\tname\n"), b'\t');
        assert_eq!(detect_delimiter(b"email\n"), b',');
    }

    #[test]
    fn records_are_counted_and_blank_lines_skipped() {
        let s = scan(
            &b"\xEF\xBB\xBF Email ,name\na@x.io,\"A, b\"\n\n\"c@x.io\",\"multi\nline\"\n"[..],
            b',',
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.header, ["Email", "name"]);
        assert_eq!(s.records, 2);
        // no final line end
        assert_eq!(scan(&b"email\na@x.io"[..], b',').map(|s| s.records), Ok(1));
    }

    #[test]
    fn an_open_quote_or_too_many_columns_is_refused() {
        let mut open = b"email\n\"a@x.io\n".to_vec();
        open.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES + 10));
        assert!(
            matches!(scan(&open[..], b','), Err(FileError::Unreadable(m)) if m.contains("row 2") && m.contains("quote"))
        );
        let wide = format!("email\n{}\n", ",".repeat(MAX_COLUMNS + 1));
        assert!(
            matches!(scan(wide.as_bytes(), b','), Err(FileError::Unreadable(m)) if m.contains("columns"))
        );
    }

    #[test]
    fn empty_files_are_told_apart() {
        assert!(
            matches!(scan(&b"\n\n"[..], b','), Err(FileError::Empty(m)) if m.contains("no header"))
        );
        assert!(
            matches!(scan(&b"email\n\n"[..], b','), Err(FileError::Empty(m)) if m.contains("no rows"))
        );
    }
}
