//! The coordinator with a fleet of simulated members (CI size: 3 regions × 100 cameras, 8
//! ingest members, 12 workers, 3 coordinators, real Redis; `panoptes_loadtest::fleet`):
//! every camera and its partition are granted to a live member; a mass failure (10 % of the
//! workers killed at once with SIGKILL) is re-granted within the failover bound (2 s); the
//! dead workers are pruned from the member set; the leader counts its Redis commands.

use anyhow::Result;
use panoptes_loadtest::fleet::{FleetParams, run};

#[test]
fn a_fleet_is_granted_survives_a_mass_failure_and_prunes_the_dead() -> Result<()> {
    let p = FleetParams::quick(env!("CARGO_BIN_EXE_panoptes-bench-fleet").into());
    let r = run::run(&p, |l| eprintln!("{l}"))?;
    eprintln!("{}", serde_json::to_string_pretty(&r)?);
    assert_eq!(r.killed, 2, "10 % of 12 workers, rounded up");
    assert!(r.killed_items > 0, "the killed workers held partitions");
    assert!(
        r.regrant_within_bound(),
        "re-granted after {:?} s (bound {:?})",
        r.regrant_s,
        p.failover_bound
    );
    assert!(r.pruned_s.is_some(), "the dead workers were not pruned");
    assert!(
        r.commands_per_round.is_some_and(|n| n > 0.0),
        "the leader's rounds count their Redis commands"
    );
    Ok(())
}
