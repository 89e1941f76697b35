//! The observability artefacts of `deploy/observability/` checked with Prometheus' own tool,
//! `promtool` (Debian's `prometheus` package, installed by `scripts/setup.sh`):
//!
//! - the Prometheus configuration and rule files parse (`promtool check config`), the rules'
//!   unit tests pass (`promtool test rules`), and every alert names a `runbook_url` whose
//!   section exists in `docs/operations.md`;
//! - with a real stack running (Redis, development broker, camera simulator, a coordinator,
//!   an ingest node and a worker, all started from their typed configs) and frames flowing,
//!   every node's `/metrics` passes `promtool check metrics` (the exposition lint) and carries
//!   the standard `process_*` metrics; every Grafana panel's query is valid PromQL (written
//!   as recording rules and parsed by `promtool check rules`); and every metric name that a
//!   panel or a rule uses is one the nodes export (or one of the rules records, or one
//!   Prometheus makes itself); then a real Prometheus server (same package) scrapes the nodes
//!   with the repository's rule files, loads every rule, and evaluates every panel query and
//!   rule expression without error on the live series.
//!
//! Every check fails the test; a missing `promtool`/`prometheus` fails it with the command to
//! install it. In the `media` nextest group (package `panoptes-loadtest`, kind test); the
//! stack test takes about 13 s, the rule tests about 8 s.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use panoptes_loadtest::stack::{Stack, StackCamera, StackSpec};
use panoptes_testkit::{get_text, wait_until};

/// `deploy/observability` of the repository.
fn observability() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability")
}

/// Runs `promtool args`, with `stdin` piped in if given; returns success and its output.
fn promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> Result<(bool, String)> {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "running promtool (Debian package `prometheus`: `bash scripts/setup.sh` installs it)",
        )?;
    let mut pipe = child.stdin.take().context("promtool stdin")?;
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes())?;
    }
    drop(pipe);
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// The rule files, parsed.
fn rule_files() -> Result<Vec<(String, serde_yaml::Value)>> {
    let dir = observability().join("prometheus/rules");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yml") {
            let text = std::fs::read_to_string(&path)?;
            out.push((path.display().to_string(), serde_yaml::from_str(&text)?));
        }
    }
    ensure!(out.len() >= 2, "rule files in {}", dir.display());
    Ok(out)
}

/// Every rule of every group: (alert or record name, expression, rule).
fn rules() -> Result<Vec<(String, String, serde_yaml::Value)>> {
    let mut out = Vec::new();
    for (file, doc) in rule_files()? {
        let groups = doc["groups"].as_sequence().context(file.clone())?;
        for rule in groups
            .iter()
            .flat_map(|g| g["rules"].as_sequence())
            .flatten()
        {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            let expr = rule["expr"].as_str();
            let (Some(name), Some(expr)) = (name, expr) else {
                bail!("{file}: a rule without name or expr: {rule:?}");
            };
            out.push((name.to_string(), expr.to_string(), rule.clone()));
        }
    }
    Ok(out)
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests_and_alerts_have_runbooks() -> Result<()> {
    let dir = observability().join("prometheus");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], None, &dir)?;
    assert!(ok, "promtool check config:\n{out}");
    eprintln!("{out}");
    let mut tests: Vec<String> = std::fs::read_dir(dir.join("tests"))?
        .map(|e| Ok(format!("tests/{}", e?.file_name().to_string_lossy())))
        .collect::<Result<_>>()?;
    tests.sort();
    ensure!(tests.len() >= 2, "rule unit tests: {tests:?}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, out) = promtool(&args, None, &dir)?;
    assert!(ok, "promtool test rules:\n{out}");
    eprintln!("{out}");

    // Every alert: a severity, and a runbook section that exists.
    let operations = std::fs::read_to_string(observability().join("../../docs/operations.md"))?;
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let mut alerts = 0;
    for (name, _, rule) in rules()? {
        if rule["alert"].is_null() {
            continue;
        }
        alerts += 1;
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        let want = format!("docs/operations.md#{}", name.to_lowercase());
        assert_eq!(url, want, "{name}: runbook_url");
        assert!(
            anchors.contains(&name.to_lowercase()),
            "docs/operations.md has no `### {name}` section"
        );
        let tested = tests.iter().any(|t| {
            std::fs::read_to_string(dir.join(t))
                .is_ok_and(|s| s.contains(&format!("alertname: {name}\n")))
        });
        assert!(tested, "{name} has no promtool unit test");
    }
    assert!(alerts >= 15, "{alerts} alerts");
    Ok(())
}

