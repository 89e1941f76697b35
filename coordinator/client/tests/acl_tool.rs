//! `panoptes-redis-acl` end to end: passwords from files become SHA-256 hashes in an ACL file
//! that a real `redis-server` loads, where each user logs in with its password; bad
//! arguments and unreadable password files are refused with exit status 2.

use std::process::Command;

use anyhow::{Result, ensure};
use panoptes_coordinator_client::acl::password_hash;

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_panoptes-redis-acl"))
}

#[test]
fn renders_a_file_redis_loads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pw = |name: &str| -> Result<String> {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("pw-of-{name}\n"))?;
        Ok(format!("{name}={}", p.display()))
    };
    let out = tool()
        .args(["--coordinator", &pw("coordinator")?])
        .args(["--ingest", &pw("ingest-1")?])
        .args(["--worker", &pw("worker-1")?])
        .args(["--worker-pool", &pw("workers")?])
        .args(["--admin", &pw("ops")?])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    ensure!(!text.contains("pw-of-"), "a password in clear: {text}");
    ensure!(text.contains(&format!("#{}", password_hash("pw-of-worker-1"))));
    ensure!(
        text.contains("~panoptes:member:worker:* "),
        "pool user: {text}"
    );
    ensure!(text.lines().count() == 6, "{text}");

    // A real redis-server loads it (it refuses to start on any ACL error).
    let acl = dir.path().join("users.acl");
    std::fs::write(&acl, &text)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--aclfile")
        .arg(&acl)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut ok = false;
    for _ in 0..100 {
        let auth = Command::new("redis-cli")
            .args([
                "-p",
                &port.to_string(),
                "--user",
                "worker-1",
                "--pass",
                "pw-of-worker-1",
            ])
            .args(["--no-auth-warning", "PING"])
            .output()?;
        if String::from_utf8_lossy(&auth.stdout).trim() == "PONG" {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    ensure!(ok, "worker-1 could not log in with its password");
    Ok(())
}

#[test]
fn refuses_bad_arguments() -> Result<()> {
    for args in [
        vec![],
        vec!["--worker"],
        vec!["--worker", "w1"],
        vec!["--worker", "w1=/nonexistent/pw"],
        vec!["--root", "x=y"],
    ] {
        let out = tool().args(&args).output()?;
        ensure!(out.status.code() == Some(2), "{args:?}: {:?}", out.status);
        ensure!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    Ok(())
}
