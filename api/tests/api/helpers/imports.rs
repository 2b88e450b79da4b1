//! Bulk imports: uploading a file, following an import to its end, and the files the tests
//! upload (CSV text, XLSX workbooks written with `rust_xlsxwriter`, hand-made ZIP containers).

use std::{io::Write as _, time::Duration};

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use shared::testing::eventually;

use super::{TestApp, json_with_status, send};

/// The XLSX media type.
pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

impl TestApp {
    /// `POST /api/v1/users/imports{query}` with `body` as the raw body.
    pub async fn upload(
        &self,
        token: &str,
        query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        send(
            self.authed(
                Method::POST,
                &format!("/api/v1/users/imports{query}"),
                token,
            )
            .header("content-type", content_type)
            .body(body),
        )
        .await
    }

    /// Uploads a CSV, asserting a 202; returns the import id.
    pub async fn upload_csv(&self, token: &str, query: &str, csv: &str) -> String {
        let resp = self
            .upload(token, query, "text/csv", csv.as_bytes().to_vec())
            .await;
        let body = json_with_status(resp, StatusCode::ACCEPTED).await;
        body["data"]["importId"]
            .as_str()
            .expect("an import id")
            .to_owned()
    }

    /// `GET /api/v1/users/imports/{id}`.
    pub async fn get_import(&self, token: &str, id: &str) -> Response {
        send(self.authed(Method::GET, &format!("/api/v1/users/imports/{id}"), token)).await
    }

    /// The import's `data`, asserting a 200.
    pub async fn import(&self, token: &str, id: &str) -> Value {
        json_with_status(self.get_import(token, id).await, StatusCode::OK).await["data"].take()
    }

    /// Waits until the import has ended; returns it.
    pub async fn wait_import(&self, token: &str, id: &str) -> Value {
        eventually(Duration::from_secs(120), "the import ends", || async {
            let import = self.import(token, id).await;
            import["finishedAt"].is_string().then_some(import)
        })
        .await
    }

    /// `POST /api/v1/users/imports/{id}/cancel`.
    pub async fn cancel_import(&self, token: &str, id: &str) -> Response {
        send(self.authed(
            Method::POST,
            &format!("/api/v1/users/imports/{id}/cancel"),
            token,
        ))
        .await
    }

    /// `GET /api/v1/users/imports/{id}/errors.csv`.
    pub async fn import_errors(&self, token: &str, id: &str) -> Response {
        send(self.authed(
            Method::GET,
            &format!("/api/v1/users/imports/{id}/errors.csv"),
            token,
        ))
        .await
    }
}

/// An XLSX workbook of `rows` (the first is the header) on a sheet named `sheet`.
pub fn xlsx(sheet: &str, rows: &[&[&str]]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    ws.set_name(sheet).expect("sheet name");
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            ws.write_string(r as u32, c as u16, *cell).expect("cell");
        }
    }
    book.save_to_buffer().expect("workbook")
}

/// A ZIP container of `(name, content)` entries, deflated.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        out.start_file(*name, options).expect("entry");
        out.write_all(content).expect("write");
    }
    out.finish().expect("zip").into_inner()
}

/// The parts of a minimal workbook besides its sheet and shared strings.
pub fn workbook_parts() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("[Content_Types].xml", br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#),
        ("_rels/.rels", br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#),
        ("xl/workbook.xml", br#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#),
        ("xl/_rels/workbook.xml.rels", br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#),
    ]
}

/// A one-cell sheet (`A1` = shared string 0).
pub const ONE_CELL_SHEET: &[u8] = br#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c></row></sheetData></worksheet>"#;
