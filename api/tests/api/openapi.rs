//! The OpenAPI document and the served routes are the same set: a documented route that is not
//! served fails one test, a served route that is not documented (registered outside utoipa-axum's
//! `routes!`) fails another. The document states the limits the API enforces (ranges, lengths,
//! patterns, required fields, filters that may be empty), from the same constants as the checks,
//! so a limit cannot silently drop out of it; `.ci/schemathesis.sh` then holds the running API to
//! the document.

use std::path::{Path, PathBuf};

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, content_type, json_with_status, operations, send, served_spec};

/// Operations that are public on purpose (load balancers, Prometheus, API clients' tooling).
const PUBLIC: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/password-reset",
    "/api/v1/auth/password-reset/confirm",
    "/api/v1/invitations/accept",
    // the HTML page the invitation email links to, and its form
    "/invitations/accept",
    // the ops console's pages (its session is a cookie, not a Bearer token) and assets
    "/ops",
    "/ops/login",
    "/ops/login/token",
    "/ops/logout",
    "/ops/assets/{name}",
];

/// Routes any valid token may call: they declare `bearer` with no scope.
const ANY_TOKEN: &[&str] = &[
    "/api/v1/auth/logout",
    // a user's own password (a token without a user is refused 403)
    "/api/v1/auth/change-password",
    "/api/v1/users/me",
    "/api/v1/users/me/notification-preferences",
    "/api/v1/projects/current",
    // a user's own inbox: any user's token of the project
    "/api/v1/notifications",
    "/api/v1/notifications/{id}",
    "/api/v1/notifications/unread-count",
    "/api/v1/notifications/acknowledge-all",
    "/api/v1/notifications/{id}/acknowledge",
    "/api/v1/notifications/{id}/webview-action",
    "/api/v1/notifications/stream",
    "/api/v1/notifications/stream-ticket",
];

#[tokio::test]
async fn the_openapi_document_is_json_of_version_3() {
    let app = TestApp::spawn().await;

    let resp = app.openapi().await;

    let content_type = content_type(&resp);
    let spec = json_with_status(resp, StatusCode::OK).await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let version = spec["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, got {version}");
    assert!(spec["info"]["title"].is_string());
    assert!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer",
        "the bearer scheme is declared: {:#}",
        spec["components"]["securitySchemes"]
    );
    assert!(!operations(&spec).is_empty());
    // the served document is the one the crate builds
    assert_eq!(
        spec,
        serde_json::to_value(comet_api::openapi()).expect("serialisable")
    );
}

#[tokio::test]
async fn every_documented_route_is_served_and_answers_a_documented_status() {
    let app = TestApp::spawn().await;
    let spec = served_spec(&app).await;
    let token = app.admin_token();

    for op in operations(&spec) {
        let resp = send(op.request(&app, Some(&token))).await;

        let status = resp.status();
        let body: serde_json::Value = if op.path == "/metrics" {
            serde_json::Value::Null
        } else {
            resp.json().await.unwrap_or_default()
        };
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{op} is documented but not served"
        );
        assert_ne!(
            body["error"]["code"], "route_not_found",
            "{op} is documented but not served"
        );
        assert!(
            op.responses.contains(&status.as_u16().to_string()),
            "{op} answered {status}, which it does not document ({:?}): {body}",
            op.responses
        );
    }
}

