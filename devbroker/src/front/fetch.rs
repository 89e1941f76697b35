//! The pieces of `Fetch` and `Produce` the prompt-fetch relay ([`super::prompt`]) reads:
//! where a Fetch request's `MaxWaitMs` sits, a Produce request's `acks`, and whether a Fetch
//! response carries records. Pure functions over one frame (without its size prefix).
//!
//! Contract: only versions whose layout is written out here are understood (Fetch 4–16,
//! Produce 3–12); anything else, and anything malformed, is `None` /
//! [`FetchAnswer::AnswerNow`], and the relay then forwards the frame unchanged. Parsing never
//! reads past the frame (it goes through [`Reader`]).

use super::wire::{Reader, WireError, request_header};

/// `Produce`.
pub const API_PRODUCE: i16 = 0;
/// `Fetch`.
pub const API_FETCH: i16 = 1;

/// Fetch versions whose request and response layout [`max_wait`] and [`fetch_answer`] know.
const FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 4..=16;
/// Produce versions whose request layout [`produce_acks`] knows.
const PRODUCE_VERSIONS: std::ops::RangeInclusive<i16> = 3..=12;

/// A Fetch request's `MaxWaitMs`: its byte position in the frame and its value. `None`
/// for other requests and for versions not understood.
pub fn max_wait(frame: &[u8]) -> Option<(usize, i32)> {
    let (h, mut r) = request_header(frame).ok()?;
    if h.api_key != API_FETCH || !FETCH_VERSIONS.contains(&h.api_version) {
        return None;
    }
    if h.api_version >= 12 {
        r.tagged_fields("request header tags").ok()?;
    }
    if h.api_version <= 14 {
        r.i32("replica id").ok()?;
    }
    let at = r.position();
    let wait = r.i32("max wait").ok()?;
    Some((at, wait))
}

/// `frame` with the `MaxWaitMs` at `at` (from [`max_wait`]) set to `ms`.
pub fn with_max_wait(frame: &[u8], at: usize, ms: i32) -> Vec<u8> {
    let mut out = frame.to_vec();
    if let Some(field) = out.get_mut(at..at + 4) {
        field.copy_from_slice(&ms.to_be_bytes());
    }
    out
}

/// A Produce request's `acks` (0: the broker sends no response). `None` for other
/// requests and for versions not understood.
pub fn produce_acks(frame: &[u8]) -> Option<i16> {
    let (h, mut r) = request_header(frame).ok()?;
    if h.api_key != API_PRODUCE || !PRODUCE_VERSIONS.contains(&h.api_version) {
        return None;
    }
    if h.api_version >= 9 {
        r.tagged_fields("request header tags").ok()?;
        r.compact_nullable("transactional id").ok()?;
    } else {
        r.nullable_string("transactional id").ok()?;
    }
    r.i16("acks").ok()
}

/// The correlation id of a response frame.
pub fn response_correlation(frame: &[u8]) -> Option<i32> {
    Reader::new(frame).i32("correlation id").ok()
}

/// What a Fetch response says about waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer {
    /// At least one partition returned records.
    Records,
    /// No records and no error: the broker would have waited.
    Empty,
    /// An error, or a layout not understood: answer the client as it is.
    AnswerNow,
}

/// Reads a Fetch response of request version `version`.
pub fn fetch_answer(response: &[u8], version: i16) -> FetchAnswer {
    if !FETCH_VERSIONS.contains(&version) {
        return FetchAnswer::AnswerNow;
    }
    match scan(response, version) {
        Ok(Some(true)) => FetchAnswer::Records,
        Ok(Some(false)) => FetchAnswer::Empty,
        Ok(None) | Err(_) => FetchAnswer::AnswerNow,
    }
}

/// `Some(any records)`, or `None` when the response or a partition carries an error.
fn scan(response: &[u8], version: i16) -> Result<Option<bool>, WireError> {
    let flexible = version >= 12;
    let mut r = Reader::new(response);
    r.i32("correlation id")?;
    if flexible {
        r.tagged_fields("response header tags")?;
    }
    r.i32("throttle time")?;
    if version >= 7 {
        if r.i16("error code")? != 0 {
            return Ok(None);
        }
        r.i32("session id")?;
    }
    let mut records = false;
    for _ in 0..r.count(flexible, "topics")? {
        if version >= 13 {
            r.take_bytes(16, "topic id")?;
        } else if flexible {
            r.compact_nullable("topic")?;
        } else {
            r.string("topic")?;
        }
        for _ in 0..r.count(flexible, "partitions")? {
            r.i32("partition")?;
            if r.i16("partition error")? != 0 {
                return Ok(None);
            }
            r.take_bytes(8 * 3, "watermarks")?;
            // Aborted transactions: (producer id, first offset) each, nullable.
            for _ in 0..r.count(flexible, "aborted")? {
                r.take_bytes(16, "aborted transaction")?;
                if flexible {
                    r.tagged_fields("aborted tags")?;
                }
            }
            if version >= 11 {
                r.i32("preferred read replica")?;
            }
            let len = if flexible {
                r.compact_nullable("records")?.map_or(0, <[u8]>::len)
            } else {
                let len = r.i32("records")?;
                r.take_bytes(usize::try_from(len).unwrap_or(0), "records")?
                    .len()
            };
            records |= len > 0;
            if flexible {
                r.tagged_fields("partition tags")?;
            }
        }
        if flexible {
            r.tagged_fields("topic tags")?;
        }
    }
    Ok(Some(records))
}

