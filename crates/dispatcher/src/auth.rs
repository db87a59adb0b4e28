//! Tag computation and constant-time verification.
//!
//! SHA-256 rooms carry `SHA-256(frame[0 .. 24 + len])`; HMAC rooms carry
//! `HMAC-SHA256(player_key, frame[0 .. 24 + len])`. Tags are compared with
//! [`ct_eq`], whose running time does not depend on where the tags differ.

use std::mem::ManuallyDrop;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::frame::{split_tag, TAG_BYTES};

type HmacSha256 = Hmac<Sha256>;

/// Smallest HMAC key accepted by `join`.
pub const MIN_KEY_BYTES: usize = 16;
/// Largest HMAC key accepted by `join`.
pub const MAX_KEY_BYTES: usize = 64;

/// A player's HMAC key, with the keyed state precomputed so each frame costs one clone.
///
/// `Debug` never prints key material. Not `Clone`: the one copy of the key and of its keyed
/// state (equivalent to the key) is zeroised when it is dropped (`leave`, a key rotation,
/// `closeRoom`, `close`).
pub struct PlayerKey {
    /// Never dropped as such: [`PlayerKey`]'s `Drop` zeroises it in place.
    keyed: ManuallyDrop<HmacSha256>,
    raw: [u8; MAX_KEY_BYTES],
    len: usize,
}

impl std::fmt::Debug for PlayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerKey")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A key outside `16..=64` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadKeyLength {
    pub len: usize,
}

impl PlayerKey {
    /// Copies `key` (16..=64 bytes).
    ///
    /// # Errors
    /// [`BadKeyLength`] outside 16..=64 bytes.
    pub fn new(key: &[u8]) -> Result<Self, BadKeyLength> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(BadKeyLength { len: key.len() });
        }
        let keyed = HmacSha256::new_from_slice(key).map_err(|_| BadKeyLength { len: key.len() })?;
        let mut raw = [0; MAX_KEY_BYTES];
        raw[..key.len()].copy_from_slice(key);
        Ok(Self {
            keyed: ManuallyDrop::new(keyed),
            raw,
            len: key.len(),
        })
    }

    /// HMAC-SHA256 of `data` under this key.
    pub fn mac(&self, data: &[u8]) -> [u8; TAG_BYTES] {
        let mut m = HmacSha256::clone(&self.keyed);
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

impl Drop for PlayerKey {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl PlayerKey {
    /// Overwrites the key and its keyed state with zeros (only ever called by `drop`, and
    /// by a test that checks every byte).
    fn wipe(&mut self) {
        // Zeroise our copy of the key and the keyed HMAC state (the inner and outer pads
        // hashed: whoever has them can sign as the player). Volatile writes keep the
        // compiler from eliding stores to memory that is about to be freed.
        for b in &mut self.raw {
            // SAFETY: `b` is a valid, aligned, exclusive reference to a byte we own.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        let state: *mut HmacSha256 = &raw mut *self.keyed;
        let bytes = state.cast::<u8>();
        for i in 0..std::mem::size_of::<HmacSha256>() {
            // SAFETY: `state` points to the live `HmacSha256` this value owns exclusively
            // (we are in its drop); every byte offset below its size is in bounds. The
            // state is never read or dropped afterwards (`ManuallyDrop`), so the zeroed
            // bytes need not form a valid value; it owns no heap memory (fixed-size arrays
            // and counters), so skipping its destructor frees nothing and leaks nothing.
            unsafe { std::ptr::write_volatile(bytes.add(i), 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; TAG_BYTES] {
    Sha256::digest(data).into()
}

/// Compares two tags in constant time: every byte is combined, with no early exit,
/// and the accumulator passes through `black_box` so the compiler cannot add one.
pub fn ct_eq(a: &[u8; TAG_BYTES], b: &[u8; TAG_BYTES]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Verifies the tag of a length-checked frame: SHA-256 when `key` is `None`, else HMAC.
pub fn verify(frame: &[u8], key: Option<&PlayerKey>) -> bool {
    let Some((signed, tag)) = split_tag(frame) else {
        return false;
    };
    let expected = match key {
        None => sha256(signed),
        Some(k) => k.mac(signed),
    };
    ct_eq(&expected, tag)
}

/// Fills the tag of `frame` in place (tests, fuzzers, benchmarks).
pub fn sign(frame: &mut [u8], key: Option<&PlayerKey>) {
    let Some(at) = frame.len().checked_sub(TAG_BYTES) else {
        return;
    };
    let (signed, tag) = frame.split_at_mut(at);
    let t = match key {
        None => sha256(signed),
        Some(k) => k.mac(signed),
    };
    tag.copy_from_slice(&t);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn wire_vectors_verify() {
        let text = include_str!("../tests/wire-v1.json");
        let mut checked = 0;
        for chunk in text.split("\"frame\": \"").skip(1) {
            let frame = hex(&chunk[..chunk.find('"').unwrap()]);
            // the key, if any, is the last "key" field before this frame in the file
            let before = &text[..text.find(&chunk[..40]).unwrap()];
            let obj = &before[before.rfind('{').unwrap()..];
            let key = obj
                .split("\"key\": \"")
                .nth(1)
                .map(|k| PlayerKey::new(&hex(&k[..k.find('"').unwrap()])).unwrap());
            let h = crate::frame::check(&frame, 65535).unwrap();
            assert_eq!(h.is_hmac(), key.is_some());
            assert!(verify(&frame, key.as_ref()));
            let mut bad = frame.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(!verify(&bad, key.as_ref()));
            checked += 1;
        }
        assert_eq!(checked, 7);
    }

    #[test]
    fn rfc4231_case_2_shape() {
        // RFC 4231 test case 1 (key 20 x 0x0b, "Hi There").
        let k = PlayerKey::new(&[0x0b; 20]).unwrap();
        assert_eq!(
            k.mac(b"Hi There").to_vec(),
            hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
    }

    #[test]
    fn key_lengths() {
        assert_eq!(
            PlayerKey::new(&[0; 15]).unwrap_err(),
            BadKeyLength { len: 15 }
        );
        assert!(PlayerKey::new(&[0; 16]).is_ok());
        assert!(PlayerKey::new(&[0; 64]).is_ok());
        assert!(PlayerKey::new(&[0; 65]).is_err());
        let dbg = format!("{:?}", PlayerKey::new(&[0xab; 32]).unwrap());
        assert!(!dbg.contains("171") && !dbg.contains("ab"), "{dbg}");
    }

    #[test]
    fn ct_eq_matches_eq() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        for i in 0..32 {
            b = a;
            b[i] ^= 0x80;
            assert!(!ct_eq(&a, &b));
        }
    }

    #[test]
    fn dropping_a_key_zeroises_the_key_and_its_keyed_state() {
        let mut k = PlayerKey::new(&[0xA5; 48]).unwrap();
        assert_eq!(k.mac(b"x"), PlayerKey::new(&[0xA5; 48]).unwrap().mac(b"x"));
        k.wipe();
        assert!(k.raw.iter().all(|&b| b == 0));
        let state: *const HmacSha256 = &raw const *k.keyed;
        // SAFETY: `wipe` wrote every byte of the state (padding included), so reading them
        // as bytes reads initialised memory within the value's size.
        let bytes = unsafe {
            std::slice::from_raw_parts(state.cast::<u8>(), std::mem::size_of::<HmacSha256>())
        };
        assert!(bytes.iter().all(|&b| b == 0), "keyed state not zeroised");
        assert!(format!("{k:?}").contains("len: 48"));
    }
}
