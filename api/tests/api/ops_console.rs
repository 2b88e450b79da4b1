//! The ops console (`/ops`): in headless Chromium (sign in, watch counts change as jobs are
//! enqueued and run, see the queue's chart of the last hour count them and its latency, find a
//! dead job and open it, see its failure group, search the archive by
//! its error text, pause a queue, retry the job, sign out and see the old cookie refused, and
//! an operator without `jobs:read` told what the failures need), with a screenshot of each step
//! in `<target>/ops-screenshots/`; and over plain HTTP, the session cookie's rules (CSRF header on
//! every API call, anti-forgery tokens on the forms, revocation at sign-out).
//!
//! The browser test skips, saying so, only when Chromium or chromedriver is missing and `CI` is
//! not set; under CI a missing browser fails it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use fantoccini::{Client, Locator};
use reqwest::{Method, Response, StatusCode, header};
use serde_json::json;

use crate::helpers::{Browser, PASSWORD, TestApp};

/// How long the page may take to show a change (it polls every 2 s).
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether the suite runs under CI (`CI` set to anything but empty, `0` or `false`).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Whether `name` is an executable file on `PATH` (or where Debian puts Chromium's).
fn installed(names: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ])
        .any(|dir| names.iter().any(|n| dir.join(n).is_file()))
}

/// `true` when the browser test can run; `false` (after saying why) when it should skip;
/// panics when the browser is missing under CI.
fn browser_or_skip() -> bool {
    let chromium = installed(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = installed(&["chromedriver"]);
    if chromium && driver {
        return true;
    }
    let missing = match (chromium, driver) {
        (false, false) => "chromium and chromedriver",
        (false, true) => "chromium",
        _ => "chromedriver",
    };
    assert!(
        !under_ci(),
        "the ops console test needs {missing} (Debian's `chromium` and `chromium-driver`; \
         `./dev deps` installs them), and CI is set: failing rather than skipping"
    );
    eprintln!(
        "SKIPPED ops_console browser test: {missing} not found (install Debian's `chromium` and \
         `chromium-driver`, e.g. with `./dev deps`; under CI=true this fails instead)"
    );
    false
}

/// `<target>/ops-screenshots` (`CARGO_TARGET_DIR`, else the workspace's `target/`).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ops-screenshots")
}

/// Removes the screenshots of an earlier run, so the numbered series is this run's only.
fn clear_screenshots() {
    let Ok(entries) = std::fs::read_dir(screenshot_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "png") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
}

/// The text of the first element matching `css`, or `None` if there is none (yet).
async fn text_of(c: &Client, css: &str) -> Option<String> {
    let el = c.find(Locator::Css(css)).await.ok()?;
    el.text().await.ok()
}

/// Waits until the text of `css` satisfies `ok`; panics with the last text after
/// [`PAGE_TIMEOUT`].
async fn until_text(c: &Client, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
    let mut last = None;
    loop {
        last = text_of(c, css).await.or(last);
        if let Some(t) = &last
            && ok(t)
        {
            return t.clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what} ({css}); last text: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the attribute `name` of `css` satisfies `ok`; panics with the last value after
/// [`PAGE_TIMEOUT`].
async fn until_attr(
    c: &Client,
    css: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
    let mut last = None;
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && let Ok(Some(value)) = el.attr(name).await
        {
            last = Some(value);
        }
        if let Some(v) = &last
            && ok(v)
        {
            return v.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} ({css} [{name}]); last value: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn click(c: &Client, css: &str) {
    let el = c
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} is on the page: {e}"));
    el.click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let el = c
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} is on the page: {e}"));
    el.send_keys(text).await.expect("type");
}

/// Replaces the text of the input `css` with `text`.
async fn retype(c: &Client, css: &str, text: &str) {
    let el = c
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} is on the page: {e}"));
    el.clear().await.expect("clear");
    el.send_keys(text).await.expect("type");
}

