//! The operators' files in `ops/`: the Prometheus alerting rules
//! (`ops/prometheus/comet-alerts.yml`, with its unit tests `comet-alerts.test.yml`) and the
//! Grafana dashboard (`ops/grafana/comet-dashboard.json`).
//!
//! - Every `comet_*` metric either file names is exported by a started `comet-api` or
//!   `comet-worker` (scraped, not looked up in a list), so renaming a metric breaks this test
//!   rather than an operator's alert.
//! - The rules file passes `promtool check rules`, its unit tests pass `promtool test rules`,
//!   and every panel query of the dashboard parses as PromQL (checked by promtool too). promtool
//!   comes from Debian's `prometheus` package, extracted into `target/promtool/` by `./dev deps`
//!   (not installed: the package would start a Prometheus server on the worker's port 9090).
//! - Both files have the shape their tools and operators expect: each rule an alert with `expr`,
//!   `for`, a `severity` and a summary, description and runbook link to a README section that
//!   exists; each dashboard panel on the `${DS_PROMETHEUS}` input.

use std::{
    collections::{BTreeSet, HashSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use shared::testing::{TestEnv, metrics::exports};
use yaml_rust2::{Yaml, YamlLoader};

use crate::helpers::ApiProcess;

const RULES: &str = include_str!("../../../ops/prometheus/comet-alerts.yml");
const RULE_TESTS: &str = include_str!("../../../ops/prometheus/comet-alerts.test.yml");
const DASHBOARD: &str = include_str!("../../../ops/grafana/comet-dashboard.json");
const README: &str = include_str!("../../../README.md");

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

/// Every `comet_*` name in `text` (queries, descriptions, comments alike).
fn metric_names(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bcomet_[a-z0-9_]*[a-z0-9]").expect("a regex");
    re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

/// Whether a scrape exports `name`: as a metric of its own, or as a series of a histogram
/// (`<name>_bucket`, `_sum`, `_count`).
fn exported(text: &str, name: &str) -> bool {
    exports(text, name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                text.lines()
                    .any(|l| l == format!("# TYPE {base} histogram"))
            })
        })
}

/// The rules of the rules file, each with its group's name.
fn rules() -> Vec<(String, Yaml)> {
    let docs = YamlLoader::load_from_str(RULES).expect("comet-alerts.yml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    let groups = docs[0]["groups"].as_vec().expect("a `groups` list");
    assert!(!groups.is_empty(), "at least one group");
    groups
        .iter()
        .flat_map(|g| {
            let name = g["name"]
                .as_str()
                .expect("every group has a name")
                .to_owned();
            let rules = g["rules"].as_vec().expect("every group has `rules`");
            assert!(!rules.is_empty(), "group {name} has rules");
            rules.iter().map(move |r| (name.clone(), r.clone()))
        })
        .collect()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(DASHBOARD).expect("comet-dashboard.json is JSON")
}

/// Every panel of the dashboard, those inside collapsed rows too.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("a `panels` list") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The PromQL of every panel target and template variable of the dashboard.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = panels(dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_owned()
        })
        .collect();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = var["query"]["query"].as_str().or(var["query"].as_str()) {
            out.push(q.to_owned());
        }
    }
    out
}

/// GitHub's anchor of a heading: lowercase, spaces to `-`, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_rule_has_an_expr_a_for_a_severity_and_a_runbook_to_a_readme_section() {
    let anchors: HashSet<String> = README
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    assert!(anchors.contains("troubleshooting"), "{anchors:?}");

    let rules = rules();
    assert!(rules.len() >= 5, "{} rules", rules.len());
    let duration = regex::Regex::new(r"^[0-9]+[smh]$").expect("a regex");
    let mut names = HashSet::new();
    for (group, rule) in &rules {
        let alert = rule["alert"]
            .as_str()
            .unwrap_or_else(|| panic!("a rule of {group} without `alert`"));
        assert!(names.insert(alert.to_owned()), "{alert} is named twice");
        let expr = rule["expr"].as_str().unwrap_or_default();
        assert!(!expr.trim().is_empty(), "{alert}: no expr");
        let r#for = rule["for"].as_str().unwrap_or_default();
        assert!(
            duration.is_match(r#for),
            "{alert}: `for` is {:?}",
            rule["for"]
        );
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{alert}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook_url"] {
            let v = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(!v.trim().is_empty(), "{alert}: no annotations.{key}");
        }
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let section = runbook
            .strip_prefix("README.md#")
            .unwrap_or_else(|| panic!("{alert}: runbook {runbook} is not a README section"));
        assert!(
            anchors.contains(section),
            "{alert}: README.md has no section #{section}"
        );
    }
    // what issue 14 asks the example rules to cover, each by its metric
    for needed in [
        "comet_queue_latency_seconds",
        "comet_jobs_total",
        "comet_outbox_lag_seconds",
        "comet_queue_workers",
        "comet_schedule_missed_total",
    ] {
        assert!(
            rules
                .iter()
                .any(|(_, r)| r["expr"].as_str().is_some_and(|e| e.contains(needed))),
            "no alert uses {needed}"
        );
    }
    // the unit tests name only alerts the file has
    for name in regex::Regex::new(r"alertname: (\w+)")
        .expect("a regex")
        .captures_iter(RULE_TESTS)
    {
        assert!(names.contains(&name[1]), "the unit tests name {}", &name[1]);
    }
}

