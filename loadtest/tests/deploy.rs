//! `deploy/` checked offline, with the tools the deployments are made with (installed by
//! `scripts/setup.sh` into `$PANOPTES_CACHE/deploy-tools`: kubectl 1.35 with kustomize 5.7,
//! kubernetes-validate, yamllint, hadolint, checkov; `promtool` from Debian):
//!
//! - every kustomization (the overlays `dev`, `prod-region-a`, `prod-region-b`, the variants,
//!   the GitOps sources) renders, and every object validates strictly (unknown fields are
//!   errors) against the Kubernetes 1.35 schemas or the checked-in custom resource schemas
//!   (`deploy/k8s/validate.py`); a deliberately misspelt field in a built-in object and in a
//!   custom resource makes that validation fail (so it can fail); the autoscalers' PromQL
//!   parses (`promtool check rules`); every pod's grace period outlasts its node's drain
//!   timeouts as its config file sets them;
//! - yamllint, hadolint and checkov pass (checkov's skips and their reasons:
//!   `deploy/.checkov.yaml`);
//! - every config file shipped in `deploy/` (`*.toml` named after its node, the overlays'
//!   `region.env` on top of the ingest and worker files) loads with the node's own config
//!   type, whose `deny_unknown_fields` turns a stale or misspelt key into a failure; a key
//!   added to a copy makes that load fail.
//!
//! A missing tool fails the test with the command that installs it. No process of ours is
//! started; about 20 s in all here (checkov is most of it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde::de::DeserializeOwned;

mod common;

use common::images::docker;

/// The repository's `deploy/`.
fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A tool of the deploy tools' environment (`scripts/setup.sh`).
fn tool(name: &str) -> PathBuf {
    let cache = std::env::var_os("PANOPTES_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/panoptes"),
        PathBuf::from,
    );
    cache.join("deploy-tools/bin").join(name)
}