/// Waits until the URL's fragment satisfies `ok`; returns it.
async fn until_fragment(c: &Client, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PAGE_TIMEOUT;
    loop {
        let url = c.current_url().await.expect("url");
        let fragment = url.fragment().unwrap_or_default().to_owned();
        if ok(&fragment) {
            return fragment;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; the fragment is {fragment:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks `css`, whose action asks for confirmation, and confirms.
async fn click_and_confirm(c: &Client, css: &str) {
    click(c, css).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match c.accept_alert().await {
            Ok(()) => return,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{css} asks for confirmation: {e}"),
        }
    }
}

/// The waiting/…/dead count of a queue as the overview shows it.
fn count_cell(queue: &str, state: &str) -> String {
    format!("#queues tr[data-queue='{queue}'] td[data-state='{state}']")
}

/// The session cookie and CSRF token of the signed-in page.
async fn session_of_page(c: &Client) -> (String, String) {
    let cookie = c
        .get_all_cookies()
        .await
        .expect("cookies")
        .into_iter()
        .find(|k| k.name() == "comet_ops")
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly");
    assert_eq!(
        format!("{:?}", cookie.same_site()),
        "Some(Strict)",
        "SameSite=Strict"
    );
    let csrf = c
        .find(Locator::Css("body"))
        .await
        .expect("body")
        .attr("data-csrf")
        .await
        .expect("attr")
        .expect("the page's CSRF token");
    (cookie.value().to_owned(), csrf)
}

/// `GET /api/v1/{path}` with a console session cookie and CSRF token (`None`: no header).
async fn with_cookie(app: &TestApp, path: &str, cookie: &str, csrf: Option<&str>) -> Response {
    let mut req = app
        .request(Method::GET, path)
        .header(header::COOKIE, format!("comet_ops={cookie}"));
    if let Some(csrf) = csrf {
        req = req.header("x-csrf-token", csrf);
    }
    req.send().await.expect("the API answers")
}

/// Signs out from the page and checks that the API (`GET path`) refuses the old cookie.
async fn sign_out_and_check(app: &TestApp, c: &Client, path: &str, shot: &str) {
    let (cookie, csrf) = session_of_page(c).await;
    assert_eq!(
        with_cookie(app, path, &cookie, Some(&csrf)).await.status(),
        StatusCode::OK,
        "the cookie works with its CSRF token before signing out"
    );
    click(c, "#sign-out").await;
    c.wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css("#password-form"))
        .await
        .expect("back on the sign-in page");
    let gone = c
        .get_all_cookies()
        .await
        .expect("cookies")
        .into_iter()
        .any(|k| k.name() == "comet_ops");
    assert!(!gone, "the cookie is cleared");
    screenshot(c, shot).await;
    let resp = with_cookie(app, path, &cookie, Some(&csrf)).await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the old cookie is refused"
    );
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["message"], "token revoked");
    let page = app
        .request(Method::GET, "/ops")
        .header(header::COOKIE, format!("comet_ops={cookie}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        page.status(),
        StatusCode::SEE_OTHER,
        "the console sends it to sign in"
    );
}

#[tokio::test]
async fn an_operator_and_a_user_watch_pause_and_retry_jobs_in_headless_chromium() {
    if !browser_or_skip() {
        return;
    }
    let mut app = TestApp::spawn().await;
    let (_, _user_token) = app.admin("ops.user@example.com").await;
    // jobs:read for the archive's search and failure groups (with queues:read: every project's)
    let operator = app.platform_token_with(&[
        "queues:read",
        "queues:write",
        "jobs:read",
        "schedules:read",
        "schedules:manage",
    ]);

    clear_screenshots();
    let browser = Browser::start().await;
    let c = &browser.client;
    // the size of the README's screenshots
    c.set_window_size(1280, 800).await.expect("window size");

    // 1. not signed in: the console sends the browser to sign in; a platform operator signs in
    //    with a token
    c.goto(&format!("{}/ops", app.address))
        .await
        .expect("open /ops");
    c.wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css("#password-form"))
        .await
        .expect("the sign-in page");
    assert!(c.current_url().await.expect("url").path() == "/ops/login");
    screenshot(c, "01-sign-in").await;
    click(c, "details summary").await;
    type_into(c, "#token", &operator).await;
    click(c, "#sign-in-token").await;
    until_text(c, &count_cell("ping", "waiting"), "the queue table", |t| {
        t == "0"
    })
    .await;
    assert!(
        text_of(c, "#who")
            .await
            .unwrap_or_default()
            .contains("platform operator"),
        "the header says who is signed in"
    );
    screenshot(c, "02-overview").await;

    // 2. counts change as jobs are enqueued (no worker yet), then as they run
    for _ in 0..3 {
        app.enqueue_ping(&json!({})).await;
    }
    until_text(c, &count_cell("ping", "waiting"), "3 waiting pings", |t| {
        t == "3"
    })
    .await;
    screenshot(c, "03-enqueued").await;
    let dead = app
        .enqueue_ping(&json!({"failAttempts": 1, "maxAttempts": 1}))
        .await;
    app.start_worker().await;
    app.wait_for_state(&dead, "dead").await;
    until_text(
        c,
        &count_cell("ping", "completed"),
        "3 completed pings",
        |t| t == "3",
    )
    .await;
    until_text(c, &count_cell("ping", "dead"), "1 dead ping", |t| t == "1").await;
    until_text(c, &count_cell("ping", "waiting"), "none waiting", |t| {
        t == "0"
    })
    .await;
    screenshot(c, "04-ran").await;

    // 3. the dead job, from the dead count to the job list (filters in the URL) to the job
    click(c, &format!("{} a", count_cell("ping", "dead"))).await;
    let row = format!("#jobs tr[data-job-id='{dead}']");
    until_text(c, &row, "the dead job listed", |t| {
        t.contains("asked to fail")
    })
    .await;
    let url = c.current_url().await.expect("url");
    assert_eq!(url.fragment(), Some("/jobs?queue=ping&state=dead"));
    screenshot(c, "05-dead-jobs").await;
    click(c, &format!("{row} a")).await;
    until_text(c, "#job-state", "the job's state", |t| t == "dead").await;
    screenshot(c, "06-dead-job").await;

    // 4. the failure groups: the dead job's, once the worker's archiver has copied it to
    //    Postgres (within about a second; the view refreshes every 5 s)
    click(c, "#nav a[href='#/failures']").await;
    let group = "#failures tr[data-queue='ping']";
    until_text(
        c,
        &format!("{group} td.count"),
        "the dead ping's failure group",
        |t| t == "1",
    )
    .await;
    let sample = text_of(c, group).await.unwrap_or_default();
    assert!(
        sample.contains("asked to fail"),
        "the sample error: {sample}"
    );
    screenshot(c, "07-failures").await;

    // 5. its jobs in the search (the group's literal error text as the filter), then the
    //    search form: filters into the URL without reloading the page, a reload keeps them
    click(c, &format!("{group} a.show-jobs")).await;
    let found = format!("#search-results tr[data-job-id='{dead}']");
    until_text(c, &found, "the dead job found by its group", |t| {
        t.contains("asked to fail")
    })
    .await;
    let fragment = until_fragment(c, "the group's search", |f| f.starts_with("/search?")).await;
    for part in ["state=dead", "queue=ping", "asked+to+fail"] {
        assert!(fragment.contains(part), "{part} in {fragment}");
    }
    c.execute("window.stillThisPage = true; return null;", vec![])
        .await
        .expect("mark the page");
    retype(c, "#search-error", "no such failure").await;
    click(c, "#search").await;
    until_text(
        c,
        "#search-results tbody",
        "no job for another error",
        |t| t.contains("No jobs."),
    )
    .await;
    retype(c, "#search-error", "ASKED TO FAIL").await;
    click(c, "#search").await;
    until_fragment(c, "the new filter in the URL", |f| {
        f.contains("error=ASKED+TO+FAIL") && f.contains("state=dead")
    })
    .await;
    until_text(c, &found, "the dead job found by its error text", |t| {
        t.contains("asked to fail")
    })
    .await;
    let same_page = c
        .execute("return window.stillThisPage === true;", vec![])
        .await
        .expect("script");
    assert_eq!(same_page, json!(true), "searching does not reload the page");
    c.refresh().await.expect("reload");
    until_text(c, &found, "the same search after a reload", |t| {
        t.contains("asked to fail")
    })
    .await;
    let kept = c
        .find(Locator::Css("#search-error"))
        .await
        .expect("the error filter")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(
        kept.as_deref(),
        Some("ASKED TO FAIL"),
        "the form shows the URL's filters"
    );
    screenshot(c, "08-search").await;
    click(c, &format!("{found} a")).await;
    until_text(c, "#job-state", "the found job", |t| t == "dead").await;
    until_text(c, "#job-errors tbody", "its attempt's error", |t| {
        t.contains("asked to fail")
    })
    .await;

    // 6. back on the overview: ping's chart of the last hour counts the jobs that ran (the
    //    page reads the series at most every 10 s, so it may take that long), the all-time
    //    completed count and the latency are shown
    click(c, "#nav a[href='#/']").await;
    let ping = "#queues tr[data-queue='ping']";
    let label = until_attr(
        c,
        &format!("{ping} td.chart svg[role='img']"),
        "aria-label",
        "ping's chart of the last hour",
        |t| t.contains(" 3 completed,") && t.contains(" 1 dead"),
    )
    .await;
    assert!(label.starts_with("last hour: "), "{label}");
    let title = c
        .find(Locator::Css(&format!("{ping} td.chart svg title")))
        .await
        .expect("the chart's title (its tooltip)")
        .prop("textContent")
        .await
        .expect("textContent");
    assert_eq!(
        title.as_deref(),
        Some(label.as_str()),
        "the tooltip says the same"
    );
    assert_eq!(
        text_of(c, &format!("{ping} td.completed-total"))
            .await
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        text_of(c, &format!("{ping} td.latency")).await.as_deref(),
        Some("0 s"),
        "no ping waits"
    );
    // the fleet's share: no ping held now, of the one worker's slots
    let slots = until_text(c, &format!("{ping} td.in-flight"), "ping's slots", |t| {
        t.starts_with("0 / ")
    })
    .await;
    assert!(
        slots
            .trim_start_matches("0 / ")
            .parse::<u32>()
            .is_ok_and(|n| n > 0),
        "{slots}"
    );

    // 7. pause the queue: shown paused, and a new ping waits (its wait shows as the queue's
    //    latency, not highlighted: the queue is paused)
    click_and_confirm(c, "#pause-ping").await;
    until_text(
        c,
        "#queues tr[data-queue='ping'] td.paused-cell",
        "ping shown paused",
        |t| t == "paused",
    )
    .await;
    let waits = app.enqueue_ping(&json!({})).await;
    until_text(
        c,
        &count_cell("ping", "waiting"),
        "the new ping waiting",
        |t| t == "1",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.job(&waits).await["state"],
        "waiting",
        "a paused queue runs nothing"
    );
    assert_eq!(
        text_of(c, &count_cell("ping", "waiting")).await.as_deref(),
        Some("1")
    );
    let latency = until_text(c, &format!("{ping} td.latency"), "the ping's wait", |t| {
        t != "0 s"
    })
    .await;
    assert!(latency.ends_with(" s"), "a wait of seconds: {latency}");
    let class = c
        .find(Locator::Css(&format!("{ping} td.latency")))
        .await
        .expect("the latency cell")
        .attr("class")
        .await
        .expect("class");
    assert!(
        !class.unwrap_or_default().contains("bad"),
        "a paused queue's latency is not highlighted"
    );
    screenshot(c, "09-paused").await;

    // 7b. the schedules: the canary's next fire shown; paused and resumed; run now enqueues
    //     one ping
    click(c, "#nav a[href='#/schedules']").await;
    let canary = "#schedules tr[data-schedule='canary']";
    until_text(
        c,
        &format!("{canary} td.next-fire"),
        "the canary's next fire",
        |t| !t.is_empty() && t != "—",
    )
    .await;
    click_and_confirm(c, "#pause-schedule-canary").await;
    until_text(
        c,
        &format!("{canary} td.schedule-status"),
        "the canary paused",
        |t| t == "paused",
    )
    .await;
    let paused: bool = sqlx::query_scalar("SELECT paused FROM schedules WHERE name = 'canary'")
        .fetch_one(&app.env.pool)
        .await
        .expect("the canary's row");
    assert!(paused, "kept in Postgres");
    screenshot(c, "09b-schedules").await;
    click_and_confirm(c, "#resume-schedule-canary").await;
    until_text(
        c,
        &format!("{canary} td.schedule-status"),
        "the canary on again",
        |t| t == "on",
    )
    .await;
    let runs_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM schedule_runs WHERE schedule = 'canary'")
            .fetch_one(&app.env.pool)
            .await
            .expect("runs");
    click_and_confirm(c, "#trigger-canary").await;
    shared::testing::eventually(Duration::from_secs(10), "the triggered run", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM schedule_runs WHERE schedule = 'canary'")
                .fetch_one(&app.env.pool)
                .await
                .ok()?;
        (n == runs_before + 1).then_some(())
    })
    .await;
    click(c, "#nav a[href='#/']").await;

    // 8. the operator signs out: the old cookie no longer works
    sign_out_and_check(&app, c, "/api/v1/queues", "10-operator-signed-out").await;

    // 9. a project's admin signs in with email and password: the overview is its project's part
    //    of each queue (the dead job is its project's), the worker list is not its to see; it
    //    opens the dead job by id, retries it: it waits in the paused queue, then runs (and
    //    fails again) once the queue resumes
    type_into(c, "#email", "ops.user@example.com").await;
    type_into(c, "#password", PASSWORD).await;
    click(c, "#sign-in").await;
    until_text(c, "#project-scope", "the project's own queues", |t| {
        t.contains("Your project")
    })
    .await;
    until_text(
        c,
        &count_cell("ping", "dead"),
        "its dead job counted",
        |t| t.parse::<u64>().is_ok_and(|n| n >= 1),
    )
    .await;
    assert!(
        c.find(Locator::Css("#outbox")).await.is_err(),
        "no outbox for a project's admin"
    );
    click(c, "#nav a[href='#/workers']").await;
    until_text(c, "#platform-only", "the worker list refused", |t| {
        t.contains("platform operators")
    })
    .await;
    click(c, "#nav a[href='#/']").await;
    type_into(c, "#open-job-id", &dead).await;
    click(c, "#open-job").await;
    until_text(c, "#job-state", "the dead job", |t| t == "dead").await;
    until_text(c, "#job-payload", "its payload", |t| {
        t.contains("\"failAttempts\": 1")
    })
    .await;
    screenshot(c, "11-user-dead-job").await;
    click_and_confirm(c, "#retry").await;
    until_text(c, "#job-state", "the retried job waiting", |t| {
        t == "waiting"
    })
    .await;
    assert!(
        c.find(Locator::Css("#retry")).await.is_err(),
        "no retry for a waiting job"
    );
    screenshot(c, "12-retried").await;
    // (the token the operator signed in with was revoked at sign-out: a new one)
    let operator = app.platform_token_with(&["queues:write"]);
    let resp = app
        .authed(Method::POST, "/api/v1/queues/ping/resume", &operator)
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), StatusCode::OK);
    until_text(c, "#job-state", "the retried job dead again", |t| {
        t == "dead"
    })
    .await;
    until_text(c, "#job-errors tbody", "both attempts' errors", |t| {
        t.matches("asked to fail").count() == 2
    })
    .await;
    screenshot(c, "13-ran-again").await;

    // 10. the user signs out: the old cookie no longer works
    sign_out_and_check(&app, c, "/api/v1/users/me", "14-user-signed-out").await;

    // 11. an operator whose token lacks jobs:read (as the default `comet-api token --platform`)
    //     is told what Failures needs
    let without = app.platform_token_with(&["queues:read", "queues:write"]);
    click(c, "details summary").await;
    type_into(c, "#token", &without).await;
    click(c, "#sign-in-token").await;
    until_text(c, &count_cell("ping", "dead"), "the queue table", |t| {
        !t.is_empty()
    })
    .await;
    click(c, "#nav a[href='#/failures']").await;
    until_text(c, "#needs-jobs-read", "what Failures needs", |t| {
        t.contains("jobs:read") && t.contains("comet-api token --platform")
    })
    .await;
    assert!(
        c.find(Locator::Css("#failures")).await.is_err(),
        "no failure groups without jobs:read"
    );
    screenshot(c, "15-needs-jobs-read").await;
    browser.close().await;
}

