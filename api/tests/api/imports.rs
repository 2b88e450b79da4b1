//! Bulk user imports: upload (CSV and XLSX, raw and multipart), the `bulk_import` job run by an
//! in-process worker, each row's validation, duplicates in the file and against existing
//! users under each `onDuplicate`, dry runs, invitations, cancel, the error report, refused
//! files, permissions and tenant isolation.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{
    ONE_CELL_SHEET, TestApp, XLSX, assert_error, json_with_status, send, workbook_parts, xlsx, zip,
};

/// Users of the demo project with this email: (status, name, role names).
async fn user(app: &TestApp, email: &str) -> Option<(String, Option<String>, Vec<String>)> {
    sqlx::query_as(
        "SELECT u.status, u.name, coalesce(array_agg(r.name ORDER BY r.name) FILTER (WHERE r.name IS NOT NULL), '{}') \
         FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.user_id \
         LEFT JOIN roles r ON r.role_id = ur.role_id \
         WHERE u.project_id = $1 AND u.email = $2 GROUP BY u.user_id",
    )
    .bind(app.project_id())
    .bind(email)
    .fetch_optional(&app.env.pool)
    .await
    .expect("user look-up")
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(app.project_id())
        .fetch_one(&app.env.pool)
        .await
        .expect("count")
}

