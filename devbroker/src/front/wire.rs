//! The few pieces of the Kafka wire protocol the secure front reads and writes: size-prefixed
//! frames, the request header, the SASL requests and responses (non-flexible versions 0 and
//! 1 only, which is what the front advertises), and the ApiVersions response it patches.
//!
//! Contract: every frame is bounded by [`MAX_FRAME`]; a negative, oversized or truncated
//! frame is an error (the connection is closed), never a panic or an allocation of the
//! claimed size. Parsing never reads past the frame.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted in either direction (Kafka's default `socket.request.max.bytes`
/// is 100 MiB).
pub const MAX_FRAME: usize = 100 * 1024 * 1024;

/// `SaslHandshake`.
pub const API_SASL_HANDSHAKE: i16 = 17;
/// `ApiVersions`.
pub const API_VERSIONS: i16 = 18;
/// `SaslAuthenticate`.
pub const API_SASL_AUTHENTICATE: i16 = 36;

/// `UNSUPPORTED_SASL_MECHANISM`.
pub const ERR_UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// `ILLEGAL_SASL_STATE`.
pub const ERR_ILLEGAL_SASL_STATE: i16 = 34;
/// `UNSUPPORTED_VERSION`.
pub const ERR_UNSUPPORTED_VERSION: i16 = 35;
/// `SASL_AUTHENTICATION_FAILED`.
pub const ERR_SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Why a frame could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The size prefix is negative or above [`MAX_FRAME`].
    #[error("frame size {0} outside 0..={MAX_FRAME}")]
    Size(i64),
    /// The frame ended before a field did, or a field is malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Reads one size-prefixed frame; `Ok(None)` at a clean end of stream before the prefix.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    let mut size = [0u8; 4];
    match r.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size);
    let len = usize::try_from(size).map_err(|_| WireError::Size(size.into()))?;
    if len > MAX_FRAME {
        return Err(WireError::Size(size.into()));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Writes one frame with its size prefix and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), WireError> {
    let len = i32::try_from(body.len()).map_err(|_| WireError::Size(body.len() as i64))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

/// A cursor over one frame.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// How many bytes were read so far (the position of the next field).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` raw bytes.
    pub fn take_bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        self.take(n, what)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Malformed(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(WireError::Malformed(what))?;
        self.pos = end;
        Ok(s)
    }

    /// A big-endian `int16`.
    pub fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian `int32`.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint (compact lengths and tag counts).
    pub fn uvarint(&mut self, what: &'static str) -> Result<u32, WireError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let b = self.take(1, what)?[0];
            value |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Malformed(what))
    }

    /// A nullable `string` (int16 length, -1 for null).
    pub fn nullable_string(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize, what).map(Some)
    }

    /// A non-null `string`.
    pub fn string(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        self.nullable_string(what)?
            .ok_or(WireError::Malformed(what))
    }

    /// `bytes` (int32 length).
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.i32(what)?;
        let len = usize::try_from(len).map_err(|_| WireError::Malformed(what))?;
        self.take(len, what)
    }

    /// An array count: `int32`, or in flexible versions an unsigned varint of count + 1; null
    /// (and a negative count) reads as 0.
    pub fn count(&mut self, flexible: bool, what: &'static str) -> Result<u32, WireError> {
        if flexible {
            Ok(self.uvarint(what)?.saturating_sub(1))
        } else {
            Ok(u32::try_from(self.i32(what)?).unwrap_or(0))
        }
    }

    /// A compact nullable string or bytes (unsigned varint length + 1, 0 for null).
    pub fn compact_nullable(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        match self.uvarint(what)? {
            0 => Ok(None),
            n => self.take(n as usize - 1, what).map(Some),
        }
    }

    /// A nullable string: compact in flexible versions, else `int16`-prefixed.
    pub fn nullable_string_in(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<&'a [u8]>, WireError> {
        if flexible {
            self.compact_nullable(what)
        } else {
            self.nullable_string(what)
        }
    }

    /// Skips a tagged-field section (flexible versions).
    pub fn tagged_fields(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        for _ in 0..self.uvarint(what)? {
            self.uvarint(what)?;
            let size = self.uvarint(what)? as usize;
            self.take(size, what)?;
        }
        Ok(&self.buf[start..self.pos])
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

/// The header fields of a request that the front needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// API key.
    pub api_key: i16,
    /// API version.
    pub api_version: i16,
    /// Correlation id, echoed in the response.
    pub correlation_id: i32,
}

/// Parses a request header (v1: key, version, correlation id, client id) and returns it
/// with a reader positioned at the body. Only non-flexible requests are parsed further, so
/// the v2 header's tagged fields are left to the caller.
pub fn request_header(frame: &[u8]) -> Result<(RequestHeader, Reader<'_>), WireError> {
    let mut r = Reader::new(frame);
    let header = RequestHeader {
        api_key: r.i16("request header")?,
        api_version: r.i16("request header")?,
        correlation_id: r.i32("request header")?,
    };
    r.nullable_string("client id")?;
    Ok((header, r))
}

/// A response frame being built (header v0: the correlation id).
pub struct Writer(Vec<u8>);

impl Writer {
    /// An empty frame (a request is built field by field).
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// A response to `correlation_id`.
    pub fn response(correlation_id: i32) -> Self {
        Self(correlation_id.to_be_bytes().to_vec())
    }

    /// Appends an `int16`.
    pub fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends an `int32`.
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends an `int64`.
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends an unsigned varint.
    pub fn uvarint(mut self, mut v: u32) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    /// Appends a nullable `string`.
    pub fn nullable_string(mut self, s: Option<&str>) -> Self {
        match s {
            None => self.i16(-1),
            Some(s) => {
                let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
                self.0.extend_from_slice(&len.to_be_bytes());
                self.0.extend_from_slice(&s.as_bytes()[..len as usize]);
                self
            }
        }
    }

