use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use panoptes_coordinator_client::AssignRecord;

use super::*;

fn grant(item: &str, epoch: u64) -> Grant {
    Grant {
        item: item.into(),
        record: AssignRecord {
            owner: "me".into(),
            epoch,
            ..Default::default()
        },
    }
}

fn grants(list: &[(&str, u64)]) -> BTreeMap<String, Grant> {
    list.iter()
        .map(|(i, e)| (i.to_string(), grant(i, *e)))
        .collect()
}

/// A `GivenUp` whose releases answer from `answers` in turn (the last one repeats), and
/// the count of releases made.
fn given_up(answers: Vec<Result<bool, CoordError>>) -> (GivenUp, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let answers = Mutex::new(answers);
    let g = GivenUp::with_release(Box::new(move |_, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        let mut a = answers.lock();
        if a.len() > 1 {
            a.remove(0)
        } else {
            match &a[0] {
                Ok(b) => Ok(*b),
                Err(e) => Err(CoordError::Unavailable(e.to_string())),
            }
        }
    }));
    (g, calls)
}

#[test]
fn a_given_up_epoch_and_older_ones_never_start_again_but_a_higher_one_does() {
    let (g, _) = given_up(vec![Ok(true)]);
    g.give_up("local:3", 7);
    assert!(g.blocks("local:3", 7));
    assert!(g.blocks("local:3", 6));
    assert!(!g.blocks("local:3", 8), "the coordinator's next grant runs");
    assert!(!g.blocks("local:2", 7), "other items are not concerned");
}

#[test]
fn the_release_is_made_once_and_the_entry_kept_until_the_snapshot_moved_on() {
    let (g, calls) = given_up(vec![Ok(true)]);
    g.give_up("local:3", 7);
    g.release_due();
    g.release_due();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "released once");
    // The agent has not re-read yet: the snapshot still grants epoch 7 here.
    g.forget_settled(&grants(&[("local:3", 7)]));
    assert!(
        g.blocks("local:3", 7),
        "still blocked while the snapshot shows it"
    );
    // Granted again at a higher epoch: forgotten, and the new grant runs.
    g.forget_settled(&grants(&[("local:3", 8)]));
    assert!(g.items().is_empty());
    assert!(!g.blocks("local:3", 8));
}

#[test]
fn an_item_no_longer_granted_here_is_forgotten_once_released() {
    let (g, _) = given_up(vec![Ok(true)]);
    g.give_up("local:3", 7);
    g.forget_settled(&grants(&[]));
    assert_eq!(
        g.items(),
        BTreeMap::from([("local:3".into(), 7)]),
        "not released yet: kept"
    );
    g.release_due();
    g.forget_settled(&grants(&[]));
    assert!(g.items().is_empty());
}

#[test]
fn a_refused_release_is_done_and_a_failed_one_is_tried_again_later() {
    let (g, calls) = given_up(vec![Ok(false)]);
    g.give_up("local:1", 2);
    g.release_due();
    g.release_due();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "refused: the item moved already"
    );

    let (g, calls) = given_up(vec![
        Err(CoordError::Unavailable("connection refused".into())),
        Ok(true),
    ]);
    g.give_up("local:1", 2);
    g.release_due();
    g.release_due();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "not before the retry delay"
    );
    g.forget_settled(&grants(&[]));
    assert!(
        g.blocks("local:1", 2),
        "kept while the release has not gone through"
    );
    // Due again after the retry delay.
    g.entries.lock().get_mut("local:1").expect("entry").due = Instant::now();
    g.release_due();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    g.forget_settled(&grants(&[]));
    assert!(g.items().is_empty());
}

#[test]
fn a_later_epoch_replaces_an_earlier_entry_and_an_earlier_one_is_ignored() {
    let (g, _) = given_up(vec![Ok(true)]);
    g.give_up("local:0", 4);
    g.give_up("local:0", 6);
    g.give_up("local:0", 5);
    assert_eq!(g.items(), BTreeMap::from([("local:0".into(), 6)]));
}