/// Runs `program args` in `dir`; returns success and stdout + stderr.
fn run(program: &Path, args: &[&str], dir: &Path) -> Result<(bool, String)> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| {
            format!(
                "running {} (the deploy tools: `bash scripts/setup.sh` installs them)",
                program.display()
            )
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Every folder under `deploy/` with a kustomization that is applied as a whole (overlays,
/// variants, GitOps sources), relative to `deploy/`.
fn kustomizations() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for parent in ["k8s/overlays", "k8s/variants", "gitops"] {
        for entry in std::fs::read_dir(deploy().join(parent))? {
            let path = entry?.path();
            if path.join("kustomization.yaml").is_file() {
                let name = path.file_name().context("name")?.to_string_lossy();
                out.push(format!("{parent}/{name}"));
            }
        }
    }
    out.sort();
    ensure!(out.len() >= 5, "kustomizations: {out:?}");
    Ok(out)
}

/// Renders every kustomization into `dir`; returns (name, file, parsed objects).
fn render_all(dir: &Path) -> Result<Vec<(String, PathBuf, Vec<serde_yaml::Value>)>> {
    let mut out = Vec::new();
    for k in kustomizations()? {
        let (ok, text) = run(&tool("kubectl"), &["kustomize", &k], &deploy())?;
        ensure!(ok, "kubectl kustomize {k}:\n{text}");
        let file = dir.join(format!("{}.yaml", k.replace('/', "_")));
        std::fs::write(&file, &text)?;
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(serde_yaml::Value::deserialize)
            .collect::<Result<_, _>>()
            .with_context(|| format!("rendered {k}"))?;
        out.push((k, file, docs));
    }
    Ok(out)
}

/// The objects of one kind in a render.
fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn every_overlay_renders_and_validates_strictly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let renders = render_all(dir.path())?;
    let python = tool("python");
    let validate = deploy().join("k8s/validate.py");
    let mut args = vec![validate.to_str().context("path")?];
    args.extend(
        renders
            .iter()
            .map(|(_, f, _)| f.to_str().unwrap_or_default()),
    );
    let (ok, out) = run(&python, &args, dir.path())?;
    eprintln!("{out}");
    assert!(ok, "strict validation failed:\n{out}");
    let objects: usize = renders.iter().map(|(_, _, d)| d.len()).sum();
    assert!(objects > 100, "{objects} objects rendered");

    // The validation can fail: one misspelt field in a built-in object, one in a custom resource.
    let (_, prod, _) = renders
        .iter()
        .find(|(k, _, _)| k.ends_with("prod-region-a"))
        .context("prod-region-a")?;
    let broken = std::fs::read_to_string(prod)?
        .replacen("readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1)
        .replacen("maxReplicaCount:", "maxReplicaCounts:", 1);
    let broken_file = dir.path().join("broken.yaml");
    std::fs::write(&broken_file, broken)?;
    let (ok, out) = run(
        &python,
        &[
            validate.to_str().unwrap_or_default(),
            broken_file.to_str().unwrap_or_default(),
        ],
        dir.path(),
    )?;
    assert!(!ok, "a misspelt field passed validation:\n{out}");
    assert!(
        out.contains("'readOnlyRootFileSystem' was unexpected"),
        "{out}"
    );
    assert!(out.contains("'maxReplicaCounts' was unexpected"), "{out}");

    for (k, _, docs) in &renders {
        // Secrets are referenced by name, never rendered from the repository.
        ensure!(
            of_kind(docs, "Secret").is_empty(),
            "{k}: a Secret in the manifests"
        );
        check_workloads(k, docs)?;
    }
    check_autoscaler_queries(&renders, dir.path())
}

/// Grace periods longer than the drain the node's config file asks for; hardening on every
/// pod; the production overlays pin every image to one tag.
fn check_workloads(k: &str, docs: &[serde_yaml::Value]) -> Result<()> {
    let worker: panoptes_workers::config::WorkerConfig =
        load_file(&deploy().join("k8s/base/config/worker.toml"))?;
    let ingest: panoptes_ingest::config::IngestConfig =
        load_file(&deploy().join("k8s/base/config/ingest.toml"))?;
    let drain = |name: &str| match name {
        n if n.starts_with("panoptes-worker") => {
            Some(worker.assignment.drain_timeout + worker.assignment.handover_timeout)
        }
        "panoptes-ingest" => {
            Some(ingest.coordinator.drain_timeout + ingest.coordinator.handover_flush_timeout)
        }
        _ => None,
    };
    let mut tags = BTreeMap::new();
    for kind in ["Deployment", "StatefulSet"] {
        for obj in of_kind(docs, kind) {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let pod = &obj["spec"]["template"]["spec"];
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            if let Some(d) = drain(name) {
                ensure!(
                    Duration::from_secs(grace) > d,
                    "{k}: {name}: grace {grace}s <= drain {d:?}"
                );
            }
            ensure!(
                pod["securityContext"]["runAsNonRoot"] == true,
                "{k}: {name}: runAsNonRoot"
            );
            for c in pod["containers"].as_sequence().context("containers")? {
                let sc = &c["securityContext"];
                ensure!(
                    sc["readOnlyRootFilesystem"] == true,
                    "{k}: {name}: read-only root"
                );
                ensure!(
                    sc["allowPrivilegeEscalation"] == false,
                    "{k}: {name}: escalation"
                );
                ensure!(
                    sc["capabilities"]["drop"][0] == "ALL",
                    "{k}: {name}: capabilities"
                );
                let image = c["image"].as_str().unwrap_or_default();
                if let Some((_, tag)) = image.rsplit_once(':') {
                    tags.insert(image.to_string(), tag.to_string());
                }
            }
        }
    }
    if k.contains("prod-") {
        let distinct: std::collections::BTreeSet<_> = tags.values().collect();
        ensure!(
            distinct.len() == 1 && tags.len() >= 3,
            "{k}: images not pinned to one tag: {tags:?}"
        );
    }
    Ok(())
}

/// The scaling queries of the ScaledObjects parse as PromQL, and the HPA variant asks for the
/// metric the KEDA setup queries.
fn check_autoscaler_queries(
    renders: &[(String, PathBuf, Vec<serde_yaml::Value>)],
    dir: &Path,
) -> Result<()> {
    let mut rules = String::from("groups:\n  - name: deploy-autoscaling\n    rules:\n");
    let mut n = 0;
    for (_, _, docs) in renders {
        for so in of_kind(docs, "ScaledObject") {
            let query = so["spec"]["triggers"][0]["metadata"]["query"]
                .as_str()
                .context("query")?;
            ensure!(
                query.contains("panoptes_coordinator_desired_replicas"),
                "{query}"
            );
            n += 1;
            rules.push_str(&format!(
                "      - record: deploy:autoscaling_{n}\n        expr: {}\n",
                serde_json::to_string(query)?
            ));
        }
        for hpa in of_kind(docs, "HorizontalPodAutoscaler") {
            let metric = &hpa["spec"]["metrics"][0]["external"]["metric"]["name"];
            ensure!(
                metric == "panoptes_coordinator_desired_replicas",
                "HPA metric {metric:?}"
            );
        }
    }
    ensure!(n >= 4, "{n} ScaledObjects");
    let file = dir.join("autoscaling-rules.yml");
    std::fs::write(&file, rules)?;
    let (ok, out) = run(
        Path::new("promtool"),
        &["check", "rules", file.to_str().unwrap_or_default()],
        dir,
    )?;
    assert!(ok, "promtool check rules (the KEDA queries):\n{out}");
    Ok(())
}

#[test]
fn manifests_and_dockerfiles_pass_the_linters() -> Result<()> {
    let (ok, out) = run(
        &tool("yamllint"),
        &[
            "-c",
            ".yamllint.yaml",
            "-f",
            "parsable",
            "k8s",
            "gitops",
            "compose",
        ],
        &deploy(),
    )?;
    assert!(ok, "yamllint:\n{out}");

    let dockerfiles: Vec<String> = std::fs::read_dir(deploy().join("images"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".Dockerfile"))
        .map(|n| format!("images/{n}"))
        .collect();
    ensure!(dockerfiles.len() >= 5, "Dockerfiles: {dockerfiles:?}");
    let mut args: Vec<&str> = dockerfiles.iter().map(String::as_str).collect();
    args.sort();
    let (ok, out) = run(&tool("hadolint"), &args, &deploy())?;
    assert!(ok, "hadolint:\n{out}");

    // checkov on the rendered overlays and on the Dockerfiles, zero failed checks (in a
    // folder whose name does not start with a dot: checkov skips hidden folders).
    let dir = tempfile::Builder::new()
        .prefix("deploy-renders")
        .tempdir()?;
    render_all(dir.path())?;
    let rendered = dir.path().to_str().context("path")?;
    for (framework, target) in [("kubernetes", rendered), ("dockerfile", "images")] {
        let (ok, out) = run(
            &tool("checkov"),
            &[
                "--config-file",
                ".checkov.yaml",
                "-d",
                target,
                "--framework",
                framework,
            ],
            &deploy(),
        )?;
        eprintln!(
            "checkov {framework}: {}",
            out.lines()
                .find(|l| l.contains("Passed checks"))
                .unwrap_or("")
        );
        assert!(
            ok && out.contains("Failed checks: 0"),
            "checkov {framework}:\n{out}"
        );
        ensure!(
            !out.contains("Passed checks: 0,"),
            "checkov {framework} checked nothing:\n{out}"
        );
    }
    Ok(())
}

/// Loads one config file with the node's own loader (as `--config FILE` does, without env).
fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T> {
    panoptes_runtime::config::load(Some(path), &[]).with_context(|| format!("{}", path.display()))
}

/// Loads `text` (TOML) with `env` (PANOPTES_… = value lines) on top, as the node would with
/// those variables set; a variable outside the node's `sections` is an error (the node would
/// ignore it silently).
fn load_with_env<T: DeserializeOwned>(text: &str, env: &str, sections: &[&str]) -> Result<T> {
    let mut table: toml::Table = toml::from_str(text)?;
    for line in env
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line.split_once('=').context(line.to_string())?;
        let path: Vec<String> = key
            .strip_prefix("PANOPTES_")
            .context(key.to_string())?
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        ensure!(
            sections.contains(&path[0].as_str()),
            "{key}: not a section this node reads"
        );
        let mut at = &mut table;
        for part in &path[..path.len() - 1] {
            at = at
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .context(key.to_string())?;
        }
        at.insert(
            path[path.len() - 1].clone(),
            toml::Value::String(value.into()),
        );
    }
    Ok(panoptes_runtime::config::from_toml_str(&toml::to_string(
        &table,
    )?)?)
}

