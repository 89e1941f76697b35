//! `panoptes`, the operator CLI: a thin client of the coordinator's operator API
//! (`docs/operator.md`). Every command is one or two HTTP calls; the server validates.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{CameraList, StatusView};
use crate::registry::{ApplySummary, CameraSpec, CameraView};

/// The operator CLI of Panoptes.
#[derive(Debug, Parser)]
#[command(
    name = "panoptes",
    version,
    about = "Operate a Panoptes cluster through its coordinator's API"
)]
pub struct Cli {
    /// Base URL of a coordinator's HTTP API.
    #[arg(
        long,
        global = true,
        env = "PANOPTES_URL",
        default_value = "http://127.0.0.1:7300"
    )]
    pub url: String,
    /// Bearer token of the operator API.
    #[arg(long, global = true, env = "PANOPTES_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The camera registry.
    #[command(subcommand)]
    Cameras(CamerasCmd),
    /// Make the registry match a cameras.yaml file (adds, updates, removes).
    Apply {
        /// The file (`cameras: [ {id, url, region, ...} ]`); `-` reads standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Keep registered cameras that the file does not list.
        #[arg(long)]
        no_prune: bool,
        /// Apply only if the registry version is still N (from `cameras list`).
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Leader, nodes, groups, cameras and partitions.
    Status {
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Ingest and worker nodes.
    Nodes {
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Camera and partition assignments (JSON).
    Assignments,
    /// Ask a node to hand its items over and stay empty.
    Drain {
        /// `ingest` or `worker`.
        kind: String,
        /// Node id.
        id: String,
    },
    /// Stop asking a node to drain.
    Undrain {
        /// `ingest` or `worker`.
        kind: String,
        /// Node id.
        id: String,
    },
}

/// `panoptes cameras ...`.
#[derive(Debug, Subcommand)]
pub enum CamerasCmd {
    /// List the cameras (URLs redacted).
    List {
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Show one camera (JSON).
    Get {
        /// Camera id.
        id: String,
    },
    /// Register a camera.
    Add {
        /// Camera id.
        id: String,
        /// `rtsp://` or `rtsps://` URL, credentials included (prefer `apply -f` to keep
        /// passwords out of shell history).
        rtsp_url: String,
        /// Fields.
        #[command(flatten)]
        fields: CameraFields,
    },
    /// Change a camera: the given fields change, the others stay.
    Update {
        /// Camera id.
        id: String,
        /// New URL (the stored one, password included, stays when omitted).
        rtsp_url: Option<String>,
        /// Fields.
        #[command(flatten)]
        fields: CameraFields,
    },
    /// Remove a camera.
    Rm {
        /// Camera id.
        id: String,
    },
}

/// Optional camera fields of `add` and `update`.
#[derive(Debug, Args)]
pub struct CameraFields {
    /// Home region (the coordinator's first region when omitted).
    #[arg(long)]
    pub region: Option<String>,
    /// Worker group (`default`).
    #[arg(long)]
    pub group: Option<String>,
    /// Sampled frames per second, 1-60 (5).
    #[arg(long)]
    pub fps: Option<u32>,
    /// Analytic width (640).
    #[arg(long)]
    pub width: Option<u32>,
    /// Analytic height (360).
    #[arg(long)]
    pub height: Option<u32>,
    /// Frames partition (allocated when omitted).
    #[arg(long)]
    pub partition: Option<i32>,
}

/// Why a command failed: printed as `error: ...`, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's `error` message.
        message: String,
    },
    /// Anything else (network, file, parse).
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// The `cameras.yaml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CamerasFile {
    /// Cameras. Required: a file without the key is a mistake, not "remove everything"
    /// (write `cameras: []` for that).
    pub cameras: Vec<Value>,
}

/// An API client.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:7300`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(other)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// Sends one request; the JSON answer, or the server's error message.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().map_err(|e| {
            CliError::Other(format!(
                "cannot reach the coordinator at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status();
        let text = resp.text().map_err(other)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned);
        Err(CliError::Server {
            status: status.as_u16(),
            message,
        })
    }
}