    /// Appends `bytes`.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as i32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }

    /// Appends raw bytes.
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The frame body.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// An `(api_key, min_version, max_version)` entry to advertise.
pub type ApiRange = (i16, i16, i16);

/// Rewrites an ApiVersions response of request version `version` so that it lists `extra`
/// (replacing any entry with the same key). Returns `None` when the response is an error or
/// cannot be parsed; the caller then forwards it unchanged.
pub fn patch_api_versions(response: &[u8], version: i16, extra: &[ApiRange]) -> Option<Vec<u8>> {
    patch(response, version, extra, &[]).ok().flatten()
}

/// [`patch_api_versions`] that also lowers the highest version of each `(api_key, max)` in
/// `caps` to at most `max` (the front rewrites those answers and knows no later layout).
pub fn patch_api_versions_capped(
    response: &[u8],
    version: i16,
    extra: &[ApiRange],
    caps: &[(i16, i16)],
) -> Option<Vec<u8>> {
    patch(response, version, extra, caps).ok().flatten()
}

fn patch(
    response: &[u8],
    version: i16,
    extra: &[ApiRange],
    caps: &[(i16, i16)],
) -> Result<Option<Vec<u8>>, WireError> {
    let flexible = version >= 3;
    let mut r = Reader::new(response);
    let correlation_id = r.i32("response header")?;
    let error = r.i16("error code")?;
    if error != 0 {
        return Ok(None);
    }
    let count = if flexible {
        r.uvarint("api count")?
            .checked_sub(1)
            .ok_or(WireError::Malformed("api count"))?
    } else {
        u32::try_from(r.i32("api count")?).map_err(|_| WireError::Malformed("api count"))?
    };
    let mut entries: Vec<(ApiRange, &[u8])> = Vec::new();
    for _ in 0..count.min(10_000) {
        let key = r.i16("api key")?;
        let min = r.i16("api min")?;
        let mut max = r.i16("api max")?;
        if let Some(&(_, cap)) = caps.iter().find(|c| c.0 == key) {
            max = max.min(cap);
        }
        let tags = if flexible {
            r.tagged_fields("api tags")?
        } else {
            &[][..]
        };
        if !extra.iter().any(|e| e.0 == key) {
            entries.push(((key, min, max), tags));
        }
    }
    const NO_TAGS: &[u8] = &[0];
    entries.extend(
        extra
            .iter()
            .map(|&e| (e, if flexible { NO_TAGS } else { &[][..] })),
    );
    let mut w = Writer::response(correlation_id).i16(0);
    w = if flexible {
        w.uvarint(entries.len() as u32 + 1)
    } else {
        w.i32(entries.len() as i32)
    };
    for ((key, min, max), tags) in entries {
        w = w.i16(key).i16(min).i16(max).raw(tags);
    }
    // Throttle time (v1+) and the response's tagged fields (v3+) follow unchanged.
    Ok(Some(w.raw(r.rest()).finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(flexible: bool, apis: &[ApiRange]) -> Vec<u8> {
        let mut w = Writer::response(7).i16(0);
        w = if flexible {
            w.uvarint(apis.len() as u32 + 1)
        } else {
            w.i32(apis.len() as i32)
        };
        for &(k, min, max) in apis {
            w = w.i16(k).i16(min).i16(max);
            if flexible {
                w = w.uvarint(0);
            }
        }
        w = w.i32(0);
        if flexible {
            w = w.uvarint(0);
        }
        w.finish()
    }

    fn parse(body: &[u8], flexible: bool) -> Vec<ApiRange> {
        let mut r = Reader::new(body);
        assert_eq!(r.i32("c").unwrap(), 7);
        assert_eq!(r.i16("e").unwrap(), 0);
        let n = if flexible {
            r.uvarint("n").unwrap() - 1
        } else {
            r.i32("n").unwrap() as u32
        };
        let mut out = Vec::new();
        for _ in 0..n {
            out.push((
                r.i16("k").unwrap(),
                r.i16("k").unwrap(),
                r.i16("k").unwrap(),
            ));
            if flexible {
                r.tagged_fields("t").unwrap();
            }
        }
        assert_eq!(r.i32("throttle").unwrap(), 0);
        if flexible {
            r.tagged_fields("t").unwrap();
        }
        assert!(r.rest().is_empty());
        out
    }

    #[test]
    fn api_versions_are_patched_in_both_encodings() {
        let extra = [(17, 1, 1), (36, 0, 1)];
        for (flexible, version) in [(false, 2), (true, 3)] {
            let original = response(flexible, &[(0, 0, 9), (17, 0, 0), (18, 0, 3)]);
            let patched = patch_api_versions(&original, version, &extra).unwrap();
            assert_eq!(
                parse(&patched, flexible),
                vec![(0, 0, 9), (18, 0, 3), (17, 1, 1), (36, 0, 1)]
            );
        }
        // Errors and garbage are left alone.
        let err = Writer::response(7).i16(35).i32(0).finish();
        assert!(patch_api_versions(&err, 3, &extra).is_none());
        assert!(patch_api_versions(&[0, 0, 0, 7, 0, 0, 0xff], 3, &extra).is_none());
    }

    #[tokio::test]
    async fn frames_are_bounded() {
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut huge).await,
            Err(WireError::Size(_))
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative).await,
            Err(WireError::Size(_))
        ));
        let mut truncated: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(read_frame(&mut truncated).await.is_err());
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.unwrap().is_none());
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(r.uvarint("v").is_err());
        let mut r = Reader::new(&[0, 5, b'a']);
        assert!(r.string("s").is_err());
    }
}
