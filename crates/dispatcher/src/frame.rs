//! Wire format v1: the checked frame parser.
//!
//! Layout (little-endian): magic `4D 56`, version `1`, flags, room u32, player u32,
//! seq u32, tick u32, kind u16, len u16, `len` payload bytes, 32-byte tag over bytes
//! `0 .. 24 + len`. A frame is exactly [`FRAME_OVERHEAD`]` + len` bytes.
//!
//! The header is read from a fixed 24-byte array taken with one bounds check (fields at
//! constant offsets inside it, so no index can fail), and every limit is checked before
//! anything is copied. [`Reader`], a cursor that hands out sub-slices with `take(n)` and
//! never moves on a short read, is no longer used by the parser itself (the header's
//! fixed offsets replaced it on the hot path); it stays public, checked by its test and the
//! frame fuzz target.
//!
//! # Panics
//! Never: every function here is total over arbitrary input.

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 24;
/// Bytes of the tag after the payload.
pub const TAG_BYTES: usize = 32;
/// A frame is exactly `FRAME_OVERHEAD + len` bytes.
pub const FRAME_OVERHEAD: usize = HEADER_BYTES + TAG_BYTES;
/// `"MV"`.
pub const MAGIC: [u8; 2] = [0x4d, 0x56];
/// The only version spoken.
pub const VERSION: u8 = 1;
/// Flags bit 0: the tag is HMAC-SHA256.
pub const FLAG_HMAC: u8 = 0x01;
/// Largest payload the format can carry.
pub const MAX_WIRE_PAYLOAD: usize = u16::MAX as usize;

/// A cursor over untrusted bytes. Truncated input leaves the cursor where it was.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The next `n` bytes, or `None` (cursor unchanged) if fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub room: u32,
    pub player: u32,
    pub seq: u32,
    pub tick: u32,
    pub kind: u16,
    /// Payload length.
    pub len: u16,
}

impl Header {
    /// Whether flags bit 0 (HMAC-SHA256 tag) is set.
    pub fn is_hmac(&self) -> bool {
        self.flags & FLAG_HMAC != 0
    }

    /// Total frame length this header announces.
    pub fn frame_len(&self) -> usize {
        FRAME_OVERHEAD + usize::from(self.len)
    }
}

/// Why bytes are not an acceptable frame. Never carries payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer than [`HEADER_BYTES`] bytes: no header to read.
    Short { len: usize },
    /// Magic is not `"MV"`, version is not 1, or a reserved flag bit is set.
    BadHeader,
    /// The payload length field exceeds the configured maximum.
    Oversize { len: usize, max: usize },
    /// The buffer length disagrees with the length field.
    LengthMismatch { expected: usize, actual: usize },
    /// seq 0 is never valid.
    ZeroSeq,
}

/// Reads the header of `bytes` without checking the overall length.
///
/// Returns `Err(Short)` below 24 bytes and `Err(BadHeader)` for bad magic, version or flags.
pub fn read_header(bytes: &[u8]) -> Result<Header, FrameError> {
    // One bounds check, then loads at fixed offsets: this runs several times per move on
    // the hot path (the stream's loop and look-ahead, the frame's own checks).
    let Some(b) = bytes.first_chunk::<HEADER_BYTES>() else {
        return Err(FrameError::Short { len: bytes.len() });
    };
    let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let flags = b[3];
    if [b[0], b[1]] != MAGIC || b[2] != VERSION || flags & !FLAG_HMAC != 0 {
        return Err(FrameError::BadHeader);
    }
    Ok(Header {
        flags,
        room: u32_at(4),
        player: u32_at(8),
        seq: u32_at(12),
        tick: u32_at(16),
        kind: u16_at(20),
        len: u16_at(22),
    })
}

/// Checks a whole frame in O(1), in the order of `docs/architecture.md`: header, payload
/// limit, exact length, seq.
pub fn check(bytes: &[u8], max_payload: usize) -> Result<Header, FrameError> {
    check_header(bytes, bytes.len(), max_payload)
}

/// [`check`] of a frame `frame_len` bytes long whose first bytes are `header` (a copy the
/// caller keeps: the frame's memory may change under it, e.g. a `SharedArrayBuffer`).
///
/// # Errors
/// As [`check`].
pub fn check_header(
    header: &[u8],
    frame_len: usize,
    max_payload: usize,
) -> Result<Header, FrameError> {
    let h = read_header(header).map_err(|e| match e {
        FrameError::Short { .. } => FrameError::Short { len: frame_len },
        e => e,
    })?;
    if usize::from(h.len) > max_payload {
        return Err(FrameError::Oversize {
            len: usize::from(h.len),
            max: max_payload,
        });
    }
    if frame_len != h.frame_len() {
        return Err(FrameError::LengthMismatch {
            expected: h.frame_len(),
            actual: frame_len,
        });
    }
    if h.seq == 0 {
        return Err(FrameError::ZeroSeq);
    }
    Ok(h)
}

