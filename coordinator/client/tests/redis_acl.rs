//! The coordination protocol against a real `redis-server` speaking only TLS, with the ACL
//! users `panoptes_coordinator_client::acl` renders: the coordinator's user runs the
//! leader's scripts; member users (one per node) run the real member agent (lease, reads,
//! release) but Redis itself refuses them every grant, epoch, fencing, registry or
//! other-member write (`NOPERM`), also from inside Lua; plaintext, a wrong CA, a wrong
//! password, the `default` user and (with mutual TLS) a client without a certificate are
//! refused. Needs `redis-server` built with TLS (Debian's is).

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use panoptes_coordinator_client::acl::Role;
use panoptes_coordinator_client::{
    CameraRecord, MemberAgent, MemberConfig, MemberKind, RedisLink, keys, scripts,
};
use panoptes_runtime::config::RedisClientConfig;
use panoptes_testkit::RedisServer;
use redis::Connection;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "panoptes.frames";
const T: Duration = Duration::from_secs(2);

fn member(kind: MemberKind, id: &str) -> Role {
    Role::Member {
        kind,
        id: Some(id.into()),
    }
}

fn server(mutual: bool) -> Result<RedisServer> {
    RedisServer::start_secured(
        &[
            ("coordinator", Role::Coordinator),
            ("worker-1", member(MemberKind::Worker, "worker-1")),
            ("ingest-1", member(MemberKind::Ingest, "ingest-1")),
            (
                "workers",
                Role::Member {
                    kind: MemberKind::Worker,
                    id: None,
                },
            ),
        ],
        mutual,
    )
}

fn conn(redis: &RedisServer, user: &str) -> Result<Connection> {
    Ok(RedisLink::open(&redis.client_config(user))?.connect(T)?)
}

/// Runs `cmd` and expects Redis to refuse it for lack of permission (`NOPERM`, or the ACL
/// message of a `redis.call` inside a script).
fn refused(c: &mut Connection, what: &str, cmd: &redis::Cmd) -> Result<()> {
    match cmd.query::<redis::Value>(c) {
        Ok(v) => bail!("{what}: allowed ({v:?})"),
        Err(e)
            if e.to_string().contains("NOPERM")
                || e.to_string()
                    .contains("user executing the script can't access") =>
        {
            Ok(())
        }
        Err(e) => bail!("{what}: failed, but not with NOPERM: {e}"),
    }
}

fn cmd(parts: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(parts[0]);
    for p in &parts[1..] {
        c.arg(*p);
    }
    c
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out waiting for {what}")
}