fn path_seg(s: &str) -> String {
    // Camera ids and node ids are restricted to URL-safe characters by the server; encode
    // anything else rather than build a wrong path.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, CliError> {
    serde_json::from_value(v).map_err(|e| CliError::Other(format!("unexpected answer: {e}")))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Runs a parsed command line; what to print on success.
pub fn run(cli: Cli) -> Result<String, CliError> {
    use reqwest::Method;
    let client = Client::new(&cli.url, cli.token)?;
    match cli.command {
        Command::Cameras(CamerasCmd::List { json }) => {
            let v = client.call(Method::GET, "/v1/cameras", None)?;
            if json {
                return Ok(pretty(&v));
            }
            let list: CameraList = parse(v)?;
            let mut out = cameras_table(&list.cameras);
            if !list.unreadable.is_empty() {
                let _ = writeln!(
                    out,
                    "unreadable records: {} (replace them with apply, or remove them with cameras rm)",
                    list.unreadable.join(", ")
                );
            }
            let _ = writeln!(out, "registry version {}", list.version);
            Ok(out)
        }
        Command::Cameras(CamerasCmd::Get { id }) => {
            let v = client.call(Method::GET, &format!("/v1/cameras/{}", path_seg(&id)), None)?;
            Ok(pretty(&v))
        }
        Command::Cameras(CamerasCmd::Add {
            id,
            rtsp_url,
            fields,
        }) => {
            let spec = CameraSpec {
                id,
                url: rtsp_url,
                region: fields.region.unwrap_or_default(),
                group: fields.group,
                fps: fields.fps,
                width: fields.width,
                height: fields.height,
                partition: fields.partition,
            };
            let v = client.call(Method::POST, "/v1/cameras", Some(&json!(spec)))?;
            written("added", v)
        }
        Command::Cameras(CamerasCmd::Update {
            id,
            rtsp_url,
            fields,
        }) => {
            let path = format!("/v1/cameras/{}", path_seg(&id));
            let cur: CameraView = parse(client.call(Method::GET, &path, None)?)?;
            // The redacted URL sent back keeps the stored password (server rule).
            let spec = CameraSpec {
                id: cur.id,
                url: rtsp_url.unwrap_or(cur.url),
                region: fields.region.unwrap_or(cur.region),
                group: Some(fields.group.unwrap_or(cur.group)),
                fps: Some(fields.fps.unwrap_or(cur.fps)),
                width: Some(fields.width.unwrap_or(cur.width)),
                height: Some(fields.height.unwrap_or(cur.height)),
                partition: Some(fields.partition.unwrap_or(cur.partition)),
            };
            let v = client.call(Method::PUT, &path, Some(&json!(spec)))?;
            written("updated", v)
        }
        Command::Cameras(CamerasCmd::Rm { id }) => {
            let v = client.call(
                Method::DELETE,
                &format!("/v1/cameras/{}", path_seg(&id)),
                None,
            )?;
            Ok(format!(
                "removed {id}; registry version {}\n",
                v.get("version").and_then(Value::as_u64).unwrap_or(0)
            ))
        }
        Command::Apply {
            file,
            no_prune,
            if_version,
            json,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(other)?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?
            };
            let parsed: CamerasFile = serde_yaml::from_str(&text)
                .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?;
            let mut body = json!({ "cameras": parsed.cameras, "prune": !no_prune });
            if let Some(v) = if_version {
                body["if_version"] = json!(v);
            }
            let v = client.call(Method::POST, "/v1/apply", Some(&body))?;
            if json {
                return Ok(pretty(&v));
            }
            let sum: ApplySummary = parse(v)?;
            Ok(apply_summary(&sum))
        }
        Command::Status { json } => {
            let v = client.call(Method::GET, "/v1/status", None)?;
            if json {
                return Ok(pretty(&v));
            }
            Ok(status_text(&parse(v)?))
        }
        Command::Nodes { json } => {
            let v = client.call(Method::GET, "/v1/nodes", None)?;
            if json {
                return Ok(pretty(&v));
            }
            let nodes: Vec<crate::api::NodeView> =
                parse(v.get("nodes").cloned().unwrap_or_default())?;
            Ok(nodes_table(&nodes))
        }
        Command::Assignments => Ok(pretty(&client.call(
            Method::GET,
            "/v1/assignments",
            None,
        )?)),
        Command::Drain { kind, id } => {
            client.call(
                Method::POST,
                &format!("/v1/nodes/{}/{}/drain", path_seg(&kind), path_seg(&id)),
                None,
            )?;
            Ok(format!("{kind} {id}: drain requested\n"))
        }
        Command::Undrain { kind, id } => {
            client.call(
                Method::DELETE,
                &format!("/v1/nodes/{}/{}/drain", path_seg(&kind), path_seg(&id)),
                None,
            )?;
            Ok(format!("{kind} {id}: drain cancelled\n"))
        }
    }
}

fn written(what: &str, v: Value) -> Result<String, CliError> {
    let w: crate::api::CameraWritten = parse(v)?;
    Ok(format!(
        "{what} {} (partition {}); registry version {}\n",
        w.camera.id, w.camera.partition, w.version
    ))
}

fn apply_summary(s: &ApplySummary) -> String {
    let mut out = String::new();
    for (what, ids) in [
        ("added", &s.added),
        ("updated", &s.updated),
        ("removed", &s.removed),
    ] {
        if !ids.is_empty() {
            let _ = writeln!(out, "{what}: {}", ids.join(", "));
        }
    }
    let _ = writeln!(
        out,
        "{} added, {} updated, {} removed, {} unchanged; registry version {}",
        s.added.len(),
        s.updated.len(),
        s.removed.len(),
        s.unchanged.len(),
        s.version
    );
    out
}

