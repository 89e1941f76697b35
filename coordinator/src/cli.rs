//! `panoptes`, the operator CLI: a thin client of the coordinator's operator API
//! (`docs/operator.md`). Every command is one or two HTTP calls; the server validates.
//!
//! Secrets never travel on the command line: the API token comes from `PANOPTES_API_TOKEN`
//! or `--token-file`, a camera password from `--password-file` or `--password-stdin`. HTTPS
//! needs `--ca-file` (the CA that signed the coordinator's certificate); `--cert-file` and
//! `--key-file` add a client certificate for mutual TLS.

mod client;
pub mod models;
mod render;
pub mod tail;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use panoptes_runtime::redact::Secret;
use panoptes_runtime::secret;
use panoptes_runtime::tls::TlsFiles;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

pub use self::client::{CliError, Client};
use self::client::{other, path_seg};
use self::render::{apply_summary, audit_table, camera_list_text, nodes_table};
pub use self::render::{status_text, table};
use crate::api::{CameraList, NodeView};
use crate::registry::{ApplySummary, CameraSpec, CameraView};

/// Environment variable holding the API token.
pub const TOKEN_ENV: &str = "PANOPTES_API_TOKEN";
/// The old name of [`TOKEN_ENV`], still read (with a warning).
pub const LEGACY_TOKEN_ENV: &str = "PANOPTES_TOKEN";