fn agent(
    redis: &RedisServer,
    kind: MemberKind,
    id: &str,
) -> Result<(MemberAgent, CancellationToken)> {
    let cfg = MemberConfig::new(kind, id, redis.client_config(id))
        .placed("eu", "default", 10.0)
        .serving(String::new(), TOPIC)
        .timing(Duration::from_secs(2), Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let (agent, _thread) = MemberAgent::start(cfg, cancel.clone())?;
    Ok((agent, cancel))
}

#[test]
fn members_do_their_part_and_redis_refuses_them_the_rest() -> Result<()> {
    let redis = server(false)?;
    // The coordinator's user: election, fenced writes, grants, the registry.
    let mut lead = conn(&redis, "coordinator")?;
    let token = scripts::leader_acquire(&mut lead, "coord-1", 5000, "http://c")?
        .expect("first coordinator is elected");
    scripts::fenced_batch(
        &mut lead,
        token,
        &[vec![
            "HSET".into(),
            keys::REGIONS.into(),
            "eu".into(),
            r#"{"bootstrap_servers":"k:9092"}"#.into(),
        ]],
    )?;
    let camera = CameraRecord {
        id: "cam-1".into(),
        url: "rtsp://10.0.0.1/cam-1".into(),
        password: None,
        region: "eu".into(),
        group: "default".into(),
        partition: 0,
        fps: 5,
        width: 640,
        height: 360,
        priority: 5,
        min_fps: 1,
        labels: Default::default(),
    };
    redis::cmd("HSET")
        .arg(keys::CAMERAS)
        .arg("cam-1")
        .arg(serde_json::to_string(&camera)?)
        .query::<()>(&mut lead)?;
    let part_key = keys::partition_assign("eu", TOPIC, 0);
    // Granting eu:0 to worker-1: the coordinator may, a worker's credentials may not.
    let grant_eu0 = |c: &mut redis::Connection| {
        scripts::grant(
            c,
            token,
            MemberKind::Worker,
            &part_key,
            &keys::partition_epoch(TOPIC, 0),
            "eu:0",
            "worker-1",
            &[],
        )
    };
    let e_part = grant_eu0(&mut lead)?;

    // The real member agents, each as its own ACL user: register, renew, read grants.
    let (worker, wc) = agent(&redis, MemberKind::Worker, "worker-1")?;
    let (ingest, ic) = agent(&redis, MemberKind::Ingest, "ingest-1")?;
    // Granted once the ingest node is registered (a camera granted to its id before that
    // was granted to a predecessor, which the agent releases at start).
    let e_cam = scripts::grant(
        &mut lead,
        token,
        MemberKind::Ingest,
        &keys::camera_assign("cam-1"),
        &keys::camera_epoch("cam-1"),
        "cam-1",
        "ingest-1",
        &[("cluster", "eu".into()), ("start_seq", "7".into())],
    )?;
    wait("the worker sees its grant", || {
        let d = worker.desired();
        (d.grants.get("eu:0").map(|g| g.epoch()) == Some(e_part)).then_some(())
    })?;
    let d = wait("the ingest node sees its camera and regions", || {
        let d = ingest.desired();
        (d.grants.contains_key("cam-1") && d.cameras.contains_key("cam-1")).then_some(d)
    })?;
    assert_eq!(d.grants["cam-1"].record.start_seq, Some(7));
    assert_eq!(d.regions["eu"].bootstrap_servers, "k:9092");
    assert_eq!(d.cameras["cam-1"], camera);
    ensure!(
        worker.desired().cameras.is_empty(),
        "workers never read the registry"
    );

    // A handover: the coordinator retargets, the member releases (its own key), and the
    // leader reads the record as released.
    ensure!(scripts::retarget(
        &mut lead,
        token,
        MemberKind::Worker,
        &part_key,
        "worker-1",
        e_part,
        "worker-2"
    )?);
    ensure!(worker.release("eu:0", e_part, None)?, "release refused");
    ensure!(ingest.release("cam-1", e_cam, Some(42))?, "release refused");
    let rec = scripts::read_assignment(&mut lead, MemberKind::Worker, &part_key, "eu:0")?;
    assert_eq!(rec.released, Some(e_part));
    let rec = scripts::read_assignment(
        &mut lead,
        MemberKind::Ingest,
        &keys::camera_assign("cam-1"),
        "cam-1",
    )?;
    assert_eq!((rec.released, rec.released_seq), (Some(e_cam), Some(42)));
    // A release at a stale epoch is refused by the script, not by the ACL.
    ensure!(!worker.release("eu:0", e_part + 5, None)?);

    // What a worker's credentials cannot do.
    let mut w = conn(&redis, "worker-1")?;
    let grant = grant_eu0(&mut w);
    ensure!(
        matches!(&grant, Err(e) if e.to_string().contains("NOPERM")),
        "a worker's grant must be refused by Redis: {grant:?}"
    );
    let epoch_key = keys::partition_epoch(TOPIC, 0);
    let forged_grant = cmd(&["HSET", &part_key, "owner", "worker-1", "epoch", "99"]);
    for (what, c) in [
        ("write a grant", forged_grant.clone()),
        ("bump an epoch", cmd(&["INCR", &epoch_key])),
        ("bump the fencing token", cmd(&["INCR", keys::FENCE])),
        (
            "take the leader lease",
            cmd(&["SET", keys::LEADER, "w", "PX", "9000"]),
        ),
        (
            "write the registry",
            cmd(&["HSET", keys::CAMERAS, "x", "{}"]),
        ),
        ("read the registry", cmd(&["HGETALL", keys::CAMERAS])),
        ("write regions", cmd(&["HSET", keys::REGIONS, "eu", "{}"])),
        (
            "write its own owned index",
            cmd(&["SADD", &keys::owned(MemberKind::Worker, "worker-1"), "eu:9"]),
        ),
        (
            "clear its drain flag",
            cmd(&["DEL", &keys::drain(MemberKind::Worker, "worker-1")]),
        ),
        (
            "renew another worker",
            cmd(&[
                "HSET",
                &keys::member(MemberKind::Worker, "worker-2"),
                "id",
                "worker-2",
            ]),
        ),
        (
            "release for another worker",
            cmd(&[
                "HSET",
                &keys::released(MemberKind::Worker, "worker-2"),
                "eu:0",
                "1",
            ]),
        ),
        ("list keys", cmd(&["KEYS", "*"])),
        ("flush", cmd(&["FLUSHALL"])),
        ("read the config", cmd(&["CONFIG", "GET", "*"])),
        ("change ACLs", cmd(&["ACL", "SETUSER", "worker-1", "~*"])),
        (
            "write a model rollout",
            cmd(&["SET", &keys::rollout("g"), "{}"]),
        ),
        (
            "subscribe to another member",
            cmd(&["SUBSCRIBE", "panoptes:notify:worker:worker-2"]),
        ),
        (
            "write a grant from Lua",
            cmd(&[
                "EVAL",
                "return redis.call('HSET', ARGV[1], 'owner', 'worker-1')",
                "0",
                &part_key,
            ]),
        ),
    ] {
        refused(&mut w, what, &c)?;
    }
    let owner: String = cmd(&["HGET", &part_key, "owner"]).query(&mut w)?;
    assert_eq!(owner, "worker-1", "the record is untouched (and readable)");
    let _: Option<String> = cmd(&["GET", &keys::rollout("g")]).query(&mut w)?;

    // An ingest node: reads the registry and camera grants, writes none of them.
    let mut i = conn(&redis, "ingest-1")?;
    let _: Vec<Option<String>> = cmd(&["HMGET", keys::CAMERAS, "cam-1"]).query(&mut i)?;
    for (what, c) in [
        (
            "write a camera grant",
            cmd(&["HSET", &keys::camera_assign("cam-1"), "owner", "ingest-1"]),
        ),
        (
            "bump a camera epoch",
            cmd(&["INCR", &keys::camera_epoch("cam-1")]),
        ),
        (
            "write the registry",
            cmd(&["HSET", keys::CAMERAS, "cam-1", "{}"]),
        ),
        ("read partition grants", cmd(&["HGETALL", &part_key])),
        ("read a model rollout", cmd(&["GET", &keys::rollout("g")])),
        (
            "renew a worker",
            cmd(&[
                "HSET",
                &keys::member(MemberKind::Worker, "worker-1"),
                "id",
                "x",
            ]),
        ),
    ] {
        refused(&mut i, what, &c)?;
    }

    // The coordinator writes grants and the registry, but no dangerous commands.
    let _: i64 = cmd(&["INCR", &epoch_key]).query(&mut lead)?;
    for (what, c) in [
        ("flush", cmd(&["FLUSHALL"])),
        ("list keys", cmd(&["KEYS", "*"])),
        ("reconfigure", cmd(&["CONFIG", "SET", "appendonly", "yes"])),
        ("write outside panoptes:", cmd(&["SET", "other", "1"])),
    ] {
        refused(&mut lead, what, &c)?;
    }

    // Leaving removes the member's own lease (DEL, SREM, PUBLISH are allowed).
    wc.cancel();
    ic.cancel();
    wait("the worker's lease is gone", || {
        let n: i64 = cmd(&["EXISTS", &keys::member(MemberKind::Worker, "worker-1")])
            .query(&mut lead)
            .ok()?;
        (n == 0).then_some(())
    })?;
    Ok(())
}

#[test]
fn a_pool_user_serves_any_worker_id_but_still_writes_no_grant() -> Result<()> {
    let redis = server(false)?;
    let cfg = MemberConfig::new(
        MemberKind::Worker,
        "worker-7",
        redis.client_config("workers"),
    )
    .placed("eu", "default", 10.0)
    .serving(String::new(), TOPIC)
    .timing(Duration::from_secs(2), Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let (_agent, _thread) = MemberAgent::start(cfg, cancel.clone())?;
    let mut admin = redis.connection()?;
    let n: i64 =
        cmd(&["EXISTS", &keys::member(MemberKind::Worker, "worker-7")]).query(&mut admin)?;
    ensure!(n == 1, "worker-7 registered through the pool user");
    let mut w = conn(&redis, "workers")?;
    let part_key = keys::partition_assign("eu", TOPIC, 0);
    refused(
        &mut w,
        "write a grant",
        &cmd(&["HSET", &part_key, "owner", "worker-7"]),
    )?;
    refused(
        &mut w,
        "bump an epoch",
        &cmd(&["INCR", &keys::partition_epoch(TOPIC, 0)]),
    )?;
    refused(
        &mut w,
        "renew an ingest node",
        &cmd(&["HSET", &keys::member(MemberKind::Ingest, "i"), "id", "i"]),
    )?;
    cancel.cancel();
    Ok(())
}

#[test]
fn tls_and_logins_fail_closed() -> Result<()> {
    let redis = server(true)?;
    let good = redis.client_config("worker-1");
    conn(&redis, "worker-1")?;
    let pki = &redis.security().expect("secured").pki;
    let dir = tempfile::tempdir()?;
    let wrong_pw = dir.path().join("wrong");
    std::fs::write(&wrong_pw, "not-the-password\n")?;
    let cases = [
        (
            "plaintext to the TLS port",
            "redis unavailable",
            RedisClientConfig {
                redis_url: good.redis_url.replace("rediss://", "redis://"),
                redis_tls: Default::default(),
                ..good.clone()
            },
        ),
        (
            "a server certificate from another CA",
            "UnknownIssuer",
            RedisClientConfig {
                redis_tls: pki.client_wrong_ca(),
                ..good.clone()
            },
        ),
        (
            "no client certificate (mutual TLS)",
            "CertificateRequired",
            RedisClientConfig {
                redis_tls: pki.client(),
                ..good.clone()
            },
        ),
        (
            "a wrong password",
            "AuthenticationFailed",
            RedisClientConfig {
                redis_password_file: Some(wrong_pw),
                ..good.clone()
            },
        ),
        (
            "the default user",
            "NOAUTH",
            RedisClientConfig {
                redis_username: None,
                redis_password_file: None,
                ..good.clone()
            },
        ),
    ];
    for (what, why, cfg) in cases {
        let result = RedisLink::open(&cfg)
            .and_then(|l| l.connect(T))
            .and_then(|mut c| Ok(cmd(&["PING"]).query::<String>(&mut c)?));
        ensure!(result.is_err(), "{what}: connected ({result:?})");
        let e = result.unwrap_err().to_string();
        ensure!(e.contains(why), "{what}: refused, but not for {why}: {e}");
        ensure!(
            !e.contains("not-the-password"),
            "{what}: error shows the password: {e}"
        );
    }
    // Settings that cannot be right are refused before any connection.
    for (what, cfg) in [
        (
            "rediss:// without a CA",
            RedisClientConfig {
                redis_tls: Default::default(),
                ..good.clone()
            },
        ),
        (
            "#insecure",
            RedisClientConfig {
                redis_url: format!("{}#insecure", good.redis_url),
                ..good.clone()
            },
        ),
        (
            "a user without a password",
            RedisClientConfig {
                redis_password_file: None,
                ..good.clone()
            },
        ),
    ] {
        if what == "a user without a password"
            && std::env::var_os(panoptes_runtime::config::redis::PASSWORD_ENV).is_some()
        {
            continue;
        }
        let e = RedisLink::open(&cfg).expect_err(what);
        ensure!(
            matches!(e, panoptes_coordinator_client::CoordError::Invalid(_)),
            "{what}: {e}"
        );
    }
    Ok(())
}