/// Metric names a PromQL expression reads (series selectors), found by a small tokenizer:
/// string literals, label matchers (`{…}`), ranges (`[…]`), numbers, keywords, function
/// calls and the label lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`
/// are skipped; what is left are metric names.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Words that open a label list; with the other keywords below, never metric names.
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const OTHER_KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |i: usize, close: char| {
        let mut j = i;
        while j < chars.len() && chars[j] != close {
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut k = i;
            while k < chars.len() && chars[k].is_whitespace() {
                k += 1;
            }
            let call = k < chars.len() && chars[k] == '(';
            if LABEL_LISTS.contains(&word.as_str()) && call {
                i = skip_to(k + 1, ')');
            } else if !call
                && !LABEL_LISTS.contains(&word.as_str())
                && !OTHER_KEYWORDS.contains(&word.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_of_expressions() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (le, stage) (rate(a_bucket{x=\"b c\", le!~'1'}[5m])))"
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("sum(b) > on () group_left (x) max(c offset 1m) and bool 2e3 or vector(0)"),
        ["b", "c"]
    );
    assert_eq!(
        names("up{job=~\"p.*\"} == 0 unless rec:name:rate5m"),
        ["rec:name:rate5m", "up"]
    );
}

/// Metric families of a `/metrics` text, with a histogram's and a summary's series names.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Labelled metric families whose series appear at their first event only (a drop, a camera
/// failure, a back-pressure pause, a failed delivery, an aborted transaction, a refused API
/// request), so a healthy run's `/metrics` does not show them. For these the test asks the
/// name to be defined in a product crate's source instead.
const EVENT_ONLY: &[&str] = &[
    "panoptes_ingest_frames_dropped_total",
    "panoptes_ingest_camera_errors_total",
    "panoptes_worker_partition_paused",
    "panoptes_worker_publish_errors_total",
    "panoptes_worker_transactions_aborted_total",
    "panoptes_coordinator_api_auth_failures_total",
    "panoptes_worker_drift_active",
];

/// The Rust source of the product crates that define metrics, concatenated.
fn product_source() -> Result<String> {
    fn walk(dir: &Path, out: &mut String) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path)?);
            }
        }
        Ok(())
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = String::new();
    for krate in [
        "coordinator/src",
        "ingest/src",
        "workers/src",
        "runtime/src",
    ] {
        walk(&root.join(krate), &mut out)?;
    }
    Ok(out)
}

/// Grafana variables replaced by values a real query could have.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$camera", "cam0")
        .replace("$instance", ".*")
        .replace("$ingest_node", ".*")
}

/// Every panel target's expression and every query variable's metric, of every dashboard.
fn dashboard_queries() -> Result<Vec<(String, String)>> {
    fn walk(panels: &serde_json::Value, file: &str, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("{file}: {}", p["title"]), e.to_string()));
                }
            }
            walk(&p["panels"], file, out);
        }
    }
    let dir = observability().join("grafana/dashboards");
    let mut out = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path)?).with_context(|| file.clone())?;
        files += 1;
        walk(&dash["panels"], &file, &mut out);
        for var in dash["templating"]["list"].as_array().into_iter().flatten() {
            // `label_values(<selector>, <label>)`: Grafana's syntax around a selector.
            if let Some(q) = var["definition"].as_str() {
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|s| s.rsplit_once(','))
                    .map(|(sel, _)| sel.to_string())
                    .with_context(|| format!("{file}: variable query {q}"))?;
                out.push((format!("{file}: variable {}", var["name"]), inner));
            }
        }
    }
    ensure!(files >= 4, "dashboards in {}", dir.display());
    Ok(out)
}