#[cfg(test)]
mod tests {
    use super::super::wire::Writer;
    use super::*;

    /// A request header v1 (+ tags for flexible versions) for `key`/`version`.
    fn header(key: i16, version: i16, flexible: bool) -> Writer {
        let w = Writer::empty()
            .i16(key)
            .i16(version)
            .i32(7)
            .nullable_string(Some("client"));
        if flexible { w.uvarint(0) } else { w }
    }

    fn fetch_request(version: i16, wait: i32) -> Vec<u8> {
        let mut w = header(API_FETCH, version, version >= 12);
        if version <= 14 {
            w = w.i32(-1);
        }
        w.i32(wait).i32(1).i32(52_428_800).raw(&[1]).finish()
    }

    #[test]
    fn max_wait_is_found_and_rewritten_in_every_layout() {
        for version in [4, 11, 12, 14, 15, 16] {
            let frame = fetch_request(version, 50);
            let (at, wait) = max_wait(&frame).unwrap_or_else(|| panic!("v{version}"));
            assert_eq!(wait, 50, "v{version}");
            let rewritten = with_max_wait(&frame, at, 0);
            assert_eq!(max_wait(&rewritten), Some((at, 0)), "v{version}");
            assert_eq!(rewritten.len(), frame.len());
        }
        assert_eq!(max_wait(&fetch_request(3, 50)), None, "old versions pass");
        assert_eq!(
            max_wait(&fetch_request(17, 50)),
            None,
            "unknown versions pass"
        );
        let produce = header(API_PRODUCE, 7, false).finish();
        assert_eq!(max_wait(&produce), None);
        assert_eq!(max_wait(&[0, 1]), None);
    }

    #[test]
    fn produce_acks_in_both_encodings() {
        let old = header(API_PRODUCE, 7, false)
            .nullable_string(None)
            .i16(-1)
            .finish();
        assert_eq!(produce_acks(&old), Some(-1));
        let flexible = header(API_PRODUCE, 10, true).uvarint(0).i16(0).finish();
        assert_eq!(produce_acks(&flexible), Some(0));
        let transactional = header(API_PRODUCE, 10, true)
            .uvarint(4)
            .raw(b"txn")
            .i16(1)
            .finish();
        assert_eq!(produce_acks(&transactional), Some(1));
        assert_eq!(produce_acks(&fetch_request(12, 5)), None);
    }

    /// A Fetch response with one topic and `parts` partitions of `(error, records)`.
    fn fetch_response(version: i16, top_error: i16, parts: &[(i16, &[u8])]) -> Vec<u8> {
        let flexible = version >= 12;
        let mut w = Writer::response(7);
        if flexible {
            w = w.uvarint(0);
        }
        w = w.i32(0);
        if version >= 7 {
            w = w.i16(top_error).i32(0);
        }
        w = if flexible { w.uvarint(2) } else { w.i32(1) };
        w = if version >= 13 {
            w.raw(&[9; 16])
        } else if flexible {
            w.uvarint(2).raw(b"t")
        } else {
            w.nullable_string(Some("t"))
        };
        w = if flexible {
            w.uvarint(parts.len() as u32 + 1)
        } else {
            w.i32(parts.len() as i32)
        };
        for (i, (error, records)) in parts.iter().enumerate() {
            w = w.i32(i as i32).i16(*error).i64(10).i64(10).i64(0);
            // One aborted transaction, to be skipped.
            w = if flexible {
                w.uvarint(2).i64(1).i64(2).uvarint(0)
            } else {
                w.i32(1).i64(1).i64(2)
            };
            if version >= 11 {
                w = w.i32(-1);
            }
            w = if flexible {
                w.uvarint(records.len() as u32 + 1).raw(records).uvarint(0)
            } else {
                w.bytes(records)
            };
        }
        if flexible {
            w = w.uvarint(0).uvarint(0);
        }
        w.finish()
    }

    #[test]
    fn fetch_responses_are_read_in_every_layout() {
        for version in [4, 7, 11, 12, 13, 16] {
            let empty = fetch_response(version, 0, &[(0, b""), (0, b"")]);
            assert_eq!(
                fetch_answer(&empty, version),
                FetchAnswer::Empty,
                "v{version}"
            );
            let data = fetch_response(version, 0, &[(0, b""), (0, b"batch")]);
            assert_eq!(
                fetch_answer(&data, version),
                FetchAnswer::Records,
                "v{version}"
            );
            let error = fetch_response(version, 0, &[(0, b""), (6, b"")]);
            assert_eq!(
                fetch_answer(&error, version),
                FetchAnswer::AnswerNow,
                "v{version}"
            );
            let truncated = &data[..data.len() - 3];
            assert_eq!(
                fetch_answer(truncated, version),
                FetchAnswer::AnswerNow,
                "v{version}"
            );
        }
        let top_error = fetch_response(12, 3, &[(0, b"")]);
        assert_eq!(fetch_answer(&top_error, 12), FetchAnswer::AnswerNow);
        assert_eq!(response_correlation(&top_error), Some(7));
    }
}