/// Splits a checked frame into the signed part (`0 .. 24 + len`) and the tag.
///
/// Returns `None` if `bytes` is shorter than 32 bytes.
pub fn split_tag(bytes: &[u8]) -> Option<(&[u8], &[u8; TAG_BYTES])> {
    let at = bytes.len().checked_sub(TAG_BYTES)?;
    let (signed, tag) = bytes.split_at(at);
    Some((signed, tag.try_into().ok()?))
}

/// Writes the 24-byte header for `h` followed by `payload` into a new frame with a zeroed
/// tag. Used by tests and fuzzers (the tag is filled by [`crate::auth`]).
///
/// # Errors
/// `Oversize` if the payload does not fit the u16 length field.
pub fn encode_unsigned(h: &Header, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u16::try_from(payload.len()).map_err(|_| FrameError::Oversize {
        len: payload.len(),
        max: MAX_WIRE_PAYLOAD,
    })?;
    let mut out = Vec::with_capacity(FRAME_OVERHEAD + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(h.flags);
    out.extend_from_slice(&h.room.to_le_bytes());
    out.extend_from_slice(&h.player.to_le_bytes());
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(&h.tick.to_le_bytes());
    out.extend_from_slice(&h.kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&[0; TAG_BYTES]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u16, seq: u32) -> Header {
        Header {
            flags: 0,
            room: 42,
            player: 7,
            seq,
            tick: 1200,
            kind: 5,
            len,
        }
    }

    #[test]
    fn reader_take_leaves_cursor_on_short_input() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take(4), None);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.take(2), Some(&[1, 2][..]));
        assert_eq!(r.u16(), None);
        assert_eq!(r.remaining(), 1);
    }

    #[test]
    fn check_accepts_a_valid_frame_and_roundtrips_the_header() {
        let h = header(5, 3);
        let f = encode_unsigned(&h, b"hello").unwrap();
        assert_eq!(f.len(), FRAME_OVERHEAD + 5);
        assert_eq!(check(&f, 1024), Ok(h));
    }

    #[test]
    fn check_order_matches_the_spec() {
        assert_eq!(check(&[], 10), Err(FrameError::Short { len: 0 }));
        assert_eq!(check(&[0x4d; 23], 10), Err(FrameError::Short { len: 23 }));
        let good = encode_unsigned(&header(4, 1), &[0; 4]).unwrap();
        for (at, value) in [(0, 0u8), (1, 0), (2, 2), (3, 2), (3, 0x80)] {
            let mut f = good.clone();
            f[at] = value;
            assert_eq!(
                check(&f, 10),
                Err(FrameError::BadHeader),
                "byte {at} = {value}"
            );
        }
        assert_eq!(
            check(&good, 3),
            Err(FrameError::Oversize { len: 4, max: 3 })
        );
        // Oversize wins over a length mismatch.
        assert_eq!(
            check(&good[..30], 3),
            Err(FrameError::Oversize { len: 4, max: 3 })
        );
        assert_eq!(
            check(&good[..good.len() - 1], 10),
            Err(FrameError::LengthMismatch {
                expected: 60,
                actual: 59
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            check(&long, 10),
            Err(FrameError::LengthMismatch {
                expected: 60,
                actual: 61
            })
        );
        let zero = encode_unsigned(&header(4, 0), &[0; 4]).unwrap();
        assert_eq!(check(&zero, 10), Err(FrameError::ZeroSeq));
    }

    #[test]
    fn hmac_flag_is_the_only_allowed_bit() {
        let mut h = header(0, 1);
        h.flags = FLAG_HMAC;
        let f = encode_unsigned(&h, &[]).unwrap();
        assert!(check(&f, 0).unwrap().is_hmac());
    }

    #[test]
    fn split_tag_never_panics() {
        assert!(split_tag(&[0; 31]).is_none());
        let (signed, tag) = split_tag(&[1; 40]).unwrap();
        assert_eq!(signed.len(), 8);
        assert_eq!(tag, &[1; 32]);
    }

    /// Property: for every prefix and every mutation of a valid frame, `check` returns
    /// without panicking, and accepts only byte strings whose length equals 56 + len.
    #[test]
    fn prop_check_is_total_and_length_exact() {
        let mut rng = crate::testutil::Rng::new(0x5eed);
        for _ in 0..20_000 {
            let len = rng.below(80) as u16;
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut f = encode_unsigned(&header(len, 1 + rng.below(9) as u32), &payload).unwrap();
            match rng.below(4) {
                0 => f.truncate(rng.below(f.len() as u64 + 1) as usize),
                1 => {
                    let at = rng.below(f.len() as u64) as usize;
                    f[at] = rng.next() as u8;
                }
                2 => f.extend((0..rng.below(5)).map(|_| 0u8)),
                _ => {}
            }
            if let Ok(h) = check(&f, 64) {
                assert_eq!(f.len(), h.frame_len());
                assert!(usize::from(h.len) <= 64);
                assert_ne!(h.seq, 0);
            }
        }
    }
}