/// Plain text table: columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn cameras_table(cams: &[CameraView]) -> String {
    let rows: Vec<Vec<String>> = cams
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.region.clone(),
                c.group.clone(),
                c.partition.to_string(),
                c.fps.to_string(),
                format!("{}x{}", c.width, c.height),
                c.url.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "REGION", "GROUP", "PARTITION", "FPS", "SIZE", "URL"],
        &rows,
    )
}

fn nodes_table(nodes: &[crate::api::NodeView]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.kind.to_string(),
                n.id.clone(),
                if n.alive { "yes" } else { "no" }.into(),
                or_dash(&n.state),
                if n.drain { "yes" } else { "-" }.into(),
                or_dash(&n.region),
                or_dash(&n.group),
                format!("{:.1}/{:.1}", n.load, n.capacity),
                n.owned.to_string(),
                if n.alive && !n.broker_ok { "DOWN" } else { "-" }.into(),
            ]
        })
        .collect();
    table(
        &[
            "KIND", "ID", "ALIVE", "STATE", "DRAIN", "REGION", "GROUP", "LOAD/CAP", "ITEMS",
            "BROKER",
        ],
        &rows,
    )
}

/// The human form of `GET /v1/status`.
pub fn status_text(s: &StatusView) -> String {
    let mut out = String::new();
    match &s.leader {
        Some(l) => {
            let _ = writeln!(
                out,
                "leader: {} ({}) term {}{}",
                l.id,
                or_dash(&l.http),
                l.token,
                if l.holds_lease {
                    ""
                } else {
                    " [lease expired: election pending]"
                }
            );
        }
        None => out.push_str("leader: none\n"),
    }
    let _ = writeln!(out, "registry version: {}\n", s.registry_version);
    out.push_str("NODES\n");
    out.push_str(&nodes_table(&s.nodes));
    out.push_str("\nGROUPS\n");
    let rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.workers.to_string(),
                opt(g.desired_replicas),
                format!("{:.1}", g.load),
                format!("{:.1}", g.capacity),
                format!("{:.1}", g.camera_load),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "GROUP",
            "WORKERS",
            "DESIRED",
            "LOAD",
            "CAPACITY",
            "CAMERA-LOAD",
        ],
        &rows,
    ));
    out.push_str("\nCAMERAS\n");
    let rows: Vec<Vec<String>> = s
        .cameras
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.region.clone(),
                c.partition.to_string(),
                or_dash(&c.owner),
                opt(c.cluster.clone()),
                c.epoch.to_string(),
                format!(
                    "{}/{}",
                    c.fps.map_or_else(|| "-".into(), |f| format!("{f:.1}")),
                    c.fps_target
                ),
                opt(c.state.clone()),
                opt(c.target.clone()),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "REGION",
            "PARTITION",
            "OWNER",
            "CLUSTER",
            "EPOCH",
            "FPS",
            "STATE",
            "MOVING-TO",
        ],
        &rows,
    ));
    out.push_str("\nPARTITIONS\n");
    let rows: Vec<Vec<String>> = s
        .partitions
        .iter()
        .map(|p| {
            vec![
                keys_item(&p.cluster, p.partition),
                or_dash(&p.owner),
                p.epoch.to_string(),
                opt(p.lag),
                opt(p.target.clone()),
                if p.cameras.is_empty() {
                    "-".into()
                } else {
                    p.cameras.join(",")
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &["PARTITION", "OWNER", "EPOCH", "LAG", "MOVING-TO", "CAMERAS"],
        &rows,
    ));
    out
}

fn keys_item(cluster: &str, partition: i32) -> String {
    panoptes_coordinator_client::keys::partition_item(cluster, partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cameras_file_needs_its_key() {
        let f: CamerasFile =
            serde_yaml::from_str("cameras:\n  - id: a\n    url: rtsp://h/a\n    fps: 3\n").unwrap();
        assert_eq!(f.cameras[0]["fps"], 3);
        assert!(serde_yaml::from_str::<CamerasFile>("{}").is_err());
        assert!(serde_yaml::from_str::<CamerasFile>("camera: []").is_err());
        assert!(serde_yaml::from_str::<CamerasFile>("").is_err());
        let f: CamerasFile = serde_yaml::from_str("cameras: []").unwrap();
        assert!(f.cameras.is_empty());
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "panoptes",
            "--url",
            "http://h:1",
            "cameras",
            "add",
            "c1",
            "rtsp://h/x",
            "--region",
            "eu",
            "--fps",
            "10",
        ])
        .unwrap();
        assert_eq!(c.url, "http://h:1");
        assert!(matches!(
            c.command,
            Command::Cameras(CamerasCmd::Add { .. })
        ));
        let c = Cli::try_parse_from([
            "panoptes",
            "apply",
            "-f",
            "x.yaml",
            "--no-prune",
            "--if-version",
            "3",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            Command::Apply {
                no_prune: true,
                if_version: Some(3),
                ..
            }
        ));
    }
}
