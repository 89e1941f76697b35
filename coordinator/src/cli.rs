//! `panoptes`, the operator CLI: a thin client of the coordinator's operator API
//! (`docs/operator.md`). Every command is one or two HTTP calls; the server validates.

mod client;
mod render;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

pub use self::client::{CliError, Client};
use self::client::{other, path_seg};
use self::render::{apply_summary, camera_list_text, nodes_table};
pub use self::render::{status_text, table};
use crate::api::{CameraList, NodeView};
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

/// The `cameras.yaml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CamerasFile {
    /// Cameras. Required: a file without the key is a mistake, not "remove everything"
    /// (write `cameras: []` for that).
    pub cameras: Vec<Value>,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, CliError> {
    serde_json::from_value(v).map_err(|e| CliError::Other(format!("unexpected answer: {e}")))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Runs a parsed command line; what to print on success.
pub fn run(cli: Cli) -> Result<String, CliError> {
    let client = Client::new(&cli.url, cli.token)?;
    match cli.command {
        Command::Cameras(cmd) => cameras(&client, cmd),
        Command::Apply {
            file,
            no_prune,
            if_version,
            json,
        } => apply(&client, &file, !no_prune, if_version, json),
        Command::Status { json } => {
            show(&client, "/v1/status", json, |v| Ok(status_text(&parse(v)?)))
        }
        Command::Nodes { json } => show(&client, "/v1/nodes", json, |v| {
            let nodes: Vec<NodeView> = parse(v.get("nodes").cloned().unwrap_or_default())?;
            Ok(nodes_table(&nodes))
        }),
        Command::Assignments => Ok(pretty(&client.call(
            Method::GET,
            "/v1/assignments",
            None,
        )?)),
        Command::Drain { kind, id } => drain(&client, &kind, &id, true),
        Command::Undrain { kind, id } => drain(&client, &kind, &id, false),
    }
}

/// `panoptes cameras ...`.
fn cameras(client: &Client, cmd: CamerasCmd) -> Result<String, CliError> {
    match cmd {
        CamerasCmd::List { json } => show(client, "/v1/cameras", json, |v| {
            Ok(camera_list_text(&parse::<CameraList>(v)?))
        }),
        CamerasCmd::Get { id } => Ok(pretty(&client.call(
            Method::GET,
            &camera_path(&id),
            None,
        )?)),
        CamerasCmd::Add {
            id,
            rtsp_url,
            fields,
        } => {
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
        CamerasCmd::Update {
            id,
            rtsp_url,
            fields,
        } => update_camera(client, &id, rtsp_url, fields),
        CamerasCmd::Rm { id } => {
            let v = client.call(Method::DELETE, &camera_path(&id), None)?;
            Ok(format!(
                "removed {id}; registry version {}\n",
                v.get("version").and_then(Value::as_u64).unwrap_or(0)
            ))
        }
    }
}

/// `cameras update`: reads the camera, changes the given fields, writes it back.
fn update_camera(
    client: &Client,
    id: &str,
    rtsp_url: Option<String>,
    fields: CameraFields,
) -> Result<String, CliError> {
    let path = camera_path(id);
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

/// `apply -f FILE`: sends the file's cameras; `prune` removes the ones it does not list.
fn apply(
    client: &Client,
    file: &Path,
    prune: bool,
    if_version: Option<u64>,
    json: bool,
) -> Result<String, CliError> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(other)?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?
    };
    let parsed: CamerasFile = serde_yaml::from_str(&text)
        .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?;
    let mut body = json!({ "cameras": parsed.cameras, "prune": prune });
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

/// `drain` (`on`) or `undrain` a node.
fn drain(client: &Client, kind: &str, id: &str, on: bool) -> Result<String, CliError> {
    let path = format!("/v1/nodes/{}/{}/drain", path_seg(kind), path_seg(id));
    if on {
        client.call(Method::POST, &path, None)?;
        Ok(format!("{kind} {id}: drain requested\n"))
    } else {
        client.call(Method::DELETE, &path, None)?;
        Ok(format!("{kind} {id}: drain cancelled\n"))
    }
}

/// GETs `path`: the server's JSON with `--json`, else `render`ed text.
fn show(
    client: &Client,
    path: &str,
    json: bool,
    render: impl FnOnce(Value) -> Result<String, CliError>,
) -> Result<String, CliError> {
    let v = client.call(Method::GET, path, None)?;
    if json {
        return Ok(pretty(&v));
    }
    render(v)
}

fn camera_path(id: &str) -> String {
    format!("/v1/cameras/{}", path_seg(id))
}

fn written(what: &str, v: Value) -> Result<String, CliError> {
    let w: crate::api::CameraWritten = parse(v)?;
    Ok(format!(
        "{what} {} (partition {}); registry version {}\n",
        w.camera.id, w.camera.partition, w.version
    ))
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