/// The operator CLI of Panoptes.
#[derive(Debug, Parser)]
#[command(
    name = "panoptes",
    version,
    about = "Operate a Panoptes cluster through its coordinator's API",
    after_help = "The API token is read from $PANOPTES_API_TOKEN or --token-file, never from the command line."
)]
pub struct Cli {
    /// Base URL of a coordinator's HTTP API (`https://` needs --ca-file).
    #[arg(
        long,
        global = true,
        env = "PANOPTES_URL",
        default_value = "http://127.0.0.1:7300"
    )]
    pub url: String,
    /// File holding the API token (first line); without it, `$PANOPTES_API_TOKEN`.
    #[arg(
        long,
        global = true,
        env = "PANOPTES_API_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// Removed: a token on the command line shows in the process list and shell history.
    #[arg(long, global = true, hide = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA bundle (PEM) that signed the coordinator's certificate, for `https://` URLs.
    #[arg(long, global = true, env = "PANOPTES_API_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; goes with --key-file.
    #[arg(
        long,
        global = true,
        env = "PANOPTES_API_CERT_FILE",
        value_name = "FILE"
    )]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(
        long,
        global = true,
        env = "PANOPTES_API_KEY_FILE",
        value_name = "FILE"
    )]
    pub key_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The TLS files of the command line.
    pub fn tls(&self) -> TlsFiles {
        TlsFiles {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }

    /// The API token: `--token-file`, else `$PANOPTES_API_TOKEN`, else (deprecated)
    /// `$PANOPTES_TOKEN`; `None` when none is set. `--token` is refused.
    pub fn api_token(&self) -> Result<Option<Secret>, CliError> {
        if self.token.is_some() {
            return Err(CliError::Other(format!(
                "--token was removed: a token on the command line shows in the process list and shell history; put it in ${TOKEN_ENV} or in a file given with --token-file"
            )));
        }
        if let Some(t) =
            secret::lookup(self.token_file.as_deref(), TOKEN_ENV, "API token").map_err(other)?
        {
            return Ok(Some(t));
        }
        let legacy = secret::lookup(None, LEGACY_TOKEN_ENV, "API token").map_err(other)?;
        if legacy.is_some() {
            eprintln!("warning: ${LEGACY_TOKEN_ENV} is deprecated; use ${TOKEN_ENV}");
        }
        Ok(legacy)
    }
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
    /// The audit trail: the newest changes first, who made them, registry versions.
    Audit {
        /// How many entries (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
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
    /// Detections, read from Kafka with the readers' contract applied.
    #[command(subcommand)]
    Detections(DetectionsCmd),
    /// The model repository (list, show, push) and rollouts (promote, rollback, status).
    #[command(subcommand)]
    Models(models::ModelsCmd),
}

/// `panoptes detections ...`: reads Kafka directly, not the operator API.
#[derive(Debug, Subcommand)]
pub enum DetectionsCmd {
    /// Print detections as they land (read_committed, superseded epochs and duplicates
    /// dropped), filtered by camera, class and score.
    Tail(tail::TailArgs),
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
        /// `rtsp://` or `rtsps://` URL, with the user name but without the password
        /// (`rtsp://viewer@10.0.0.7/stream1`); give the password with --password-file or
        /// --password-stdin, so it stays out of shell history and the process list.
        rtsp_url: String,
        /// Fields.
        #[command(flatten)]
        fields: CameraFields,
        /// Camera password.
        #[command(flatten)]
        password: PasswordSource,
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
        /// New camera password (set into the given or the stored URL).
        #[command(flatten)]
        password: PasswordSource,
        /// Remove this label (repeatable).
        #[arg(long = "unlabel", value_name = "KEY")]
        unlabel: Vec<String>,
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
    /// Degradation priority 0-9 (5): lower priorities are capped first under overload.
    #[arg(long)]
    pub priority: Option<u8>,
    /// Lowest rate the coordinator may cap the camera to under overload (1).
    #[arg(long)]
    pub min_fps: Option<u32>,
    /// A label, repeatable (`--label site=north`); `update` adds it or replaces its value.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::registry::labels::parse_pair)]
    pub labels: Vec<(String, String)>,
}

/// Where `cameras add` / `cameras update` read a camera password from (never argv).
#[derive(Debug, Default, Args)]
pub struct PasswordSource {
    /// Read the camera password from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// Read the camera password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

impl PasswordSource {
    /// The password, if one was asked for; an empty one is an error.
    fn read(&self) -> Result<Option<Secret>, CliError> {
        if let Some(f) = &self.password_file {
            return secret::from_file(f, "camera password")
                .map(Some)
                .map_err(other);
        }
        if !self.password_stdin {
            return Ok(None);
        }
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(other)?;
        let pw = line.trim_end_matches(['\r', '\n']);
        if pw.is_empty() {
            return Err(CliError::Other(
                "camera password: standard input is empty".into(),
            ));
        }
        Ok(Some(Secret::new(pw)))
    }
}

/// `url` with its password set to `password` (percent-encoded). The URL must name a user;
/// a password already in it is refused unless it is the redacted `***` of a stored URL.
pub fn with_password(url: &str, password: &Secret) -> Result<String, CliError> {
    let mut u = reqwest::Url::parse(url)
        .map_err(|e| CliError::Other(format!("camera URL is not a valid URL ({e})")))?;
    if u.username().is_empty() {
        return Err(CliError::Other(
            "camera URL has no user name: write rtsp://USER@host/path to go with the password"
                .into(),
        ));
    }
    if u.password().is_some_and(|p| p != "***") {
        return Err(CliError::Other(
            "camera URL already holds a password: leave it out of the URL (it would be on the command line) and keep --password-file / --password-stdin".into(),
        ));
    }
    u.set_password(Some(password.expose()))
        .map_err(|()| CliError::Other("camera URL cannot hold a password".into()))?;
    Ok(u.to_string())
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
    if let Command::Detections(DetectionsCmd::Tail(args)) = &cli.command {
        // Kafka, not the API: no token or API TLS is needed or read.
        return detections_tail(args);
    }
    if let Command::Models(cmd) = &cli.command
        && cmd.is_local()
    {
        return models::run_local(cmd);
    }
    let client = Client::new(&cli.url, cli.api_token()?, &cli.tls())?;
    match cli.command {
        Command::Models(cmd) => models::run_remote(&client, cmd),
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
        Command::Audit { limit, json } => {
            show(&client, &format!("/v1/audit?limit={limit}"), json, |v| {
                let entries: Vec<Value> = parse(v.get("entries").cloned().unwrap_or_default())?;
                Ok(audit_table(&entries))
            })
        }
        Command::Drain { kind, id } => drain(&client, &kind, &id, true),
        Command::Undrain { kind, id } => drain(&client, &kind, &id, false),
        Command::Detections(DetectionsCmd::Tail(args)) => detections_tail(&args),
    }
}

/// `detections tail`: records stream to standard output, the summary goes to standard error.
fn detections_tail(args: &tail::TailArgs) -> Result<String, CliError> {
    let tally = tail::run(args, &mut std::io::stdout().lock())?;
    eprintln!("{tally}");
    Ok(String::new())
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
            password,
        } => {
            let url = match password.read()? {
                Some(pw) => with_password(&rtsp_url, &pw)?,
                None => rtsp_url,
            };
            let spec = CameraSpec {
                id,
                url,
                region: fields.region.unwrap_or_default(),
                group: fields.group,
                fps: fields.fps,
                width: fields.width,
                height: fields.height,
                partition: fields.partition,
                priority: fields.priority,
                min_fps: fields.min_fps,
                labels: fields.labels.into_iter().collect(),
            };
            let v = client.call(Method::POST, "/v1/cameras", Some(&json!(spec)))?;
            written("added", v)
        }
        CamerasCmd::Update {
            id,
            rtsp_url,
            fields,
            password,
            unlabel,
        } => update_camera(client, &id, rtsp_url, fields, &unlabel, password.read()?),
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
    unlabel: &[String],
    password: Option<Secret>,
) -> Result<String, CliError> {
    let path = camera_path(id);
    let cur: CameraView = parse(client.call(Method::GET, &path, None)?)?;
    // The redacted URL sent back keeps the stored password (server rule); a new password
    // replaces the `***`.
    let url = rtsp_url.unwrap_or(cur.url);
    let url = match password {
        Some(pw) => with_password(&url, &pw)?,
        None => url,
    };
    let mut labels = cur.labels;
    for k in unlabel {
        labels.remove(k);
    }
    labels.extend(fields.labels);
    let spec = CameraSpec {
        id: cur.id,
        url,
        region: fields.region.unwrap_or(cur.region),
        group: Some(fields.group.unwrap_or(cur.group)),
        fps: Some(fields.fps.unwrap_or(cur.fps)),
        width: Some(fields.width.unwrap_or(cur.width)),
        height: Some(fields.height.unwrap_or(cur.height)),
        partition: Some(fields.partition.unwrap_or(cur.partition)),
        priority: Some(fields.priority.unwrap_or(cur.priority)),
        min_fps: Some(fields.min_fps.unwrap_or(cur.min_fps)),
        labels,
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
    fn passwords_go_into_the_url_encoded_and_only_there() {
        let pw = Secret::new("p@ss:w rd/");
        assert_eq!(
            with_password("rtsp://viewer@10.0.0.1:554/s1", &pw).unwrap(),
            "rtsp://viewer:p%40ss%3Aw%20rd%2F@10.0.0.1:554/s1"
        );
        // The redacted URL of a stored camera takes a new password.
        assert_eq!(
            with_password("rtsp://viewer:***@h/x", &pw).unwrap(),
            "rtsp://viewer:p%40ss%3Aw%20rd%2F@h/x"
        );
        for (url, why) in [
            ("rtsp://h/x", "no user name"),
            ("rtsp://u:old@h/x", "already holds a password"),
            ("not a url", "not a valid URL"),
        ] {
            let err = with_password(url, &pw).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("p@ss"), "{err}");
        }
    }

    #[test]
    fn tokens_never_come_from_argv() {
        let c = Cli::try_parse_from(["panoptes", "--token", "s3cret", "status"]).unwrap();
        let err = c.api_token().unwrap_err().to_string();
        assert!(
            err.contains("--token was removed") && !err.contains("s3cret"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "from-file\n").unwrap();
        let c = Cli::try_parse_from(["panoptes", "status", "--token-file", f.to_str().unwrap()])
            .unwrap();
        assert_eq!(c.api_token().unwrap().unwrap().expose(), "from-file");
        // https needs a CA; TLS files with http are a mistake.
        let none = TlsFiles::default();
        let err = Client::new("https://h:1", None, &none)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--ca-file"), "{err}");
        let ca = TlsFiles {
            ca_file: Some(f.clone()),
            ..TlsFiles::default()
        };
        let err = Client::new("http://h:1", None, &ca)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("use https://"), "{err}");
        assert!(Client::new("ftp://h:1", None, &none).is_err());
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