#[tokio::test]
async fn every_operation_but_the_public_ones_declares_a_bearer_permission() {
    let spec = serde_json::to_value(comet_api::openapi()).expect("serialisable");

    for op in operations(&spec) {
        if PUBLIC.contains(&op.path.as_str()) {
            assert!(op.bearer_scopes.is_none(), "{op} is public and says so");
            continue;
        }
        let scopes = op
            .bearer_scopes
            .as_ref()
            .unwrap_or_else(|| panic!("{op} declares no bearer security requirement"));
        if ANY_TOKEN.contains(&op.path.as_str()) {
            assert!(scopes.is_empty(), "{op} needs only a valid token");
            assert!(
                op.responses.iter().any(|r| r == "401"),
                "{op} documents its 401"
            );
            continue;
        }
        assert!(!scopes.is_empty(), "{op} names the permission it needs");
        for scope in scopes {
            assert!(
                comet_api::auth::ALL.contains(&scope.as_str()),
                "{op} needs {scope}, which is not a permission the API knows"
            );
        }
        for status in ["401", "403"] {
            assert!(
                op.responses.iter().any(|r| r == status),
                "{op} documents its {status}"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read api/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `line` calls one of axum's own routing methods, or builds a plain `axum::Router`,
/// which would serve routes that utoipa-axum never sees.
fn registers_undocumented_routes(line: &str) -> bool {
    const CALLS: &[&str] = &[".route(", ".route_service(", ".nest(", ".nest_service("];
    if CALLS.iter().any(|c| line.contains(c)) || line.contains("axum::routing") {
        return true;
    }
    // `Router::new(` not preceded by an identifier (so `OpenApiRouter::new(` is fine)
    line.match_indices("Router::new(").any(|(i, _)| {
        !line[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn the_scanner_spots_plain_axum_routes() {
    assert!(registers_undocumented_routes(r#"    .route("/x", get(x))"#));
    assert!(registers_undocumented_routes("let r = Router::new();"));
    assert!(registers_undocumented_routes("use axum::routing::get;"));
    assert!(registers_undocumented_routes(r#".nest("/v2", other)"#));
    assert!(!registers_undocumented_routes("OpenApiRouter::new()"));
    assert!(!registers_undocumented_routes(".routes(routes!(get_job))"));
    assert!(!registers_undocumented_routes(".fallback(handler)"));
}

#[test]
fn no_route_is_registered_outside_utoipa_axum() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("lib.rs")),
        "the scan found the crate's sources"
    );

    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if registers_undocumented_routes(line) {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }

    assert!(
        offenders.is_empty(),
        "routes registered outside utoipa-axum's `routes!` are missing from the OpenAPI \
         document:\n{}",
        offenders.join("\n")
    );
}

/// The operation's path with every parameter replaced by `value`.
fn with_params(path: &str, value: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                value
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_status_a_route_answers_is_documented() {
    let app = TestApp::spawn().await;
    let down = TestApp::spawn_with(|s| s.redis.url = "redis://127.0.0.1:1".into()).await;
    let spec = served_spec(&app).await;
    let token = app.admin_token();
    let mut undocumented = Vec::new();

    for op in operations(&spec) {
        let mut answers = Vec::new();
        let authed =
            |app: &TestApp, path: &str| app.request(op.method.clone(), path).bearer_auth(&token);
        if op.path.contains('{') {
            let path = with_params(&op.path, "not-a-uuid");
            let mut req = authed(&app, &path);
            if op.has_body {
                req = req.json(&serde_json::json!({}));
            }
            answers.push(("a malformed path parameter", send(req).await.status()));
        }
        if op.has_body {
            let path = &op.concrete_path;
            let no_type = authed(&app, path).body("{}");
            let malformed = authed(&app, path)
                .header(header::CONTENT_TYPE, "application/json")
                .body("{");
            let wrong_shape = authed(&app, path).json(&serde_json::json!({"noSuchField": 1}));
            answers.push(("a body without content type", send(no_type).await.status()));
            answers.push(("malformed JSON", send(malformed).await.status()));
            let oversized = authed(&app, path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(format!("{{\"k\": \"{}\"}}", "k".repeat(1024 * 1024 + 16)));
            answers.push(("JSON of the wrong shape", send(wrong_shape).await.status()));
            answers.push(("a body over 1 MiB", send(oversized).await.status()));
        }
        answers.push((
            "Redis down",
            send(op.request(&down, Some(&token))).await.status(),
        ));

        for (case, status) in answers {
            if !op.responses.contains(&status.as_u16().to_string()) {
                undocumented.push(format!(
                    "{op}: {case} → {status} (documented: {:?})",
                    op.responses
                ));
            }
        }
    }

    assert!(
        undocumented.is_empty(),
        "statuses the API answers but its OpenAPI document does not list:\n{}",
        undocumented.join("\n")
    );
}

/// The schema `v` names: itself, the component its `$ref` points at, or for a nullable
/// `oneOf: [null, X]` the schema X.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    if let Some(name) = v["$ref"].as_str() {
        let name = name
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a component reference: {name}"));
        return resolve(spec, &spec["components"]["schemas"][name]);
    }
    if let Some(items) = v["oneOf"].as_array()
        && items.len() == 2
        && let Some(other) = items.iter().find(|s| s["type"] != "null")
        && items.iter().any(|s| s["type"] == "null")
    {
        return resolve(spec, other);
    }
    v
}

/// Whether a schema lets JSON `null` through.
fn allows_null(v: &Value) -> bool {
    v["type"] == "null"
        || v["type"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "null"))
        || v["oneOf"]
            .as_array()
            .is_some_and(|items| items.iter().any(allows_null))
}

/// The request body schema of a component, by name.
fn body<'a>(spec: &'a Value, name: &str) -> &'a Value {
    let schema = &spec["components"]["schemas"][name];
    assert!(schema.is_object(), "the document has schema {name}");
    schema
}

/// A property of a body schema, resolved.
fn property<'a>(spec: &'a Value, schema: &'a Value, name: &str) -> &'a Value {
    let p = &schema["properties"][name];
    assert!(p.is_object(), "property {name} of {schema}");
    resolve(spec, p)
}

/// A query parameter of an operation, resolved.
fn query_param<'a>(spec: &'a Value, path: &str, name: &str) -> &'a Value {
    let params = spec["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path} has parameters"));
    let p = params
        .iter()
        .find(|p| p["name"] == name && p["in"] == "query")
        .unwrap_or_else(|| panic!("GET {path} has query parameter {name}"));
    resolve(spec, &p["schema"])
}

fn number(v: &Value, key: &str) -> i128 {
    v[key]
        .as_i64()
        .map(i128::from)
        .or_else(|| v[key].as_u64().map(i128::from))
        .unwrap_or_else(|| panic!("{key} of {v}"))
}

/// `(minimum, maximum)` of an integer schema.
fn range(v: &Value) -> (i128, i128) {
    (number(v, "minimum"), number(v, "maximum"))
}

/// `(minLength, maxLength)` of a string schema (a missing minLength is 0).
fn lengths(v: &Value) -> (i128, i128) {
    let min = if v["minLength"].is_null() {
        0
    } else {
        number(v, "minLength")
    };
    (min, number(v, "maxLength"))
}

/// Whether a query filter's schema takes the empty string (no filter) beside its values.
fn takes_empty(v: &Value) -> bool {
    let empty = |s: &Value| s["enum"].as_array().is_some_and(|e| e.contains(&json!("")));
    empty(v)
        || v["oneOf"]
            .as_array()
            .is_some_and(|items| items.iter().any(empty))
}

#[test]
fn the_document_states_the_limits_the_api_enforces() {
    use comet_api::routes::{auth, invitations, jobs, users};
    use shared::domain::{
        MAX_EMAIL, MAX_IDEMPOTENCY_KEY, MAX_NAME, MAX_PASSWORD, MAX_SEARCH, MIN_PASSWORD,
        NO_NUL_PATTERN, PRINTABLE_PATTERN,
    };
    let spec = serde_json::to_value(comet_api::openapi()).expect("serialisable");
    let max = |n: usize| i128::try_from(n).expect("small");

    let ping = body(&spec, "PingRequest");
    let sleep = property(&spec, ping, "sleepMs");
    assert_eq!(range(sleep), (0, i128::from(shared::jobs::MAX_SLEEP_MS)));
    let fail = property(&spec, ping, "failAttempts");
    assert_eq!(range(fail), (0, i128::from(jobs::MAX_FAIL_ATTEMPTS)));
    let priority = property(&spec, ping, "priority");
    let p = i128::from(jobs::MAX_PRIORITY);
    assert_eq!(range(priority), (-p, p));
    let attempts = property(&spec, ping, "maxAttempts");
    assert_eq!(range(attempts), (1, i128::from(jobs::MAX_ATTEMPTS)));
    let key = property(&spec, ping, "idempotencyKey");
    assert_eq!(lengths(key), (1, max(MAX_IDEMPOTENCY_KEY)));
    assert_eq!(key["pattern"], PRINTABLE_PATTERN);
    assert_eq!(property(&spec, ping, "runAt")["format"], "date-time");

    let invite = body(&spec, "InviteRequest");
    let email = property(&spec, invite, "email");
    assert_eq!(
        (email["format"].as_str(), number(email, "maxLength")),
        (Some("email"), max(MAX_EMAIL))
    );
    let roles = property(&spec, invite, "roleIds");
    assert_eq!(
        (number(roles, "minItems"), number(roles, "maxItems")),
        (1, max(users::invite::MAX_ROLES))
    );
    let name = property(&spec, invite, "name");
    assert_eq!(lengths(name), (0, max(MAX_NAME)));
    assert_eq!(name["pattern"], PRINTABLE_PATTERN);

    let login = body(&spec, "LoginRequest");
    let email = property(&spec, login, "email");
    assert_eq!(
        lengths(email),
        (1, max(MAX_EMAIL)),
        "a login email is not empty"
    );
    assert_eq!(email["pattern"], PRINTABLE_PATTERN);
    let password = property(&spec, login, "password");
    assert_eq!(lengths(password), (1, max(auth::MAX_LOGIN_PASSWORD)));
    assert_eq!(password["pattern"], NO_NUL_PATTERN);

    let accept = body(&spec, "AcceptInvitation");
    let token = property(&spec, accept, "token");
    assert_eq!(lengths(token), (1, max(invitations::MAX_TOKEN)));
    let password = property(&spec, accept, "password");
    assert_eq!(lengths(password), (max(MIN_PASSWORD), max(MAX_PASSWORD)));
    assert_eq!(password["pattern"], NO_NUL_PATTERN);

    for path in [
        "/api/v1/users",
        "/api/v1/audit-logs",
        "/api/v1/queues/{queue}/jobs",
    ] {
        assert_eq!(
            range(query_param(&spec, path, "page")),
            (1, i128::from(u32::MAX)),
            "{path}"
        );
        let per_page = query_param(&spec, path, "perPage");
        let most = i128::from(comet_api::envelope::MAX_PER_PAGE);
        assert_eq!(range(per_page), (1, most), "{path}");
    }
    for (path, name) in [
        ("/api/v1/users", "search"),
        ("/api/v1/users/export", "search"),
        ("/api/v1/audit-logs", "action"),
        ("/api/v1/audit-logs", "target"),
    ] {
        let term = query_param(&spec, path, name);
        assert_eq!(lengths(term), (0, max(MAX_SEARCH)), "{path} {name}");
        assert_eq!(term["pattern"], PRINTABLE_PATTERN, "{path} {name}");
    }
}

#[test]
fn the_document_says_which_values_are_required_and_which_filters_may_be_empty() {
    let spec = serde_json::to_value(comet_api::openapi()).expect("serialisable");

    // a required field the API refuses as `null` is not nullable in the document
    for name in [
        "InviteRequest",
        "LoginRequest",
        "AcceptInvitation",
        "RoleRequest",
    ] {
        let schema = body(&spec, name);
        let required = schema["required"].as_array().expect("required fields");
        assert!(!required.is_empty(), "{name}");
        for field in required {
            let field = field.as_str().expect("a name");
            let p = &schema["properties"][field];
            assert!(
                !allows_null(p),
                "{name}.{field} is required and not nullable: {p}"
            );
        }
    }

    // an empty filter is no filter, and the document says so
    for (path, name) in [
        ("/api/v1/users", "status"),
        ("/api/v1/users", "role"),
        ("/api/v1/users/export", "role"),
        ("/api/v1/audit-logs", "actor"),
        ("/api/v1/audit-logs", "from"),
        ("/api/v1/audit-logs", "to"),
        ("/api/v1/audit-logs/export", "to"),
    ] {
        let filter = query_param(&spec, path, name);
        assert!(takes_empty(filter), "{path} {name}: {filter}");
    }
    let status = query_param(&spec, "/api/v1/users", "status");
    for word in ["INVITED", "ACTIVE", "DEACTIVATED", "active"] {
        assert!(
            status["enum"]
                .as_array()
                .is_some_and(|e| e.contains(&json!(word))),
            "{word}"
        );
    }

    // a rule's channels and types are spelt out
    let rule = body(&spec, "RuleRequest");
    let channels = resolve(&spec, &property(&spec, rule, "channels")["items"]);
    assert_eq!(
        channels["enum"],
        json!(shared::rules::CHANNELS),
        "the channels a rule takes"
    );
    let types = property(&spec, rule, "eventTypes");
    assert_eq!(
        number(types, "maxItems"),
        i128::try_from(shared::rules::MAX_PATTERNS).expect("small")
    );
    let pattern = resolve(&spec, &types["items"]);
    assert_eq!(
        pattern["oneOf"].as_array().map(Vec::len),
        Some(3),
        "exact, prefix or `*`"
    );
    let event = body(&spec, "EventRequest");
    assert_eq!(
        property(&spec, event, "type")["pattern"],
        shared::rules::EVENT_TYPE_PATTERN
    );

    // a queue lists every state but `pending`, which is still in Postgres
    let state = query_param(&spec, "/api/v1/queues/{queue}/jobs", "state");
    let states = state["enum"].as_array().expect("an enum of states");
    assert!(!states.contains(&json!("pending")));
    assert_eq!(states.len(), shared::queue::JobState::REDIS.len());
}

#[test]
fn the_documented_patterns_let_through_exactly_what_the_api_accepts() {
    use shared::domain::{
        DisplayName, NO_NUL_NOT_BLANK_PATTERN, NO_NUL_PATTERN, PRINTABLE_NOT_BLANK_PATTERN,
        PRINTABLE_PATTERN, Password, SearchTerm,
    };
    let printable = regex::Regex::new(PRINTABLE_PATTERN).expect("a regular expression");
    let no_nul = regex::Regex::new(NO_NUL_PATTERN).expect("a regular expression");
    let printable_not_blank =
        regex::Regex::new(PRINTABLE_NOT_BLANK_PATTERN).expect("a regular expression");
    let no_nul_not_blank =
        regex::Regex::new(NO_NUL_NOT_BLANK_PATTERN).expect("a regular expression");

    // every character (surrogates are not characters), inside a value that is otherwise valid
    for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
        let short = format!("a{c}b");
        let documented = printable.is_match(&short);
        assert_eq!(
            SearchTerm::parse_optional(Some(&short)).is_ok(),
            documented,
            "U+{:04X} in a search term",
            c as u32
        );
        assert_eq!(
            DisplayName::parse_optional(Some(&short)).is_ok(),
            documented,
            "U+{:04X} in a name",
            c as u32
        );
        let password = format!("password-{c}-long");
        assert_eq!(
            Password::parse(password.clone()).is_ok(),
            no_nul.is_match(&password),
            "U+{:04X} in a password",
            c as u32
        );
        // alone, and between spaces: blank is what `str::trim` leaves empty
        for text in [c.to_string(), format!(" {c} ")] {
            let not_blank = !text.trim().is_empty();
            assert_eq!(
                printable_not_blank.is_match(&text),
                not_blank && !text.chars().any(char::is_control),
                "U+{:04X} in a rule name",
                c as u32
            );
            assert_eq!(
                no_nul_not_blank.is_match(&text),
                not_blank && !text.contains('\0'),
                "U+{:04X} in a rule title",
                c as u32
            );
        }
    }
}

#[test]
fn the_documented_event_type_patterns_are_the_ones_the_api_parses() {
    use shared::rules::{
        EVENT_TYPE_PATTERN, EventType, MAX_EVENT_TYPE, PREFIX_PATTERN, TypePattern,
    };
    let exact = regex::Regex::new(EVENT_TYPE_PATTERN).expect("a regular expression");
    let prefix = regex::Regex::new(PREFIX_PATTERN).expect("a regular expression");
    let long = "a".repeat(MAX_EVENT_TYPE);
    let too_long = "a".repeat(MAX_EVENT_TYPE + 1);
    let cases = [
        "transfer.failed",
        "a",
        "x-1.y_2",
        "",
        ".",
        "a.",
        ".a",
        "a..b",
        "a b",
        "a.*",
        "*",
        "a*",
        "a.b.*",
        ".*",
        "*.a",
        "é",
        "a.é",
        &long,
        &too_long,
        &format!("{long}.*"),
        &format!("{too_long}.*"),
    ];
    for case in cases {
        let documented = exact.is_match(case) && case.chars().count() <= MAX_EVENT_TYPE;
        assert_eq!(EventType::parse(case).is_ok(), documented, "type {case:?}");
        let documented_pattern = documented
            || case == "*"
            || (prefix.is_match(case) && case.chars().count() <= MAX_EVENT_TYPE + 2);
        assert_eq!(
            TypePattern::parse(case).is_ok(),
            documented_pattern,
            "pattern {case:?}"
        );
    }
}