/// Every file under `deploy/` with one of these extensions.
fn files_with(ext: &[&str]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, ext: &[&str], out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, ext, out)?;
            } else if ext.iter().any(|e| path.to_string_lossy().ends_with(e)) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(&deploy(), ext, &mut out)?;
    out.sort();
    Ok(out)
}

/// Parses one shipped config file with the parser its name says.
fn parse_config(path: &Path) -> Result<&'static str> {
    let stem = path.file_stem().context("name")?.to_string_lossy();
    Ok(match stem.split(['-', '.']).next().unwrap_or_default() {
        "coordinator" => {
            load_file::<panoptes_coordinator::config::CoordinatorConfig>(path)?;
            "coordinator"
        }
        "ingest" => {
            load_file::<panoptes_ingest::config::IngestConfig>(path)?;
            "ingest"
        }
        "worker" => {
            load_file::<panoptes_workers::config::WorkerConfig>(path)?;
            "worker"
        }
        other => bail!(
            "{}: no parser for config files named {other}*: name it coordinator*, ingest* or worker*",
            path.display()
        ),
    })
}

#[test]
fn every_config_shipped_in_deploy_loads_with_its_nodes_parser() -> Result<()> {
    let mut parsed = BTreeMap::<&str, usize>::new();
    for path in files_with(&[".toml"])? {
        *parsed.entry(parse_config(&path)?).or_default() += 1;
    }
    eprintln!("config files parsed: {parsed:?}");
    for kind in ["coordinator", "ingest", "worker"] {
        ensure!(
            parsed.get(kind).copied().unwrap_or(0) >= 2,
            "{kind} configs: {parsed:?}"
        );
    }

    // The overlays' region.env on top of the ingest and worker files they are used with.
    let mut envs = 0;
    for env_file in files_with(&["region.env"])? {
        let dir = env_file.parent().context("dir")?;
        let configs = if dir.join("config").is_dir() {
            dir.join("config")
        } else {
            deploy().join("k8s/base/config")
        };
        let env = std::fs::read_to_string(&env_file)?;
        let ingest: panoptes_ingest::config::IngestConfig = load_with_env(
            &std::fs::read_to_string(configs.join("ingest.toml"))?,
            &env,
            panoptes_ingest::config::ENV_SECTIONS,
        )
        .with_context(|| format!("{} on ingest.toml", env_file.display()))?;
        let worker: panoptes_workers::config::WorkerConfig = load_with_env(
            &std::fs::read_to_string(configs.join("worker.toml"))?,
            &env,
            panoptes_workers::config::ENV_SECTIONS,
        )
        .with_context(|| format!("{} on worker.toml", env_file.display()))?;
        ensure!(
            ingest.region == worker.region && ingest.region != "local",
            "{}",
            env_file.display()
        );
        envs += 1;
    }
    ensure!(envs >= 3, "{envs} region.env files");
    let services = compose_services_load_their_configs()?;
    ensure!(services >= 14, "{services} compose services checked");

    // A key the parser does not know fails the load (what makes this test a drift test).
    let dir = tempfile::tempdir()?;
    for name in ["coordinator.toml", "ingest.toml", "worker.toml"] {
        let text = std::fs::read_to_string(deploy().join("k8s/base/config").join(name))?;
        let copy = dir.path().join(name);
        std::fs::write(&copy, format!("surplus_key = 1\n{text}"))?;
        let err = parse_config(&copy)
            .err()
            .context(format!("{name} with an unknown key loaded"))?;
        ensure!(
            format!("{err:#}").contains("surplus_key"),
            "{name}: {err:#}"
        );
    }
    Ok(())
}