#[test]
fn every_dashboard_panel_queries_the_prometheus_input_and_the_needed_panels_are_there() {
    let d = dashboard();
    let input = d["__inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS input");
    assert_eq!(input["type"], "datasource");
    assert_eq!(input["pluginId"], "prometheus");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some());

    let ds = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let mut ids = HashSet::new();
    let mut titles = Vec::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        let id = p["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].as_u64().is_some(), "{title}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        titles.push(title.to_lowercase());
        assert_eq!(p["datasource"], ds, "{title}: datasource");
        let targets = p["targets"].as_array().expect("every panel has targets");
        assert!(!targets.is_empty(), "{title}: no target");
        for t in targets {
            assert_eq!(t["datasource"], ds, "{title}: a target's datasource");
            assert!(
                t["refId"].as_str().is_some(),
                "{title}: a target without refId"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| e.contains("comet_")),
                "{title}: a target queries no Comet metric"
            );
        }
    }
    for var in d["templating"]["list"].as_array().into_iter().flatten() {
        assert_eq!(var["datasource"], ds, "variable {}", var["name"]);
    }
    // what issue 14's dashboard shows, each by a panel title
    for needed in [
        "throughput",
        "dead",
        "depth",
        "latency",
        "outbox",
        "workers",
        "api request rate",
        "api latency",
        "schedule ticks",
        "missed ticks",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(needed)),
            "no panel for {needed}: {titles:?}"
        );
    }
}

/// promtool: `PROMTOOL`, else `target/promtool/promtool` (`./dev deps` puts it there), else on
/// `PATH`.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return p.into();
    }
    // the test binary is target/<profile>/deps/<name>: the target directory is three up
    let exe = std::env::current_exe().expect("the test binary's path");
    if let Some(target) = exe.ancestors().nth(3) {
        let p = target.join("promtool/promtool");
        if p.is_file() {
            return p;
        }
    }
    let on_path = Command::new("promtool").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "promtool is missing: ./dev deps extracts it from Debian's prometheus package into \
         target/promtool/ (or set PROMTOOL)"
    );
    "promtool".into()
}

fn run_promtool(args: &[&str], dir: &Path) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests_and_every_dashboard_query_parses() {
    let prometheus = ops_dir().join("prometheus");
    run_promtool(&["check", "rules", "comet-alerts.yml"], &prometheus);
    run_promtool(&["test", "rules", "comet-alerts.test.yml"], &prometheus);

    // the dashboard's queries, as recording rules, with Grafana's variables given values
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries(&dashboard()).iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$queue", ".*");
        let q = match q.strip_prefix("label_values(") {
            // a variable's label_values(metric, label) reads the metric
            Some(rest) => rest.split(',').next().unwrap_or_default().to_owned(),
            None => q,
        };
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&q).expect("a JSON string is a YAML string")
        ));
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("dashboard.yml"), rules).expect("write");
    run_promtool(&["check", "rules", "dashboard.yml"], dir.path());
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_name_is_exported_by_the_api_or_the_worker() {
    let mut used = metric_names(RULES);
    used.extend(metric_names(DASHBOARD));
    assert!(used.len() >= 10, "the files were read: {used:?}");

    let env = TestEnv::new().await;
    // a process of its own: only what the API itself exports
    let api = ApiProcess::spawn_with_env(&env, &[]).await;
    // the worker, in-process, on its own HTTP port
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the worker's port");
    let worker_port = listener.local_addr().expect("an address").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(comet_worker::run(
        env.settings.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));

    // gauges appear once their first reading is done (the maintenance pass, the registry)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let scrape = |url: String| async move {
            match reqwest::get(url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        };
        let api_text = scrape(format!("{}/metrics", api.address)).await;
        let worker_text = scrape(format!("http://127.0.0.1:{worker_port}/metrics")).await;
        let missing: Vec<&String> = used
            .iter()
            .filter(|m| !exported(&api_text, m) && !exported(&worker_text, m))
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let _ = stop.send(());
    worker
        .await
        .expect("the worker task")
        .expect("the worker stops cleanly");
    drop(api);
    env.cleanup().await;
    assert!(
        missing.is_empty(),
        "ops/ names metrics neither the API nor the worker exports: {missing:?}"
    );
}

#[test]
fn metric_names_are_read_from_queries_and_histogram_series_count_as_their_histogram() {
    assert_eq!(
        metric_names(r#"sum(rate(comet_a_total{x="comet-y"}[5m])) / comet_b_bucket"#),
        BTreeSet::from(["comet_a_total".to_owned(), "comet_b_bucket".to_owned()])
    );
    let text = "# TYPE comet_d histogram\ncomet_d_bucket{le=\"1\"} 0\n# TYPE comet_c counter\n";
    assert!(exported(text, "comet_c"));
    assert!(exported(text, "comet_d_bucket"));
    assert!(exported(text, "comet_d_count"));
    assert!(!exported(text, "comet_c_bucket"));
    assert!(!exported(text, "comet_e"));
    assert_eq!(
        anchor(" Alerting and dashboards"),
        "alerting-and-dashboards"
    );
    assert_eq!(
        anchor("A tick, from clock to sweep"),
        "a-tick-from-clock-to-sweep"
    );
}