/// Writes `exprs` as recording rules and has `promtool check rules` parse them.
fn check_promql(exprs: &[(String, String)]) -> Result<()> {
    let mut rules = Vec::new();
    for (i, (_, e)) in exprs.iter().enumerate() {
        rules.push(serde_yaml::to_value(serde_json::json!({
            "record": format!("dashboard:query_{i}"),
            "expr": concrete(e),
        }))?);
    }
    let doc = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("dashboards.yml"),
        serde_yaml::to_string(&doc)?,
    )?;
    let (ok, out) = promtool(&["check", "rules", "dashboards.yml"], None, dir.path())?;
    if !ok {
        let listing: Vec<String> = exprs
            .iter()
            .enumerate()
            .map(|(i, (w, e))| format!("query_{i}: {w}: {e}"))
            .collect();
        bail!(
            "promtool check rules on the dashboards' queries:\n{out}\n{}",
            listing.join("\n")
        );
    }
    Ok(())
}

/// A running stack and every node's (name, base URL, `/metrics` text) once frames have
/// flowed to detections.
type Scraped = (Stack, Vec<(String, String, String)>);

/// Starts the stack and scrapes it once frames have flowed to detections.
fn scrape_running_stack() -> Result<Scraped> {
    let spec = StackSpec::single_region(StackCamera::small_set(2, "local", 5), 2);
    let mut stack = Stack::start(spec)?;
    stack.start_members("local", &["ingest-0"], &["w0"])?;
    stack.register_cameras()?;
    stack.wait_settled(Duration::from_secs(60))?;
    let targets = [
        ("coordinator".to_string(), stack.coordinator()?.http.clone()),
        ("ingest".to_string(), stack.ingest["ingest-0"].http.clone()),
        ("worker".to_string(), stack.workers["w0"].http.clone()),
    ];
    wait_until(
        "detection records from both cameras' frames",
        Duration::from_secs(60),
        || {
            let w = &stack.workers["w0"];
            let i = &stack.ingest["ingest-0"];
            let published = i.metric("panoptes_ingest_frames_total{camera=\"cam0\"}")?
                + i.metric("panoptes_ingest_frames_total{camera=\"cam1\"}")?;
            let delivered = w.metric("panoptes_worker_end_to_end_latency_seconds_count")?;
            // The consumer loop sets the lag gauges every 2 s.
            let lag = w.metrics().contains("panoptes_worker_partition_lag{");
            (published >= 10.0 && delivered >= 10.0 && lag).then_some(())
        },
    )?;
    let mut out = Vec::new();
    for (name, base) in targets {
        let (code, text) = get_text(&format!("{base}/metrics")).context(name.clone())?;
        ensure!(code == 200, "{name} /metrics: HTTP {code}");
        out.push((name, base, text));
    }
    Ok((stack, out))
}