/// Every Panoptes node of `deploy/compose/docker-compose.yml`, as `docker-compose config`
/// resolves it (with the dev and with the prod config folder), loads the config file mounted
/// at its `--config` path with the service's environment on top, as the node would; returns
/// how many services were checked.
fn compose_services_load_their_configs() -> Result<usize> {
    // every secret file make-secrets.sh makes, empty (docker-compose config wants them)
    let secrets = tempfile::tempdir()?;
    let mut names = vec![
        "api-operator-token",
        "api-viewer-token",
        "kafka-password",
        "kafka-ca.crt",
        "redis-ca.crt",
        "redis-server.crt",
        "redis-server.key",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for user in ["coordinator", "ingest", "workers"] {
        names.push(format!("redis-{user}"));
        names.push(format!("redis-client-{user}.crt"));
        names.push(format!("redis-client-{user}.key"));
    }
    names.push("redis-ops".into());
    for name in names {
        std::fs::write(secrets.path().join(name), "")?;
    }
    let mut checked = 0;
    for config in ["./config/dev", "./config/prod"] {
        let out = Command::new("docker-compose")
            .args(["-p", "drift", "--profile", "dev", "config"])
            .current_dir(deploy().join("compose"))
            .env("PANOPTES_SECRETS", secrets.path())
            .env("PANOPTES_CONFIG", config)
            .output()
            .context("docker-compose (scripts/setup.sh installs it)")?;
        ensure!(
            out.status.success(),
            "docker-compose config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout)?;
        for (name, svc) in doc["services"].as_mapping().context("services")? {
            let image = svc["image"].as_str().unwrap_or_default();
            let node = ["coordinator", "ingest", "worker"]
                .into_iter()
                .find(|n| image.starts_with(&format!("panoptes/{n}:")));
            // one-shot tools run from a node's image (redis-acl) are not nodes
            let Some(node) = node.filter(|_| svc.get("entrypoint").is_none()) else {
                continue;
            };
            let target = format!("/etc/panoptes/{node}.toml");
            let source = common::compose_volume_source(svc, &target)
                .with_context(|| format!("{name:?}: nothing mounted at {target}"))?;
            let text =
                std::fs::read_to_string(&source).with_context(|| format!("{name:?}: {source}"))?;
            // the nodes' own variables (others, e.g. SSL_CERT_FILE, are not configuration)
            let env: String = svc["environment"]
                .as_mapping()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str().is_some_and(|k| k.starts_with("PANOPTES_")))
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| format!("{v:?}"), str::to_string);
                    format!("{}={v}\n", k.as_str().unwrap_or_default())
                })
                .collect();
            let what = || format!("compose service {name:?} ({config})");
            match node {
                "coordinator" => {
                    let c: panoptes_coordinator::config::CoordinatorConfig =
                        load_with_env(&text, &env, panoptes_coordinator::config::ENV_SECTIONS)
                            .with_context(what)?;
                    ensure!(c.id.starts_with("coordinator-"), "{}: id {}", what(), c.id);
                }
                "ingest" => {
                    let c: panoptes_ingest::config::IngestConfig =
                        load_with_env(&text, &env, panoptes_ingest::config::ENV_SECTIONS)
                            .with_context(what)?;
                    ensure!(c.region != "local", "{}: no region", what());
                }
                _ => {
                    let c: panoptes_workers::config::WorkerConfig =
                        load_with_env(&text, &env, panoptes_workers::config::ENV_SECTIONS)
                            .with_context(what)?;
                    ensure!(c.region != "local", "{}: no region", what());
                }
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// Whether Docker is usable here. In CI (`CI` set) it must be: a CI machine without Docker
/// fails the test instead of skipping the image checks.
fn docker_usable() -> Result<bool> {
    let usable = docker(&["info"]).map(|(ok, _)| ok).unwrap_or(false);
    if !usable && std::env::var_os("CI").is_some() {
        bail!("docker info failed: CI machines run Docker Engine (the image checks need it)");
    }
    Ok(usable)
}

#[test]
fn images_build_from_the_test_build_and_run_non_root_on_a_read_only_root() -> Result<()> {
    if !docker_usable()? {
        eprintln!("SKIPPED: docker info failed (no Docker Engine here); CI runs this test");
        return Ok(());
    }
    let tag = "deploy-test";
    let took = common::images::build(tag)?;
    eprintln!("images built in {took:.0?}");

    let revision = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(deploy())
            .output()?
            .stdout,
    )?;
    // (image, program, argument): every program of every image starts as the panoptes user
    // with a read-only root filesystem and no network, its shared libraries all found.
    let runs = [
        ("coordinator", "panoptes-coordinator", "--version"),
        ("coordinator", "panoptes", "--version"),
        ("coordinator", "panoptes-redis-acl", "--help"),
        ("ingest", "panoptes-ingest", "--version"),
        ("worker", "panoptes-worker", "--version"),
        ("camsim", "panoptes-camsim", "--version"),
        ("camsim", "panoptes-devbroker", "--version"),
        ("camsim", "panoptes-check", "--help"),
        ("redis", "redis-server", "--version"),
        ("prometheus", "prometheus", "--version"),
    ];
    for (image, program, arg) in runs {
        let image = format!("panoptes/{image}:{tag}");
        let entry = if program == "redis-server" || program == "prometheus" {
            format!("/usr/bin/{program}")
        } else {
            format!("/usr/local/bin/{program}")
        };
        let (ok, out) = docker(&[
            "run",
            "--rm",
            "--read-only",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--entrypoint",
            &entry,
            &image,
            arg,
        ])?;
        // panoptes-redis-acl has no --help: its usage line (exit 2) shows it loaded
        let ok =
            ok || (program == "panoptes-redis-acl" && out.contains("usage: panoptes-redis-acl"));
        assert!(ok, "{image} {program} {arg}:\n{out}");
    }
    for image in [
        "coordinator",
        "ingest",
        "worker",
        "camsim",
        "redis",
        "prometheus",
    ] {
        check_image_metadata(&format!("panoptes/{image}:{tag}"), revision.trim())?;
    }
    ingest_image_decodes_the_simulator_images_stream(tag)
}

/// One image's user, labels (commit, build profile) and SBOM (CycloneDX: its Debian packages
/// and, for ours, the crates); prints its size.
fn check_image_metadata(image: &str, revision: &str) -> Result<()> {
    let (ok, out) = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}|{{index .Config.Labels \"org.opencontainers.image.revision\"}}|{{index .Config.Labels \"org.panoptes.build-profile\"}}|{{.Size}}",
        image,
    ])?;
    assert!(ok, "{image}: {out}");
    let fields: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(fields[0], "10001:10001", "{image}: user");
    assert!(
        fields[1].starts_with(revision),
        "{image}: revision label {}",
        fields[1]
    );
    assert_eq!(fields[2], "debug", "{image}: build profile label");
    eprintln!("{image}: {:.0} MB", fields[3].parse::<f64>()? / 1e6);
    // the SBOM inside the image: CycloneDX, Debian packages and (ours) the crates
    let (ok, sbom) = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/cat",
        image,
        "/usr/share/doc/panoptes/sbom.cdx.json",
    ])?;
    assert!(ok, "{image}: no SBOM: {sbom}");
    let sbom: serde_json::Value = serde_json::from_str(&sbom)?;
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let purls: Vec<&str> = sbom["components"]
        .as_array()
        .context("components")?
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    ensure!(
        purls.iter().any(|p| p.starts_with("pkg:deb/debian/libc6@")),
        "{image}: SBOM without libc6"
    );
    if !image.contains("redis") && !image.contains("prometheus") {
        ensure!(
            purls.iter().any(|p| p.starts_with("pkg:cargo/tokio@")),
            "{image}: SBOM without crates"
        );
    }
    Ok(())
}

