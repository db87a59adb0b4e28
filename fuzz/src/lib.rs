//! Shared pieces of the fuzz targets: an input cursor, and *independent* reference models
//! that the targets compare the crate against (written from `docs/architecture.md` and the
//! README's wire format, not from the crate's code):
//!
//! - [`ref_check`]: the wire-format checks, by direct indexing;
//! - [`ref_hmac`]: HMAC-SHA256 from RFC 2104, the textbook two hashes over `sha2`'s
//!   `Digest` (the dispatcher's `PlayerKey` keeps the two padded keys' SHA-256 midstates
//!   and finishes them with `sha2::compress256`; `hmac` is only its tests' reference);
//! - [`WindowModel`]: the anti-replay window as a plain set of accepted numbers.

use std::collections::BTreeSet;

use move_dispatcher::frame::{FrameError, Header};
use sha2::{Digest, Sha256};

/// A cursor over fuzzer bytes. Reading past the end yields zeros, so every input decodes.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            usize::from(self.u8()) % n
        } else {
            usize::from(self.u16()) % n
        }
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.bytes.len());
        let end = self.pos.saturating_add(n).min(self.bytes.len());
        self.pos = self.pos.saturating_add(n);
        &self.bytes[start..end]
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.bytes.len());
        self.pos = self.bytes.len();
        &self.bytes[start..]
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from(b[at]) | u16::from(b[at + 1]) << 8
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from(le16(b, at)) | u32::from(le16(b, at + 2)) << 16
}

/// The header fields at the start of `b` (at least 24 bytes), magic etc. not checked.
pub fn ref_fields(b: &[u8]) -> Header {
    Header {
        flags: b[3],
        room: le32(b, 4),
        player: le32(b, 8),
        seq: le32(b, 12),
        tick: le32(b, 16),
        kind: le16(b, 20),
        len: le16(b, 22),
    }
}

/// `read_header`, from the spec: `Short` below 24 bytes, `BadHeader` for magic `MV`,
/// version 1 or a flag bit other than bit 0.
pub fn ref_header(b: &[u8]) -> Result<Header, FrameError> {
    if b.len() < 24 {
        return Err(FrameError::Short { len: b.len() });
    }
    if b[0] != 0x4d || b[1] != 0x56 || b[2] != 1 || b[3] & 0xfe != 0 {
        return Err(FrameError::BadHeader);
    }
    Ok(ref_fields(b))
}

/// `check`, from the spec's order: header, payload limit, exact length, seq.
pub fn ref_check(b: &[u8], max_payload: usize) -> Result<Header, FrameError> {
    let h = ref_header(b)?;
    let len = usize::from(h.len);
    if len > max_payload {
        return Err(FrameError::Oversize {
            len,
            max: max_payload,
        });
    }
    if b.len() != 56 + len {
        return Err(FrameError::LengthMismatch {
            expected: 56 + len,
            actual: b.len(),
        });
    }
    if h.seq == 0 {
        return Err(FrameError::ZeroSeq);
    }
    Ok(h)
}

/// Plain SHA-256.
pub fn ref_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// HMAC-SHA256 (RFC 2104) for keys of at most one block (64 bytes), as `join` allows.
pub fn ref_hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    assert!(key.len() <= 64);
    let mut k0 = [0u8; 64];
    k0[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(k0.map(|b| b ^ 0x36));
    inner.update(data);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k0.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The replay window as the spec states it, kept as a set: accept `s` if `s > top`, or if
/// `top - s < width` and `s` was never accepted; `0` never.
#[derive(Debug, Clone, Default)]
pub struct WindowModel {
    pub top: u32,
    seen: BTreeSet<u32>,
}

/// A model verdict on one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRefusal {
    Duplicate,
    TooOld,
}

impl WindowModel {
    pub const WIDTH: u32 = 128;

    pub fn check(&self, s: u32) -> Result<(), ModelRefusal> {
        if s > self.top {
            return Ok(());
        }
        if s == 0 || self.top - s >= Self::WIDTH {
            return Err(ModelRefusal::TooOld);
        }
        if self.seen.contains(&s) {
            Err(ModelRefusal::Duplicate)
        } else {
            Ok(())
        }
    }

    pub fn accept(&mut self, s: u32) -> Result<(), ModelRefusal> {
        self.check(s)?;
        self.seen.insert(s);
        self.top = self.top.max(s);
        // Anything at or below top - WIDTH is refused whatever the set says: forget it, so
        // the set stays at most WIDTH entries.
        if self.top >= Self::WIDTH {
            let floor = self.top - Self::WIDTH;
            while let Some(&first) = self.seen.first() {
                if first > floor {
                    break;
                }
                self.seen.remove(&first);
            }
        }
        Ok(())
    }

    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_hmac_matches_rfc4231_case_1() {
        let tag = ref_hmac(&[0x0b; 20], b"Hi There");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn window_model_edges() {
        let mut w = WindowModel::default();
        assert_eq!(w.accept(0), Err(ModelRefusal::TooOld));
        assert_eq!(w.accept(200), Ok(()));
        assert_eq!(w.accept(73), Ok(()));
        assert_eq!(w.accept(72), Err(ModelRefusal::TooOld));
        assert_eq!(w.accept(200), Err(ModelRefusal::Duplicate));
    }
}