/// Signs in over HTTP as `email`: (session cookie value, its CSRF token, the raw Set-Cookie).
async fn http_sign_in(
    app: &TestApp,
    email: &str,
    forwarded_https: bool,
) -> (String, String, String) {
    let page = app
        .request(Method::GET, "/ops/login")
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status(), StatusCode::OK);
    let nonce = set_cookie(&page, "comet_ops_login").expect("a nonce cookie");
    assert!(
        nonce.contains("HttpOnly")
            && nonce.contains("SameSite=Strict")
            && nonce.contains("Path=/ops/login")
    );
    let nonce = nonce.split(';').next().expect("name=value").to_owned();
    let html = page.text().await.expect("a page");
    let csrf = attr(&html, "name=\"csrf\" value=\"");
    let mut req = app
        .request(Method::POST, "/ops/login")
        .header(header::COOKIE, &nonce)
        .form(&[("email", email), ("password", PASSWORD), ("csrf", &csrf)]);
    if forwarded_https {
        req = req.header("x-forwarded-proto", "https");
    }
    let resp = req.send().await.expect("answers");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/ops");
    let raw = set_cookie(&resp, "comet_ops").expect("the session cookie");
    let value = raw
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .expect("name=value")
        .1
        .to_owned();
    let console = app
        .request(Method::GET, "/ops")
        .header(header::COOKIE, format!("comet_ops={value}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(console.status(), StatusCode::OK);
    let csp = console.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let html = console.text().await.expect("the console");
    assert!(!html.contains(&value), "the token is not in the page");
    (value, attr(&html, "data-csrf=\""), raw)
}

/// The `Set-Cookie` of `name` in a response.
fn set_cookie(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The attribute value after `marker` in `html`.
fn attr(html: &str, marker: &str) -> String {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"))
        + marker.len();
    html[start..].chars().take_while(|c| *c != '"').collect()
}

#[tokio::test]
async fn the_console_session_works_only_with_its_csrf_token_and_dies_at_sign_out() {
    let app = TestApp::spawn().await;
    app.admin("ada@example.com").await;
    let job = app
        .enqueue_ping(&json!({"runAt": crate::helpers::later()}))
        .await;
    let path = format!("/api/v1/jobs/{job}");

    let (cookie, csrf, raw) = http_sign_in(&app, "ada@example.com", false).await;
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(raw.contains(part), "{part} in the cookie");
    }
    assert!(!raw.contains("Secure"), "plain HTTP: not Secure");
    let (_, _, over_tls) = http_sign_in(&app, "ada@example.com", true).await;
    assert!(over_tls.contains("; Secure"), "behind TLS: Secure");

    // the cookie alone, or with another token, is refused on every method
    assert_eq!(
        with_cookie(&app, &path, &cookie, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let wrong = "0".repeat(64);
    assert_eq!(
        with_cookie(&app, &path, &cookie, Some(&wrong))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let cancel = app
        .request(Method::POST, &format!("{path}/cancel"))
        .header(header::COOKIE, format!("comet_ops={cookie}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        cancel.status(),
        StatusCode::UNAUTHORIZED,
        "no state change without the header"
    );
    assert_eq!(app.job(&job).await["state"], "delayed");
    // with its CSRF token it is the user's session (the user's permissions)
    assert_eq!(
        with_cookie(&app, &path, &cookie, Some(&csrf))
            .await
            .status(),
        StatusCode::OK
    );
    let workers = with_cookie(&app, "/api/v1/workers", &cookie, Some(&csrf)).await;
    assert_eq!(
        workers.status(),
        StatusCode::FORBIDDEN,
        "the worker list is for platform operators"
    );
    // a Bearer token wins over the cookie: the Bearer path is unchanged
    let bearer = app
        .request(Method::GET, &path)
        .header(header::COOKIE, format!("comet_ops={cookie}"))
        .bearer_auth(app.foreign_token())
        .send()
        .await
        .expect("answers");
    assert_eq!(bearer.status(), StatusCode::UNAUTHORIZED);

    // forms not from the page are refused
    let forged = app
        .request(Method::POST, "/ops/login")
        .form(&[
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("csrf", &wrong),
        ])
        .send()
        .await
        .expect("answers");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "comet_ops").is_none());
    let forged_out = app
        .request(Method::POST, "/ops/logout")
        .header(header::COOKIE, format!("comet_ops={cookie}"))
        .form(&[("csrf", &wrong)])
        .send()
        .await
        .expect("answers");
    assert_eq!(forged_out.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        with_cookie(&app, &path, &cookie, Some(&csrf))
            .await
            .status(),
        StatusCode::OK
    );

    // a wrong password: the sign-in page again, 401, no session
    let page = app
        .request(Method::GET, "/ops/login")
        .send()
        .await
        .expect("answers");
    let nonce = set_cookie(&page, "comet_ops_login").expect("nonce");
    let nonce = nonce.split(';').next().expect("name=value").to_owned();
    let form_csrf = attr(&page.text().await.expect("page"), "name=\"csrf\" value=\"");
    let bad = app
        .request(Method::POST, "/ops/login")
        .header(header::COOKIE, &nonce)
        .form(&[
            ("email", "ada@example.com"),
            ("password", "not the password"),
            ("csrf", &form_csrf),
        ])
        .send()
        .await
        .expect("answers");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&bad, "comet_ops").is_none());
    assert!(
        bad.text()
            .await
            .expect("page")
            .contains("Invalid email or password.")
    );

    // sign-out revokes the session
    let out = app
        .request(Method::POST, "/ops/logout")
        .header(header::COOKIE, format!("comet_ops={cookie}"))
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .expect("answers");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        set_cookie(&out, "comet_ops")
            .expect("cleared")
            .contains("Max-Age=0")
    );
    assert_eq!(
        with_cookie(&app, &path, &cookie, Some(&csrf))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn only_a_platform_token_signs_in_with_a_token_and_assets_are_embedded() {
    let app = TestApp::spawn().await;
    let page = app
        .request(Method::GET, "/ops/login")
        .send()
        .await
        .expect("answers");
    let nonce = set_cookie(&page, "comet_ops_login").expect("nonce");
    let nonce = nonce.split(';').next().expect("name=value").to_owned();
    let csrf = attr(&page.text().await.expect("page"), "name=\"csrf\" value=\"");
    let post = |token: String| {
        app.request(Method::POST, "/ops/login/token")
            .header(header::COOKIE, nonce.clone())
            .form(&[("token", token), ("csrf", csrf.clone())])
            .send()
    };
    let user = post(app.admin_token()).await.expect("answers");
    assert_eq!(
        user.status(),
        StatusCode::UNAUTHORIZED,
        "a project token does not sign in here"
    );
    let operator = post(app.platform_token_with(&["queues:read"]))
        .await
        .expect("answers");
    assert_eq!(operator.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&operator, "comet_ops").is_some());

    for (name, kind) in [("ops.js", "text/javascript"), ("ops.css", "text/css")] {
        let resp = app
            .request(Method::GET, &format!("/ops/assets/{name}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with(kind)
        );
    }
    let missing = app
        .request(Method::GET, "/ops/assets/nope.js")
        .send()
        .await
        .expect("answers");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
