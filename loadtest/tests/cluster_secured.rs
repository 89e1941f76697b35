//! The whole deployment with Redis as production runs it: TLS only, one least-privilege ACL
//! user per process (a coordinator, an ingest node, a worker, each with its own password
//! file), camera passwords sealed in the registry. Cameras (one behind a password) are
//! placed, frames flow to the worker and detections come out: the checker finds frames and
//! answers, nothing lost or duplicated; the stored registry holds no password in clear.

use std::time::Duration;

use anyhow::{Result, ensure};
use panoptes_coordinator_client::keys;
use panoptes_loadtest::stack::{Stack, StackCamera, StackSpec};
use panoptes_scene::camera::Credentials;

const SECRET: &str = "cam-pass-9e1";

#[test]
fn a_stack_over_tls_and_acl_users_processes_every_frame() -> Result<()> {
    let mut cams = StackCamera::small_set(2, "local", 5);
    cams[1].sim.credentials = Some(Credentials {
        user: "viewer".into(),
        pass: SECRET.into(),
    });
    let spec = StackSpec::single_region(cams, 2);
    let mut stack = Stack::start_secured(spec, &["ingest-0"], &["w0"])?;
    ensure!(
        stack.redis.url.starts_with("rediss://"),
        "{}",
        stack.redis.url
    );
    stack.start_members("local", &["ingest-0"], &["w0"])?;
    stack.register_cameras()?;
    stack.wait_settled(Duration::from_secs(60))?;
    let registry: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::CAMERAS)
        .query(&mut stack.redis.connection()?)?;
    ensure!(registry.len() == 2, "{registry:?}");
    ensure!(
        !registry.values().any(|v| v.contains(SECRET)),
        "a password in clear"
    );
    ensure!(
        registry["cam1"].contains("\"password\":\"v1:"),
        "{registry:?}"
    );
    let checker = stack.checker("local")?;
    std::thread::sleep(Duration::from_secs(4));
    let report = stack.stop_intake_and_settle(checker, Duration::from_secs(60))?;
    let t = &report.total;
    eprintln!("checker: {t:?}");
    ensure!(t.frames > 20, "{t:?}");
    assert_eq!((t.lost, t.duplicated), (0, 0), "{t:?}");
    Ok(())
}