#[test]
fn every_node_passes_promtool_check_metrics_and_dashboards_and_rules_use_exported_metrics()
-> Result<()> {
    let started = Instant::now();
    let (_stack, scraped) = scrape_running_stack()?;
    eprintln!("stack started and scraped in {:.1?}", started.elapsed());
    let mut exported = BTreeSet::new();
    for (node, _, text) in &scraped {
        let (ok, out) = promtool(&["check", "metrics"], Some(text), Path::new("."))?;
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics on {node}:\n{out}"
        );
        let names = exported_names(text);
        for process in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(names.contains(process), "{node} exports no {process}");
        }
        eprintln!(
            "{node}: {} metric families pass promtool check metrics",
            names.len()
        );
        exported.extend(names);
    }

    let queries = dashboard_queries()?;
    check_promql(&queries)?;
    let rules = rules()?;
    // What a query may read besides the nodes' metrics: the recording rules' series and what
    // Prometheus itself makes (`up` per target, `ALERTS` per alert).
    let mut known: BTreeSet<String> = rules
        .iter()
        .filter(|(_, _, r)| !r["record"].is_null())
        .map(|(name, _, _)| name.clone())
        .collect();
    known.extend(["up".to_string(), "ALERTS".to_string()]);
    known.extend(exported.iter().cloned());
    let source = product_source()?;
    for name in EVENT_ONLY {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "{name} is not defined in the product crates"
        );
        known.insert(name.to_string());
    }
    let mut unknown = Vec::new();
    let dashboards = queries.iter().map(|(w, e)| (w.as_str(), e.as_str()));
    let rule_exprs = rules.iter().map(|(n, e, _)| (n.as_str(), e.as_str()));
    for (what, expr) in dashboards.chain(rule_exprs) {
        for name in metric_names(&concrete(expr)) {
            if !known.contains(&name) {
                unknown.push(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics that no node exported (after frames flowed):\n{}",
        unknown.join("\n")
    );
    eprintln!(
        "{} dashboard queries parse and, with {} rules, read only exported or recorded metrics",
        queries.len(),
        rules.len()
    );

    // A real Prometheus scraping the nodes with the repository's rules: every query and rule
    // evaluates without error on real series, and the fleet's frame rate is visible.
    let started = Instant::now();
    let targets: Vec<(String, String)> = scraped
        .iter()
        .map(|(n, b, _)| (n.clone(), b.clone()))
        .collect();
    let prom = RealPrometheus::start(&targets)?;
    let up = wait_until(
        "Prometheus to scrape every node twice",
        Duration::from_secs(30),
        || {
            let up = prom.query("sum(up)").ok()?;
            let rate = prom
                .query("sum(rate(panoptes_ingest_frames_total[1m]))")
                .ok()?;
            (up.first()? >= &3.0 && rate.first()? > &0.0).then_some(up[0])
        },
    )?;
    assert_eq!(up, 3.0, "every node scraped");
    for (what, expr) in queries
        .iter()
        .map(|(w, e)| (w.as_str(), e.as_str()))
        .chain(rules.iter().map(|(n, e, _)| (n.as_str(), e.as_str())))
    {
        prom.query(&concrete(expr))
            .with_context(|| format!("{what}: {expr}"))?;
    }
    let loaded = prom.rules_loaded()?;
    assert_eq!(loaded, rules.len(), "rules Prometheus loaded");
    eprintln!(
        "a real Prometheus scraped the nodes, loaded {loaded} rules and evaluated every query \
         without error in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Debian's `prometheus` server on a free port, scraping `targets` (node name, base URL) as
/// jobs `panoptes-<name>` every second, with the repository's rule files.
struct RealPrometheus {
    url: String,
    _proc: panoptes_testkit::ChildProcess,
    _dir: tempfile::TempDir,
}

impl RealPrometheus {
    fn start(targets: &[(String, String)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let rules = observability().join("prometheus/rules/*.yml");
        let jobs: Vec<serde_json::Value> = targets
            .iter()
            .map(|(name, base)| {
                let host = base.trim_start_matches("http://");
                serde_json::json!({
                    "job_name": format!("panoptes-{name}"),
                    "static_configs": [{ "targets": [host] }],
                })
            })
            .collect();
        let config = serde_json::json!({
            "global": { "scrape_interval": "1s", "evaluation_interval": "1s" },
            "rule_files": [rules.display().to_string()],
            "scrape_configs": jobs,
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config)?)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("--web.listen-address=127.0.0.1:{port}");
        let config_arg = format!("--config.file={}", config_path.display());
        let storage = format!("--storage.tsdb.path={}", dir.path().join("data").display());
        let proc = panoptes_testkit::ChildProcess::spawn(
            "prometheus",
            Path::new("prometheus"),
            &[&config_arg, &storage, &listen],
            &[],
        )
        .context("starting prometheus (Debian package `prometheus`, see scripts/setup.sh)")?;
        let url = format!("http://127.0.0.1:{port}");
        wait_until("Prometheus to be ready", Duration::from_secs(20), || {
            get_text(&format!("{url}/-/ready")).filter(|(c, _)| *c == 200)
        })?;
        Ok(Self {
            url,
            _proc: proc,
            _dir: dir,
        })
    }

    /// Evaluates `expr` now: the sample values of the vector or scalar (empty if no series);
    /// an error if Prometheus refuses or fails to evaluate it.
    fn query(&self, expr: &str) -> Result<Vec<f64>> {
        let resp: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .timeout(Duration::from_secs(10))
            .send()?
            .json()?;
        ensure!(resp["status"] == "success", "Prometheus: {resp}");
        let value = |v: &serde_json::Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
        let data = &resp["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| value(&r["value"]))
                .collect(),
            Some("scalar") => value(&data["result"]).into_iter().collect(),
            _ => Vec::new(),
        })
    }

    /// Rules Prometheus loaded from the rule files; fails if one has failed to evaluate.
    fn rules_loaded(&self) -> Result<usize> {
        let resp: serde_json::Value =
            reqwest::blocking::get(format!("{}/api/v1/rules", self.url))?.json()?;
        let mut n = 0;
        for group in resp["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                n += 1;
                ensure!(rule["health"] != "err", "rule failed to evaluate: {rule}");
            }
        }
        Ok(n)
    }
}