/// Removes the containers and the network of the container check, however it ends.
struct Containers(Vec<String>, String);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = docker(&["rm", "-f", name]);
        }
        let _ = docker(&["network", "rm", &self.1]);
    }
}

/// The ingest image's GStreamer plugins really decode: the simulator image serves an H.264
/// camera on a Docker network, the ingest image (read-only root, its config from the typed
/// `IngestConfig` on a read-only volume, no broker: frames wait in the producer queue)
/// captures, decodes, scales and encodes it: `panoptes_ingest_frames_total` grows.
fn ingest_image_decodes_the_simulator_images_stream(tag: &str) -> Result<()> {
    let id = std::process::id();
    let (net, cam, ing) = (
        format!("panoptes-deploy-{id}"),
        format!("panoptes-camsim-{id}"),
        format!("panoptes-ingest-{id}"),
    );
    let guard = Containers(vec![cam.clone(), ing.clone()], net.clone());
    let (ok, out) = docker(&["network", "create", &net])?;
    ensure!(ok, "network: {out}");
    let hardened = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"];
    let mut args = vec!["run", "-d", "--name", &cam, "--network", &net];
    args.extend(hardened);
    let camsim = format!("panoptes/camsim:{tag}");
    args.extend([
        &camsim,
        "--listen",
        "0.0.0.0:8554",
        "--control",
        "0.0.0.0:8555",
    ]);
    args.extend(["--cameras", "1", "--fps", "5"]);
    let (ok, out) = docker(&args)?;
    ensure!(ok, "camsim container: {out}");

    let mut config =
        panoptes_testkit::ingest::config("ingest-image-test", "127.0.0.1:9", "panoptes.frames");
    config.http.listen = "0.0.0.0:9101".parse()?;
    let url = format!("rtsp://{cam}:8554/cam0");
    config.cameras.push(panoptes_testkit::ingest::camera(
        "cam0",
        url,
        5,
        (320, 180),
        None,
    ));
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ingest.toml"), toml::to_string(&config)?)?;
    let volume = format!("{}:/etc/panoptes:ro", dir.path().display());
    let mut args = vec![
        "run",
        "-d",
        "--name",
        &ing,
        "--network",
        &net,
        "-v",
        &volume,
    ];
    args.extend(hardened);
    let ingest = format!("panoptes/ingest:{tag}");
    args.push(&ingest);
    let (ok, out) = docker(&args)?;
    ensure!(ok, "ingest container: {out}");

    let metrics = "exec 3<>/dev/tcp/127.0.0.1/9101 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3";
    let frames =
        panoptes_testkit::wait_until("frames from the container", Duration::from_secs(45), || {
            let (ok, out) = docker(&["exec", &ing, "bash", "-c", metrics]).ok()?;
            let n = out
                .lines()
                .find(|l| l.starts_with("panoptes_ingest_frames_total{camera=\"cam0\"}"))?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()?;
            (ok && n >= 10.0).then_some(n)
        });
    if frames.is_err() {
        let (_, logs) = docker(&["logs", &ing])?;
        let (_, cam_logs) = docker(&["logs", &cam])?;
        bail!("no frames from the ingest container:\n{logs}\ncamsim:\n{cam_logs}");
    }
    eprintln!(
        "ingest image: {} frames of cam0 decoded and encoded",
        frames?
    );
    drop(guard);
    Ok(())
}
