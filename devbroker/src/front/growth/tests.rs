use super::*;

/// A Metadata response of `version` with one broker (id 1) naming `controller`, and
/// `topics` (name, partition count).
fn metadata_with(version: i16, controller: i32, topics: &[(&str, i32)]) -> Vec<u8> {
    let flex = version >= 9;
    let mut w = Writer::response(9);
    if flex {
        w = w.uvarint(0);
    }
    if version >= 3 {
        w = w.i32(0);
    }
    w = array_len(w, flex, 1).i32(1);
    w = string(w, flex, Some("127.0.0.1")).i32(9092);
    if version >= 1 {
        w = string(w, flex, None);
    }
    if flex {
        w = w.uvarint(0);
    }
    if version >= 2 {
        w = string(w, flex, Some("cluster"));
    }
    if version >= 1 {
        w = w.i32(controller);
    }
    w = array_len(w, flex, topics.len());
    for &(name, n) in topics {
        w = string(w.i16(0), flex, Some(name));
        if version >= 10 {
            w = w.raw(&[7; 16]);
        }
        if version >= 1 {
            w = w.raw(&[0]);
        }
        w = array_len(w, flex, n as usize);
        for p in 0..n {
            w = w.i16(0).i32(p).i32(1);
            if version >= 7 {
                w = w.i32(0);
            }
            let arrays = if version >= 5 { 3 } else { 2 };
            for _ in 0..arrays {
                w = array_len(w, flex, 1).i32(1);
            }
            if flex {
                w = w.uvarint(0);
            }
        }
        if version >= 8 {
            w = w.i32(-2_147_483_648);
        }
        if flex {
            w = w.uvarint(0);
        }
    }
    if (8..=10).contains(&version) {
        w = w.i32(0);
    }
    if flex {
        w = w.uvarint(0);
    }
    w.finish()
}

fn metadata(version: i16, topics: &[(&str, i32)]) -> Vec<u8> {
    metadata_with(version, 1, topics)
}

#[test]
fn metadata_names_a_controller_that_exists() {
    let growth = Growth::default();
    for version in 1..=12 {
        // The mock's controller 0 does not exist: broker 1 is named.
        let fixed = growth
            .rewrite_metadata(&metadata_with(version, 0, &[("detections", 3)]), version)
            .unwrap_or_else(|| panic!("v{version}: controller 0 is replaced"));
        assert_eq!(
            fixed,
            metadata_with(version, 1, &[("detections", 3)]),
            "v{version}"
        );
        // A real controller is kept.
        assert!(
            growth
                .rewrite_metadata(&metadata(version, &[("detections", 3)]), version)
                .is_none()
        );
    }
}

#[test]
fn metadata_hides_partitions_not_created_yet_in_every_version() {
    let growth = Growth::default();
    growth.add("frames", 2, 6);
    for version in 0..=12 {
        let original = metadata(version, &[("frames", 6), ("detections", 3)]);
        let rewritten = growth
            .rewrite_metadata(&original, version)
            .unwrap_or_else(|| panic!("v{version}: frames is growable, so it changes"));
        // Exactly the response of a topic created with 2 partitions; the other unchanged.
        assert_eq!(
            rewritten,
            metadata(version, &[("frames", 2), ("detections", 3)]),
            "v{version}"
        );
    }
    // Nothing growable in the answer, or a version not understood: left alone.
    let other = metadata(12, &[("detections", 3)]);
    assert!(growth.rewrite_metadata(&other, 12).is_none());
    assert!(
        growth
            .rewrite_metadata(&metadata(13, &[("frames", 6)]), 13)
            .is_none()
    );
    // Garbage is left alone, never a panic.
    assert!(growth.rewrite_metadata(&[0, 0, 0, 9, 0xff], 12).is_none());
    let mut truncated = metadata(9, &[("frames", 6)]);
    truncated.truncate(truncated.len() - 7);
    assert!(growth.rewrite_metadata(&truncated, 9).is_none());
}

/// A CreatePartitions request of `version` for `(topic, count)` pairs.
fn create_partitions(version: i16, topics: &[(&str, i32)], validate_only: bool) -> Vec<u8> {
    let flex = version >= 2;
    let mut w = Writer::empty()
        .i16(API_CREATE_PARTITIONS)
        .i16(version)
        .i32(42)
        .nullable_string(Some("test"));
    if flex {
        w = w.uvarint(0);
    }
    w = array_len(w, flex, topics.len());
    for &(name, count) in topics {
        w = string(w, flex, Some(name)).i32(count);
        // No manual assignment (null array).
        w = if flex { w.uvarint(0) } else { w.i32(-1) };
        if flex {
            w = w.uvarint(0);
        }
    }
    w = w.i32(5000).raw(&[u8::from(validate_only)]);
    if flex {
        w = w.uvarint(0);
    }
    w.finish()
}

/// (topic, error code, message) of a CreatePartitions response.
fn answers(response: &[u8], version: i16) -> Vec<(String, i16, Option<String>)> {
    let flex = version >= 2;
    let mut r = Reader::new(response);
    assert_eq!(r.i32("c").unwrap(), 42);
    if flex {
        r.tagged_fields("t").unwrap();
    }
    assert_eq!(r.i32("throttle").unwrap(), 0);
    let mut out = Vec::new();
    for _ in 0..r.count(flex, "n").unwrap() {
        let name = r.nullable_string_in(flex, "name").unwrap().unwrap();
        let error = r.i16("e").unwrap();
        let message = r.nullable_string_in(flex, "m").unwrap();
        if flex {
            r.tagged_fields("t").unwrap();
        }
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            error,
            message.map(|m| String::from_utf8_lossy(m).into_owned()),
        ));
    }
    if flex {
        r.tagged_fields("t").unwrap();
    }
    assert!(r.rest().is_empty());
    out
}

#[test]
fn create_partitions_grows_up_to_the_maximum_with_kafkas_codes() {
    for version in 0..=3 {
        let growth = Growth::default();
        growth.add("frames", 4, 8);
        // Validate only: answered, nothing changes.
        let a = growth
            .answer_create_partitions(&create_partitions(version, &[("frames", 6)], true))
            .unwrap();
        assert_eq!(answers(&a, version), vec![("frames".into(), 0, None)]);
        assert_eq!(growth.counts("frames").unwrap().visible, 4);
        // Grow, then the same count again (Kafka: INVALID_PARTITIONS), past the maximum
        // (POLICY_VIOLATION naming it) and a fixed topic (UNKNOWN_TOPIC_OR_PARTITION).
        let a = growth
            .answer_create_partitions(&create_partitions(
                version,
                &[
                    ("frames", 6),
                    ("frames", 6),
                    ("frames", 9),
                    ("detections", 8),
                ],
                false,
            ))
            .unwrap();
        let got = answers(&a, version);
        assert_eq!(growth.counts("frames").unwrap().visible, 6, "v{version}");
        let codes: Vec<i16> = got.iter().map(|g| g.1).collect();
        assert_eq!(codes, vec![0, 37, 44, 3], "v{version}: {got:?}");
        assert!(
            got[2].2.as_deref().unwrap().contains("at most 8"),
            "{got:?}"
        );
        assert!(
            got[1].2.as_deref().unwrap().contains("currently has 6"),
            "{got:?}"
        );
    }
    // Other requests, versions not answered, and garbage: not answered by the front.
    let growth = Growth::default();
    assert!(
        growth
            .answer_create_partitions(&create_partitions(4, &[("frames", 6)], false))
            .is_none()
    );
    assert!(growth.answer_create_partitions(&[0, 37, 0, 0, 0]).is_none());
}
