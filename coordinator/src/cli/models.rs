//! `panoptes models ...`: `list`, `show` and `push` act on the repository directory itself
//! (`--repository DIR` or `$PANOPTES_MODEL_REPOSITORY`; no coordinator needed); `promote`,
//! `canary`, `shadow`, `rollback` and `status` go through the operator API like every other
//! command.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use panoptes_coordinator_client::models::ModelRepository;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{CliError, Client, other, path_seg};
use super::render::table;

/// Environment variable naming the model repository directory.
pub const REPOSITORY_ENV: &str = "PANOPTES_MODEL_REPOSITORY";

/// Where the repository is (local commands).
#[derive(Debug, Clone, Args)]
pub struct RepoArg {
    /// The model repository directory.
    #[arg(long, env = REPOSITORY_ENV, value_name = "DIR")]
    pub repository: PathBuf,
}

/// `panoptes models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsCmd {
    /// List models and versions of the repository, with their validation results.
    List {
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a version's manifest after checking its integrity (JSON).
    Show {
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
        /// Model name.
        name: String,
        /// Version.
        version: String,
    },
    /// Copy a TorchScript model and its manifest into the repository (name and version from
    /// the manifest; its sha256 is computed).
    Push {
        /// The repository.
        #[command(flatten)]
        repo: RepoArg,
        /// The TorchScript file.
        model: PathBuf,
        /// Its manifest (JSON).
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
    },
    /// Make a version the active model of a worker group (the coordinator checks its
    /// integrity and its validation results against the group's gate).
    Promote {
        /// Worker group.
        group: String,
        /// Model name.
        model: String,
        /// Version.
        version: String,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Run a candidate version on a share of a worker group's cameras; the coordinator
    /// promotes it or rolls it back by comparing it with the active version.
    Canary {
        /// Worker group.
        group: String,
        /// Model name (the one the group runs).
        model: String,
        /// The candidate version.
        version: String,
        /// Share of the group's cameras, 1–99 %.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
        percent: u8,
        /// Only these cameras of the group are eligible (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "ID,...")]
        cameras: Option<Vec<String>>,
        /// Only cameras with this label are eligible (repeatable: every one must match).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::registry::labels::parse_pair)]
        labels: Vec<(String, String)>,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Run a candidate version beside the active one on a sample of a worker group's frames,
    /// for comparison only (its detections go to `panoptes.detections.shadow`; no validation
    /// gate), or end the running shadow with `--stop`.
    Shadow {
        /// Worker group.
        group: String,
        /// Model name (the one the group runs).
        #[arg(required_unless_present = "stop")]
        model: Option<String>,
        /// The candidate version.
        #[arg(required_unless_present = "stop")]
        version: Option<String>,
        /// Share of the frames it also infers, 1–100 %.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=100))]
        percent: u8,
        /// End the running shadow instead.
        #[arg(long, conflicts_with_all = ["model", "version", "percent"])]
        stop: bool,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Return a worker group to its previous version; during a canary, end the canary.
    Rollback {
        /// Worker group.
        group: String,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Rollouts: every group's, or one group's with the model each of its workers runs.
    Status {
        /// Worker group (all groups when omitted).
        group: Option<String>,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

impl ModelsCmd {
    /// Whether the command works on the directory, without the API.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            Self::List { .. } | Self::Show { .. } | Self::Push { .. }
        )
    }
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn open(repo: &RepoArg) -> Result<ModelRepository, CliError> {
    ModelRepository::open(&repo.repository).map_err(other)
}

/// Runs `list`, `show` or `push` on the repository directory.
pub fn run_local(cmd: &ModelsCmd) -> Result<String, CliError> {
    match cmd {
        ModelsCmd::List { repo, json } => list(&open(repo)?, *json),
        ModelsCmd::Show {
            repo,
            name,
            version,
        } => {
            let resolved = open(repo)?.resolve(name, version).map_err(other)?;
            Ok(pretty(&resolved.manifest))
        }
        ModelsCmd::Push {
            repo,
            model,
            manifest,
        } => push(&open(repo)?, model, manifest),
        _ => Err(CliError::Other("not a repository command".into())),
    }
}

fn list(repo: &ModelRepository, as_json: bool) -> Result<String, CliError> {
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for (name, versions) in repo.list().map_err(other)? {
        for v in versions {
            match repo.manifest(&name, &v) {
                Ok(m) => {
                    let validation = if m.validation.is_empty() {
                        "-".to_owned()
                    } else {
                        m.validation
                            .iter()
                            .map(|r| {
                                format!(
                                    "{} {}: P {:.3} R {:.3} p99 {:.1} ms",
                                    r.device_class,
                                    r.golden_set,
                                    r.precision,
                                    r.recall,
                                    r.latency_p99_ms
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    let sha = m.sha256.clone().unwrap_or_default();
                    rows.push(vec![
                        name.clone(),
                        v.clone(),
                        sha.chars().take(12).collect(),
                        m.output.as_str().to_owned(),
                        validation,
                    ]);
                    out.push(json!({ "name": name, "version": v, "manifest": m }));
                }
                Err(e) => {
                    rows.push(vec![
                        name.clone(),
                        v.clone(),
                        "?".into(),
                        "?".into(),
                        e.to_string(),
                    ]);
                    out.push(json!({ "name": name, "version": v, "error": e.to_string() }));
                }
            }
        }
    }
    if as_json {
        return Ok(pretty(&json!({ "models": out })));
    }
    Ok(table(
        &["MODEL", "VERSION", "SHA256", "OUTPUT", "VALIDATION"],
        &rows,
    ))
}

fn push(repo: &ModelRepository, model: &Path, manifest: &Path) -> Result<String, CliError> {
    let r = repo.push_files(model, manifest).map_err(other)?;
    Ok(format!(
        "pushed {}@{} (sha256 {}) to {}\n",
        r.manifest.name,
        r.manifest.version,
        r.manifest.sha256.unwrap_or_default(),
        r.model_path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    ))
}

/// Runs `promote`, `canary`, `shadow`, `rollback` or `status` through the operator API.
pub fn run_remote(client: &Client, cmd: ModelsCmd) -> Result<String, CliError> {
    match cmd {
        ModelsCmd::Promote {
            group,
            model,
            version,
            json,
        } => {
            let body = json!({ "model": model, "version": version });
            let path = format!("/v1/rollouts/{}/promote", path_seg(&group));
            let v = client.call(Method::POST, &path, Some(&body))?;
            Ok(if json {
                pretty(&v)
            } else {
                changed(&group, &v)
            })
        }
        ModelsCmd::Canary {
            group,
            model,
            version,
            percent,
            cameras,
            labels,
            json,
        } => {
            let mut body = json!({ "model": model, "version": version, "percent": percent });
            if let Some(cams) = cameras {
                body["cameras"] = json!(cams);
            }
            if !labels.is_empty() {
                let labels: std::collections::BTreeMap<String, String> =
                    labels.into_iter().collect();
                body["labels"] = json!(labels);
            }
            let path = format!("/v1/rollouts/{}/canary", path_seg(&group));
            let v = client.call(Method::POST, &path, Some(&body))?;
            Ok(if json {
                pretty(&v)
            } else {
                canary_started(&group, &v)
            })
        }
        ModelsCmd::Shadow {
            group,
            model,
            version,
            percent,
            stop,
            json,
        } => {
            let path = format!("/v1/rollouts/{}/shadow", path_seg(&group));
            let v = if stop {
                client.call(Method::DELETE, &path, None)?
            } else {
                let body = json!({ "model": model, "version": version, "percent": percent });
                client.call(Method::POST, &path, Some(&body))?
            };
            Ok(if json {
                pretty(&v)
            } else {
                shadow_changed(&group, &v)
            })
        }
        ModelsCmd::Rollback { group, json } => {
            let path = format!("/v1/rollouts/{}/rollback", path_seg(&group));
            let v = client.call(Method::POST, &path, None)?;
            Ok(if json {
                pretty(&v)
            } else {
                changed(&group, &v)
            })
        }
        ModelsCmd::Status { group, json } => {
            let path = match &group {
                Some(g) => format!("/v1/rollouts/{}", path_seg(g)),
                None => "/v1/rollouts".into(),
            };
            let v = client.call(Method::GET, &path, None)?;
            if json {
                return Ok(pretty(&v));
            }
            Ok(match group {
                Some(_) => group_text(&v),
                None => rollouts_text(&v),
            })
        }
        _ => Err(CliError::Other("not an API command".into())),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn changed(group: &str, v: &Value) -> String {
    let r = &v["rollout"];
    let verb = if v["changed"] == Value::Bool(true) {
        "now runs"
    } else {
        "already runs"
    };
    let mut out = format!(
        "group {group} {verb} {}@{} (previous {}, generation {})\n",
        text(&r["model"]),
        text(&r["active"]),
        text(&r["previous"]),
        text(&r["generation"])
    );
    if v["shadow_ended"].is_object() {
        out.push_str(&format!(
            "ended the shadow of {}@{}\n",
            text(&r["model"]),
            text(&v["shadow_ended"]["version"])
        ));
    }
    out
}

/// The answer of `POST` (started, or already running) or `DELETE` (ended) of a shadow.
fn shadow_changed(group: &str, v: &Value) -> String {
    let r = &v["rollout"];
    let ended = &v["shadow_ended"];
    if ended.is_object() {
        return format!(
            "group {group} ended the shadow of {}@{}; it runs {}@{} (generation {})\n",
            text(&r["model"]),
            text(&ended["version"]),
            text(&r["model"]),
            text(&r["active"]),
            text(&r["generation"])
        );
    }
    let s = &r["shadow"];
    let verb = if v["changed"] == Value::Bool(true) {
        "now shadows"
    } else {
        "already shadows"
    };
    format!(
        "group {group} {verb} {}@{} on {} % of its frames beside {}@{} (generation {})\n{AGREEMENT}\n",
        text(&r["model"]),
        text(&s["version"]),
        text(&s["percent"]),
        text(&r["model"]),
        text(&r["active"]),
        text(&r["generation"])
    )
}

/// Where a shadow's agreement with the active version is measured.
const AGREEMENT: &str =
    "  agreement with the active version: worker metric panoptes_worker_shadow_agreement{class}";

/// The running shadow, as lines of text (empty without one).
fn shadow_text(r: &Value) -> String {
    let s = &r["shadow"];
    if !s.is_object() {
        return String::new();
    }
    let since = s["started_ms"].as_u64().map_or_else(
        || "-".into(),
        |ms| {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let ago = panoptes_coordinator_client::now_ms().saturating_sub(ms) / 1000;
            let at = humantime_serde::re::humantime::format_rfc3339_seconds(t);
            format!("{at} ({ago} s ago)")
        },
    );
    format!(
        "shadow: {} on {} % of the frames since {since}, generation {}\n{AGREEMENT}\n",
        text(&s["version"]),
        text(&s["percent"]),
        text(&s["since_generation"])
    )
}

fn canary_started(group: &str, v: &Value) -> String {
    let r = &v["rollout"];
    let k = &r["canary"];
    let cams: Vec<String> = k["cameras"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let verb = if v["changed"] == Value::Bool(true) {
        "now runs"
    } else {
        "already runs"
    };
    format!(
        "group {group} {verb} a canary of {}@{} on {} of its cameras ({} %): {} (active {}, generation {})\n",
        text(&r["model"]),
        text(&k["version"]),
        cams.len(),
        text(&k["percent"]),
        cams.join(", "),
        text(&r["active"]),
        text(&r["generation"])
    )
}

/// The running canary and the last canary's outcome, as lines of text.
fn canary_text(v: &Value) -> String {
    let mut out = String::new();
    let k = &v["canary"];
    if k.is_object() {
        let cams: Vec<String> = k["cameras"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let elapsed = k["elapsed_s"].as_f64().unwrap_or(0.0);
        out.push_str(&format!(
            "canary: {} on {} % of the cameras ({}), running {elapsed:.0} s\n",
            text(&k["version"]),
            text(&k["percent"]),
            cams.join(", ")
        ));
        out.push_str(&format!(
            "  frames: baseline {}, candidate {} ({} worker reports)\n  verdict so far: {}: {}\n",
            text(&k["baseline"]["frames"]),
            text(&k["candidate"]["frames"]),
            text(&k["workers"]),
            text(&k["verdict"]),
            text(&k["reason"])
        ));
    }
    let last = &v["rollout"]["last_canary"];
    if last.is_object() {
        out.push_str(&format!(
            "last canary: {} {}: {}\n",
            text(&last["version"]),
            text(&last["verdict"]),
            text(&last["reason"])
        ));
    }
    out
}

fn rollout_row(group: &str, r: &Value) -> Vec<String> {
    vec![
        group.to_owned(),
        text(&r["model"]),
        text(&r["active"]),
        text(&r["previous"]),
        text(&r["generation"]),
        candidate_cell(r),
    ]
}

/// A running canary or shadow in one cell: `canary 2.0 (25 %)`, `shadow 2.0 (50 %)`, `-`.
fn candidate_cell(r: &Value) -> String {
    for role in ["canary", "shadow"] {
        let c = &r[role];
        if c.is_object() {
            return format!("{role} {} ({} %)", text(&c["version"]), text(&c["percent"]));
        }
    }
    "-".into()
}

const HEADERS: [&str; 6] = [
    "GROUP",
    "MODEL",
    "ACTIVE",
    "PREVIOUS",
    "GENERATION",
    "CANDIDATE",
];

fn rollouts_text(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| rollout_row(&text(&e["group"]), &e["rollout"]))
        .collect();
    table(&HEADERS, &rows)
}

fn group_text(v: &Value) -> String {
    let group = text(&v["group"]);
    let mut out = table(&HEADERS, &[rollout_row(&group, &v["rollout"])]);
    out.push_str(&canary_text(v));
    out.push_str(&shadow_text(&v["rollout"]));
    let workers: Vec<Vec<String>> = v["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| vec![text(&w["id"]), text(&w["model"])])
        .collect();
    out.push('\n');
    out.push_str(&table(&["WORKER", "RUNS"], &workers));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_column_names_a_canary_or_a_shadow() {
        let canary = serde_json::json!({"canary": {"version": "2.0", "percent": 25}});
        let shadow = serde_json::json!({"shadow": {"version": "2.1", "percent": 50}});
        assert_eq!(candidate_cell(&canary), "canary 2.0 (25 %)");
        assert_eq!(candidate_cell(&shadow), "shadow 2.1 (50 %)");
        assert_eq!(candidate_cell(&serde_json::json!({"active": "1"})), "-");
        let rows = rollouts_text(&serde_json::json!({"rollouts": [
            {"group": "g", "rollout": {"model": "m", "active": "1", "generation": 3, "shadow": {"version": "2.1", "percent": 50}}}
        ]}));
        assert!(
            rows.contains("CANDIDATE") && rows.contains("shadow 2.1 (50 %)"),
            "{rows}"
        );
    }
}