fn messages(import: &Value) -> Vec<(i64, String, String)> {
    import["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["rowNumber"].as_i64().expect("row"),
                e["columnName"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_csv_is_imported_and_every_bad_row_is_reported() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    app.active_user(app.project_id(), "old@example.com", "member")
        .await;
    app.start_worker().await;
    // a byte-order mark, semicolons, aliases in another case, a column nobody uses
    let csv = "\u{feff}E-Mail;Full Name;ROLES;Department\n\
               ann@example.com;Ann;member;Sales\n\
               not-an-email;Bob;;Ops\n\
               cy@example.com;Cy;boss|member;Ops\n\
               ANN@example.com;Ann again;;Sales\n\
               old@example.com;Old;member;\n\
               \n\
               dee@example.com;\"Dee; the second\";admin;=cmd()\n";
    let id = app.upload_csv(&token, "?fileName=people.csv", csv).await;
    let import = app.wait_import(&token, &id).await;
    assert_eq!(import["status"], "completed", "{import}");
    assert_eq!(import["format"], "csv");
    assert_eq!(import["fileName"], "people.csv");
    assert_eq!(import["processed"], 6);
    assert_eq!(import["totalRows"], 6);
    assert_eq!(import["totalEstimated"], false);
    assert_eq!(import["created"], 2);
    assert_eq!(
        import["skipped"], 1,
        "the existing user is skipped by default"
    );
    assert_eq!(import["failed"], 3);
    assert_eq!(import["columns"]["email"], "E-Mail");
    assert_eq!(import["columns"]["name"], "Full Name");
    assert_eq!(import["unknownColumns"], serde_json::json!(["Department"]));
    let errors = messages(&import);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!((errors[0].0, errors[0].1.as_str()), (3, "E-Mail"));
    assert_eq!((errors[1].0, errors[1].1.as_str()), (4, "ROLES"));
    assert!(
        errors[1].2.contains("no such role in this project: boss"),
        "{errors:?}"
    );
    assert_eq!((errors[2].0, errors[2].1.as_str()), (5, "E-Mail"));
    assert!(errors[2].2.contains("duplicate of row 2"), "{errors:?}");

    assert_eq!(
        user(&app, "ann@example.com").await,
        Some(("ACTIVE".into(), Some("Ann".into()), vec!["member".into()]))
    );
    assert_eq!(
        user(&app, "dee@example.com").await,
        Some((
            "ACTIVE".into(),
            Some("Dee; the second".into()),
            vec!["admin".into()]
        ))
    );
    assert_eq!(user(&app, "cy@example.com").await, None);
    assert_eq!(
        user(&app, "old@example.com").await.map(|u| u.1),
        Some(Some("Test user".into()))
    );

    // the report: every error, by row, formula-safe
    let resp = app.import_errors(&token, &id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let report = resp.text().await.expect("report");
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("row,column,value,message"));
    assert_eq!(report.lines().count(), 4, "{report}");
    assert!(report.contains("3,E-Mail,not-an-email,"), "{report}");

    // audited with the counters and the file's hash
    let audit = app.audit_logs(&token, "?action=users.imported").await;
    let entry = &audit["data"][0];
    assert_eq!(entry["metadata"]["created"], 2, "{audit}");
    assert_eq!(entry["metadata"]["fileName"], "people.csv");
    assert_eq!(
        entry["metadata"]["fileSha256"].as_str().map(str::len),
        Some(64)
    );

    // the file is gone once the import has ended
    assert_eq!(count(&app, "SELECT count(*) FROM user_import_parts p JOIN user_imports i USING (import_id) WHERE i.project_id = $1").await, 0);
    // listed
    let list = json_with_status(
        send(app.authed(Method::GET, "/api/v1/users/imports", &token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    app.cleanup().await;
}

#[tokio::test]
async fn duplicates_of_existing_users_follow_on_duplicate() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    app.active_user(app.project_id(), "old@example.com", "member")
        .await;
    app.start_worker().await;
    let csv = "email,name,roles\nold@example.com,Renamed,admin\nnew@example.com,New,\n";

    let id = app.upload_csv(&token, "?onDuplicate=fail", csv).await;
    let import = app.wait_import(&token, &id).await;
    assert_eq!(
        (import["created"].as_i64(), import["failed"].as_i64()),
        (Some(1), Some(1)),
        "{import}"
    );
    let errors = messages(&import);
    assert_eq!(errors[0].0, 2);
    assert!(errors[0].2.contains("already exists"), "{errors:?}");
    assert_eq!(
        user(&app, "old@example.com").await.map(|u| u.1),
        Some(Some("Test user".into()))
    );

    let id = app.upload_csv(&token, "?onDuplicate=update", csv).await;
    let import = app.wait_import(&token, &id).await;
    assert_eq!(
        (import["updated"].as_i64(), import["created"].as_i64()),
        (Some(2), Some(0)),
        "{import}"
    );
    assert_eq!(
        user(&app, "old@example.com").await,
        Some((
            "ACTIVE".into(),
            Some("Renamed".into()),
            vec!["admin".into(), "member".into()]
        )),
        "update sets the name and adds the roles"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_dry_run_counts_and_writes_nothing() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    app.start_worker().await;
    let before = count(&app, "SELECT count(*) FROM users WHERE project_id = $1").await;
    let id = app
        .upload_csv(
            &token,
            "?dryRun=true&sendInvitations=true",
            "email\na@example.com\nb@example.com\nbad\n",
        )
        .await;
    let import = app.wait_import(&token, &id).await;
    assert_eq!(import["options"]["dryRun"], true);
    assert_eq!(
        (import["created"].as_i64(), import["failed"].as_i64()),
        (Some(2), Some(1)),
        "{import}"
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM users WHERE project_id = $1").await,
        before
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM user_invitations WHERE project_id = $1"
        )
        .await,
        0
    );
    app.cleanup().await;
}

#[tokio::test]
async fn invitations_are_created_with_one_job_each() {
    let mut app = TestApp::spawn().await;
    let (owner, token) = app.admin("owner@example.com").await;
    let member = app.role_id(app.project_id(), "member").await;
    let csv = "email,status\na@example.com,\nb@example.com,invited\nc@example.com,active\n";
    let id = app
        .upload_csv(
            &token,
            &format!("?sendInvitations=true&defaultRoleIds={member}"),
            csv,
        )
        .await;
    app.start_worker().await;
    let import = app.wait_import(&token, &id).await;
    assert_eq!(import["created"], 3, "{import}");
    assert_eq!(
        user(&app, "a@example.com").await.map(|u| (u.0, u.2)),
        Some(("INVITED".into(), vec!["member".into()]))
    );
    assert_eq!(
        user(&app, "c@example.com").await.map(|u| u.0),
        Some("ACTIVE".into())
    );
    let invited: Vec<(uuid::Uuid, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT i.user_id, i.invited_by FROM user_invitations i WHERE i.project_id = $1 ORDER BY 1",
    )
    .bind(app.project_id())
    .fetch_all(&app.env.pool)
    .await
    .expect("invitations");
    assert_eq!(invited.len(), 2, "the ACTIVE row is not invited");
    assert!(invited.iter().all(|(_, by)| *by == Some(owner)));
    // each invitation's email is sent by its own send_invitation job
    let sent = shared::testing::eventually(
        std::time::Duration::from_secs(30),
        "invitations sent",
        || async {
            let n = count(
                &app,
                "SELECT count(*) FROM user_invitations WHERE project_id = $1 AND delivery = 'SENT'",
            )
            .await;
            (n == 2).then_some(n)
        },
    )
    .await;
    assert_eq!(sent, 2);
    app.cleanup().await;
}

#[tokio::test]
async fn an_xlsx_sheet_is_imported_by_name_and_by_multipart() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    app.start_worker().await;
    let book = xlsx(
        "People",
        &[
            &["Email Address", "Name"],
            &["x1@example.com", "X One"],
            &["", ""],
            &["x2@example.com", "X Two"],
            &["oops", ""],
        ],
    );
    let resp = app
        .upload(&token, "?sheet=People", XLSX, book.clone())
        .await;
    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    let id = body["data"]["importId"].as_str().expect("id").to_owned();
    let import = app.wait_import(&token, &id).await;
    assert_eq!(import["format"], "xlsx");
    assert_eq!(
        (import["created"].as_i64(), import["failed"].as_i64()),
        (Some(2), Some(1)),
        "{import}"
    );
    assert_eq!(
        messages(&import)[0].0,
        5,
        "rows are numbered as the sheet shows them"
    );
    assert_eq!(
        user(&app, "x2@example.com").await.map(|u| u.1),
        Some(Some("X Two".into()))
    );

    let resp = app.upload(&token, "?sheet=Nope", XLSX, book).await;
    let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(err.to_string().contains("no sheet"), "{err}");

    // multipart: the form's `file` part, its file name kept
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"email\nm@example.com\n".to_vec()).file_name("team.csv"),
    );
    let resp = send(
        app.authed(Method::POST, "/api/v1/users/imports", &token)
            .multipart(form),
    )
    .await;
    let body = json_with_status(resp, StatusCode::ACCEPTED).await;
    let id = body["data"]["importId"].as_str().expect("id").to_owned();
    let import = app.wait_import(&token, &id).await;
    assert_eq!(
        (import["fileName"].as_str(), import["created"].as_i64()),
        (Some("team.csv"), Some(1))
    );
    // a form takes only its `file` part
    let csv = || reqwest::multipart::Part::bytes(b"email\nn@example.com\n".to_vec());
    for form in [
        reqwest::multipart::Form::new()
            .text("note", "hi")
            .part("file", csv()),
        reqwest::multipart::Form::new()
            .part("file", csv())
            .text("note", "hi"),
        reqwest::multipart::Form::new().text("note", "hi"),
    ] {
        let resp = send(
            app.authed(Method::POST, "/api/v1/users/imports", &token)
                .multipart(form),
        )
        .await;
        let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(err.to_string().contains("file"), "{err}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn bad_files_are_refused_before_any_work() {
    let app = TestApp::spawn_with(|s| s.users.import_max_bytes = 40 * 1024 * 1024).await;
    let (_, token) = app.admin("owner@example.com").await;
    let mut open_quote = b"email,name\n\"a@example.com,".to_vec();
    open_quote.extend(std::iter::repeat_n(b'x', 70 * 1024));
    let mut big_strings =
        String::from(r#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">"#);
    while big_strings.len() < 33 * 1024 * 1024 {
        big_strings.push_str(
            "<si><t>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</t></si>",
        );
    }
    big_strings.push_str("</sst>");
    let lying = br#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="999999999999"><si><t>email</t></si></sst>"#;
    let book = |strings: &[u8]| {
        let mut parts = workbook_parts();
        parts.push(("xl/worksheets/sheet1.xml", ONE_CELL_SHEET));
        parts.push(("xl/sharedStrings.xml", strings));
        zip(&parts)
    };
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("empty", "text/csv", Vec::new(), "empty"),
        ("blank lines", "text/csv", b"\n\n\n".to_vec(), "no header"),
        (
            "header only",
            "text/csv",
            b"email,name\n".to_vec(),
            "no rows",
        ),
        (
            "no email column",
            "text/csv",
            b"name,roles\nAnn,member\n".to_vec(),
            "no email column",
        ),
        (
            "binary renamed .csv",
            "text/csv",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec(),
            "binary",
        ),
        (
            "latin-1",
            "text/csv",
            b"email,name\nj@example.com,Jos\xe9\n".to_vec(),
            "UTF-8",
        ),
        (
            "xls",
            "application/octet-stream",
            vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1],
            ".xls",
        ),
        ("open quote", "text/csv", open_quote, "quote"),
        (
            "zip, not xlsx",
            XLSX,
            zip(&[("hello.txt", b"hi")]),
            "damaged",
        ),
        (
            "truncated xlsx",
            XLSX,
            xlsx("S", &[&["email"], &["a@example.com"]])[..200].to_vec(),
            "damaged",
        ),
        (
            "shared strings bomb",
            XLSX,
            book(big_strings.as_bytes()),
            "shared strings exceed",
        ),
        (
            "lying string count",
            XLSX,
            book(lying),
            "declares 999999999999 shared strings",
        ),
        (
            "over the limit",
            "text/csv",
            vec![b'a'; 41 * 1024 * 1024],
            "limit",
        ),
    ];
    for (what, content_type, body, expected) in cases {
        let resp = app.upload(&token, "", content_type, body).await;
        let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let text = err.to_string();
        assert!(
            text.contains("\"file\"") && text.contains(expected),
            "{what}: {text}"
        );
    }
    // bad options name their fields
    let resp = app
        .upload(
            &token,
            "?delimiter=pipe&defaultRoleIds=nope&onDuplicate=merge",
            "text/csv",
            b"email\na@b.io\n".to_vec(),
        )
        .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let resp = app
        .upload(
            &token,
            &format!("?defaultRoleIds={}", uuid::Uuid::now_v7()),
            "text/csv",
            b"email\na@b.io\n".to_vec(),
        )
        .await;
    let err = assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(err.to_string().contains("defaultRoleIds"), "{err}");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM user_imports WHERE project_id = $1"
        )
        .await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM user_import_parts").await,
        0
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_queued_import_is_cancelled_and_an_ended_one_refuses() {
    let mut app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    let id = app.upload_csv(&token, "", "email\nq@example.com\n").await;
    let resp = app.cancel_import(&token, &id).await;
    let body = json_with_status(resp, StatusCode::OK).await;
    assert_eq!(body["data"]["status"], "cancelled");
    // the job runs later and leaves it cancelled, writing nothing
    app.start_worker().await;
    let job = body["data"]["jobId"].as_str().expect("job").to_owned();
    app.wait_for_state(&job, "completed").await;
    assert_eq!(app.import(&token, &id).await["status"], "cancelled");
    assert_eq!(user(&app, "q@example.com").await, None);
    let resp = app.cancel_import(&token, &id).await;
    assert_error(resp, StatusCode::CONFLICT, "conflict").await;
    app.cleanup().await;
}

#[tokio::test]
async fn imports_are_scoped_to_their_project_and_permission() {
    let app = TestApp::spawn().await;
    let (_, token) = app.admin("owner@example.com").await;
    let id = app.upload_csv(&token, "", "email\ns@example.com\n").await;
    let other = app.env.other_project("other").await;
    let foreign = app.admin_token_for(other);
    assert_error(
        app.get_import(&foreign, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.cancel_import(&foreign, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.import_errors(&foreign, &id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let list = json_with_status(
        send(app.authed(Method::GET, "/api/v1/users/imports", &foreign)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["data"], serde_json::json!([]));
    // reading needs user:read, uploading and cancelling user:create
    let reader = app.token(&["user:read"]);
    app.import(&reader, &id).await;
    let resp = app
        .upload(&reader, "", "text/csv", b"email\nr@example.com\n".to_vec())
        .await;
    assert_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
    assert_error(
        app.cancel_import(&reader, &id).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // invitations name their inviter: a service token cannot send them
    let resp = app
        .upload(
            &app.admin_token(),
            "?sendInvitations=true",
            "text/csv",
            b"email\nr@example.com\n".to_vec(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    app.cleanup().await;
}

#[tokio::test]
async fn a_running_import_waits_for_the_job_quota_and_stops_at_a_chunk_boundary_when_cancelled() {
    // room for about one chunk of invitations, and no worker sends them: the import waits
    let mut app = TestApp::spawn_with(|s| {
        s.queue.max_open_per_project = 6000;
        s.worker.queues = Some(vec!["bulk_import".into()]);
    })
    .await;
    let (_, token) = app.admin("owner@example.com").await;
    let mut csv = String::from("email\n");
    for i in 0..20_000 {
        csv.push_str(&format!("c{i}@example.com\n"));
    }
    let id = app.upload_csv(&token, "?sendInvitations=true", &csv).await;
    app.start_worker().await;
    shared::testing::eventually(
        std::time::Duration::from_secs(60),
        "the import starts",
        || async {
            let import = app.import(&token, &id).await;
            (import["processed"].as_i64().unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
    // the chunks in flight when the quota filled commit; then nothing moves
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    let waiting = app.import(&token, &id).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let still = app.import(&token, &id).await;
    assert_eq!(still["status"], "running", "{still}");
    assert_eq!(
        still["processed"], waiting["processed"],
        "it waits for the quota"
    );
    let resp = app.cancel_import(&token, &id).await;
    let body = json_with_status(resp, StatusCode::OK).await;
    assert!(body["data"]["cancelRequestedAt"].is_string(), "{body}");
    let import = app.wait_import(&token, &id).await;
    assert_eq!(import["status"], "cancelled", "{import}");
    let processed = import["processed"].as_i64().expect("processed");
    assert!(
        (5000..20_000).contains(&processed),
        "it stopped early: {processed}"
    );
    assert_eq!(processed % 5000, 0, "at a chunk boundary: {processed}");
    // what committed stays, exactly, invitations included
    let users = count(
        &app,
        "SELECT count(*) FROM users WHERE project_id = $1 AND email LIKE 'c%@example.com'",
    )
    .await;
    assert_eq!(users, processed);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM user_invitations WHERE project_id = $1"
        )
        .await,
        processed
    );
    assert_eq!(import["created"].as_i64(), Some(processed));
    app.cleanup().await;
}
