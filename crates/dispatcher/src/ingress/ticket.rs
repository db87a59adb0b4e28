//! Connection tickets: the control plane mints one (`issueTicket` in `src/ticket.ts`, any
//! Node process, no addon needed), a client presents it once when it connects to the data
//! plane (WebSocket `?ticket=`, TCP line `ticket <t>\n`, gRPC `authorization: Bearer <t>`),
//! and [`TicketVerifier::verify`] checks it before the connection is accepted. Every frame
//! of the connection is then stamped with the ticket's player.
//!
//! # Format (shared with `src/ticket.ts`, byte for byte)
//!
//! A ticket is the base64url encoding, WITHOUT padding (RFC 4648 §5: `A-Z a-z 0-9 - _`),
//! of `body || tag`:
//!
//! | bytes   | field       | encoding                                   |
//! |---------|-------------|--------------------------------------------|
//! | 0       | version     | u8, = [`TICKET_VERSION`] (1)               |
//! | 1..5    | room        | u32 little-endian                          |
//! | 5..9    | player      | u32 little-endian                          |
//! | 9..17   | expiresAt   | u64 little-endian, Unix time in ms         |
//! | 17..33  | nonce       | 16 random bytes                            |
//! | 33..65  | tag         | HMAC-SHA256(key, bytes 0..33)              |
//!
//! 65 bytes, so exactly [`TICKET_CHARS`] (87) characters; the key is 16..=64 bytes. The
//! decoder is strict: any other length, `=` padding, a character outside the alphabet
//! (`+`, `/`, non-ASCII...) or non-zero unused bits in the last character is
//! [`TicketError::Malformed`], so one ticket has exactly one spelling.
//!
//! # What `verify` checks, in order (first failure wins)
//! 1. decoding and version → [`TicketError::Malformed`];
//! 2. the tag, in constant time → [`TicketError::BadSignature`]. Nothing below runs for a
//!    ticket not signed with the key: without the key, nobody can fill the replay memory;
//! 3. `now >= expiresAt` → [`TicketError::Expired`]; `expiresAt > now + MAX_TTL_MS +
//!    ALLOWED_SKEW_MS` → [`TicketError::TooLong`] (the control plane never mints those);
//! 4. single use: each accepted nonce is remembered until its ticket expires; a nonce seen
//!    before → [`TicketError::Reused`]. At most `max_live` nonces are remembered: when that
//!    many live tickets are held, a new one is refused with [`TicketError::Busy`] rather
//!    than forgetting a live nonce (which would let its ticket be used again).
//!
//! The verifier's clock never goes backwards: `now` is the largest `now_ms` it has been
//! given, so a wall clock stepped back cannot revive a ticket whose nonce was already
//! forgotten.
//!
//! Tickets are bearer credentials and are never logged: no error, `Debug` or `Display`
//! here contains a ticket's text or the key.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{ct_eq, PlayerKey};
use crate::frame::TAG_BYTES;

/// The format version in byte 0.
pub const TICKET_VERSION: u8 = 1;
/// Bytes of a ticket's signed body (version, room, player, expiresAt, nonce).
pub const BODY_BYTES: usize = 33;
/// Bytes of a decoded ticket (body and tag).
pub const TICKET_BYTES: usize = BODY_BYTES + TAG_BYTES;
/// Characters of a ticket (base64url of [`TICKET_BYTES`] bytes, no padding).
pub const TICKET_CHARS: usize = 87;
/// Bytes of a ticket's nonce.
pub const NONCE_BYTES: usize = 16;
/// The longest lifetime the control plane mints (`MAX_TICKET_TTL_MS` in `src/ticket.ts`).
pub const MAX_TTL_MS: u64 = 300_000;
/// How far ahead of this process the control plane's clock may run.
pub const ALLOWED_SKEW_MS: u64 = 5_000;

const _: () = assert!(TICKET_CHARS == (TICKET_BYTES * 8).div_ceil(6));

/// A key outside 16..=64 bytes (only its length is kept).
pub type KeyError = crate::auth::BadKeyLength;

/// What a valid ticket says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub room: u32,
    pub player: u32,
    /// Unix time in ms after which the ticket is refused.
    pub expires_at_ms: u64,
}

/// Why a ticket was refused. Carries no part of the ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// Not 87 base64url characters, or an unknown version.
    Malformed,
    /// The tag does not match: not minted with this key, or altered.
    BadSignature,
    /// Its expiry has passed.
    Expired,
    /// Its expiry is further ahead than [`MAX_TTL_MS`] + [`ALLOWED_SKEW_MS`].
    TooLong,
    /// Its nonce was accepted before: a ticket is good for one connection.
    Reused,
    /// The replay memory is full of live tickets (`max_live`); try again later.
    Busy,
}

impl TicketError {
    /// A stable `snake_case` reason, for close frames, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "ticket_malformed",
            Self::BadSignature => "ticket_forged",
            Self::Expired => "ticket_expired",
            Self::TooLong => "ticket_too_long",
            Self::Reused => "ticket_reused",
            Self::Busy => "ticket_busy",
        }
    }
}

impl std::fmt::Display for TicketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TicketError {}

/// Verifies tickets and remembers the nonces of the accepted ones until they expire.
///
/// The key is kept only as HMAC's two keyed midstates in an [`auth::PlayerKey`]
/// (`crate::auth`), wiped when the verifier is dropped. Memory: at most `max_live`
/// remembered nonces (a map entry and a heap entry each, ~60 bytes); expired ones are
/// forgotten, oldest expiry first, in amortised O(log n) each.
///
/// [`auth::PlayerKey`]: crate::auth::PlayerKey
pub struct TicketVerifier {
    key: Box<PlayerKey>,
    max_live: usize,
    /// The nonces of accepted tickets, shared with every other verifier made with the same
    /// memory ([`TicketVerifier::with_memory`]): a dispatcher's listens, so that a ticket
    /// spent on one server is not good again after `close()` and a new `listen()`.
    memory: Arc<Mutex<Nonces>>,
}

/// The single-use memory of tickets: nonces of accepted tickets until they expire. Nonces
/// are 16 random bytes, so verifiers with different keys can share one.
#[derive(Debug, Default)]
pub struct Nonces {
    /// Accepted nonces still live, with their expiry.
    seen: HashMap<[u8; NONCE_BYTES], u64>,
    /// The same nonces, soonest expiry on top.
    by_expiry: BinaryHeap<Reverse<(u64, [u8; NONCE_BYTES])>>,
    /// The largest `now_ms` seen (the memory's clock never goes backwards).
    now_ms: u64,
}

impl Nonces {
    /// Forgets the nonces of tickets expired at `now` (`now >= expiry`: `verify` refuses
    /// them as `Expired` before it looks at the nonce).
    fn evict(&mut self, now: u64) {
        while let Some(&Reverse((expires, nonce))) = self.by_expiry.peek() {
            if expires > now {
                break;
            }
            self.by_expiry.pop();
            self.seen.remove(&nonce);
        }
    }
}

impl std::fmt::Debug for TicketVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor the nonces (they are part of the tickets' text).
        f.debug_struct("TicketVerifier")
            .field("key", &self.key)
            .field("max_live", &self.max_live)
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

impl TicketVerifier {
    /// A verifier for tickets signed with `key` (16..=64 bytes), remembering at most
    /// `max_live` accepted tickets until they expire (0 refuses every ticket: `Busy`).
    ///
    /// # Errors
    /// [`KeyError`] when `key` is outside 16..=64 bytes.
    pub fn new(key: &[u8], max_live: usize) -> Result<Self, KeyError> {
        Self::with_memory(key, max_live, Arc::default())
    }

    /// [`TicketVerifier::new`], remembering accepted tickets in `memory`, which other
    /// verifiers may share.
    ///
    /// # Errors
    /// [`KeyError`] when `key` is outside 16..=64 bytes.
    pub fn with_memory(
        key: &[u8],
        max_live: usize,
        memory: Arc<Mutex<Nonces>>,
    ) -> Result<Self, KeyError> {
        Ok(Self {
            key: PlayerKey::new(key)?,
            max_live,
            memory,
        })
    }

    fn memory(&self) -> MutexGuard<'_, Nonces> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nonces remembered right now (accepted tickets not yet known to have expired), in
    /// the memory this verifier shares.
    pub fn live(&self) -> usize {
        self.memory().seen.len()
    }

    /// The most nonces this verifier remembers.
    pub fn max_live(&self) -> usize {
        self.max_live
    }

    /// Checks `ticket` (the 87 characters, as bytes) at `now_ms` (Unix time in ms, e.g.
    /// [`now_unix_ms`]) and, if it is valid and unused, remembers its nonce and returns its
    /// claims. See the module docs for the order of the checks.
    pub fn verify(&self, ticket: &[u8], now_ms: u64) -> Result<Claims, TicketError> {
        let raw = decode(ticket).ok_or(TicketError::Malformed)?;
        if raw[0] != TICKET_VERSION {
            return Err(TicketError::Malformed);
        }
        let (body, tag) = raw.split_at(BODY_BYTES);
        let tag: &[u8; TAG_BYTES] = tag.try_into().map_err(|_| TicketError::Malformed)?;
        if !ct_eq(&self.key.mac(body), tag) {
            return Err(TicketError::BadSignature);
        }
        let claims = Claims {
            room: u32::from_le_bytes([body[1], body[2], body[3], body[4]]),
            player: u32::from_le_bytes([body[5], body[6], body[7], body[8]]),
            expires_at_ms: u64::from_le_bytes([
                body[9], body[10], body[11], body[12], body[13], body[14], body[15], body[16],
            ]),
        };
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&body[17..BODY_BYTES]);

        let mut m = self.memory();
        m.now_ms = m.now_ms.max(now_ms);
        let now = m.now_ms;
        if now >= claims.expires_at_ms {
            return Err(TicketError::Expired);
        }
        if claims.expires_at_ms > now.saturating_add(MAX_TTL_MS + ALLOWED_SKEW_MS) {
            return Err(TicketError::TooLong);
        }
        m.evict(now);
        if m.seen.contains_key(&nonce) {
            return Err(TicketError::Reused);
        }
        if m.seen.len() >= self.max_live {
            return Err(TicketError::Busy);
        }
        m.seen.insert(nonce, claims.expires_at_ms);
        m.by_expiry.push(Reverse((claims.expires_at_ms, nonce)));
        Ok(claims)
    }

    /// [`verify`](Self::verify) for a ticket held as text.
    pub fn verify_str(&self, ticket: &str, now_ms: u64) -> Result<Claims, TicketError> {
        self.verify(ticket.as_bytes(), now_ms)
    }
}

/// The current Unix time in ms (0 before 1970, saturating far in the future).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The value of the `ticket` parameter in a request target's query, e.g. `XYZ` in
/// `/path?a=1&ticket=XYZ&b=2` (up to the next `&` or the end; a ticket is base64url, so it
/// needs no percent-decoding). `None` when there is no query, no `ticket` parameter, an
/// empty one, or more than one (two values could be read differently by a proxy in front).
pub fn ticket_from_query(target: &str) -> Option<&str> {
    let (_, query) = target.split_once('?')?;
    let mut found = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("ticket=") {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found.filter(|v| !v.is_empty())
}

/// The 6-bit value of a base64url character.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Strict base64url (no padding) of exactly [`TICKET_CHARS`] characters into
/// [`TICKET_BYTES`] bytes; `None` for any other length, any character outside the
/// alphabet, or non-zero unused low bits in the last character.
fn decode(text: &[u8]) -> Option<[u8; TICKET_BYTES]> {
    if text.len() != TICKET_CHARS {
        return None;
    }
    let mut out = [0u8; TICKET_BYTES];
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut at = 0;
    for &c in text {
        acc = (acc << 6) | u32::from(sextet(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out[at] = (acc >> bits) as u8;
            at += 1;
            acc &= (1 << bits) - 1;
        }
    }
    // 87 * 6 = 522 = 65 * 8 + 2: two unused bits, which must be zero.
    (at == TICKET_BYTES && acc == 0).then_some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shared fixed vector (also in `__test__/ticket.test.ts`), computed independently
    /// with Python's `hmac`/`hashlib`/`base64`: key = bytes 0x00..=0x1f, room 7, player 42,
    /// expiresAt `1_700_000_000_000`, nonce = bytes 0xa0..=0xaf.
    const VECTOR: &str =
        "AQcAAAAqAAAAAGjlz4sBAACgoaKjpKWmp6ipqqusra6vzCvtv8WEFqg1pk0CMpyXJa7k6VzCbUVWOv45H8YQW4U";
    const VECTOR_EXPIRES: u64 = 1_700_000_000_000;

    fn vector_key() -> Vec<u8> {
        (0u8..32).collect()
    }

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    /// Test-side encoder (the inverse of `decode`).
    fn encode(raw: &[u8; TICKET_BYTES]) -> String {
        let mut out = String::with_capacity(TICKET_CHARS);
        for chunk in raw.chunks(3) {
            let mut n = [0u8; 3];
            n[..chunk.len()].copy_from_slice(chunk);
            let v = (u32::from(n[0]) << 16) | (u32::from(n[1]) << 8) | u32::from(n[2]);
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    /// Mints a ticket as `src/ticket.ts` does.
    pub(crate) fn mint(
        key: &[u8],
        room: u32,
        player: u32,
        expires: u64,
        nonce: [u8; 16],
    ) -> String {
        let mut raw = [0u8; TICKET_BYTES];
        raw[0] = TICKET_VERSION;
        raw[1..5].copy_from_slice(&room.to_le_bytes());
        raw[5..9].copy_from_slice(&player.to_le_bytes());
        raw[9..17].copy_from_slice(&expires.to_le_bytes());
        raw[17..33].copy_from_slice(&nonce);
        let tag = PlayerKey::new(key).unwrap().mac(&raw[..BODY_BYTES]);
        raw[BODY_BYTES..].copy_from_slice(&tag);
        encode(&raw)
    }

    fn nonce_of(i: u64) -> [u8; 16] {
        let mut n = [0u8; 16];
        n[..8].copy_from_slice(&i.to_le_bytes());
        n[8] = 0x5a;
        n
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn fixed_vector_verifies_and_matches_the_test_encoder() {
        let key = vector_key();
        let nonce: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
        assert_eq!(mint(&key, 7, 42, VECTOR_EXPIRES, nonce), VECTOR);
        assert_eq!(VECTOR.len(), TICKET_CHARS);
        let v = TicketVerifier::new(&key, 16).unwrap();
        let claims = v.verify_str(VECTOR, VECTOR_EXPIRES - 60_000).unwrap();
        assert_eq!(
            claims,
            Claims {
                room: 7,
                player: 42,
                expires_at_ms: VECTOR_EXPIRES
            }
        );
        assert_eq!(v.live(), 1);
    }

    #[test]
    fn decode_roundtrips_every_byte_value() {
        let mut raw = [0u8; TICKET_BYTES];
        for seed in 0u8..=255 {
            for (i, b) in raw.iter_mut().enumerate() {
                *b = seed
                    .wrapping_mul(31)
                    .wrapping_add((i as u8).wrapping_mul(7));
            }
            assert_eq!(decode(encode(&raw).as_bytes()), Some(raw));
        }
    }

    #[test]
    fn every_bit_flip_of_the_bytes_is_refused() {
        let text = VECTOR;
        let raw = decode(text.as_bytes()).unwrap();
        let now = VECTOR_EXPIRES - 1;
        let v = TicketVerifier::new(&vector_key(), 1024).unwrap();
        for byte in 0..TICKET_BYTES {
            for bit in 0..8 {
                let mut bad = raw;
                bad[byte] ^= 1 << bit;
                let got = v.verify_str(&encode(&bad), now);
                let want = if byte == 0 {
                    TicketError::Malformed
                } else {
                    TicketError::BadSignature
                };
                assert_eq!(got, Err(want), "byte {byte} bit {bit}");
            }
        }
        assert_eq!(v.live(), 0, "no forged ticket reaches the replay memory");
    }

    #[test]
    fn every_bit_flip_of_the_text_is_refused() {
        let v = TicketVerifier::new(&vector_key(), 1024).unwrap();
        for at in 0..TICKET_CHARS {
            for bit in 0..8 {
                let mut bad = VECTOR.as_bytes().to_vec();
                bad[at] ^= 1 << bit;
                let got = v.verify(&bad, VECTOR_EXPIRES - 1);
                assert!(
                    matches!(got, Err(TicketError::Malformed | TicketError::BadSignature)),
                    "char {at} bit {bit}: {got:?}"
                );
            }
        }
        assert_eq!(v.live(), 0);
    }

    #[test]
    fn another_key_is_a_bad_signature() {
        let mut other = vector_key();
        other[31] ^= 1;
        let v = TicketVerifier::new(&other, 16).unwrap();
        assert_eq!(
            v.verify_str(VECTOR, VECTOR_EXPIRES - 1),
            Err(TicketError::BadSignature)
        );
        // A shorter key that is a prefix of the real one.
        let v = TicketVerifier::new(&vector_key()[..16], 16).unwrap();
        assert_eq!(
            v.verify_str(VECTOR, VECTOR_EXPIRES - 1),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn key_lengths() {
        for len in [0, 1, 15, 65, 100] {
            let err = TicketVerifier::new(&vec![7u8; len], 1).unwrap_err();
            assert_eq!(err.len, len);
        }
        for len in [16, 32, 64] {
            assert!(TicketVerifier::new(&vec![7u8; len], 1).is_ok());
        }
    }

    #[test]
    fn expiry_bounds() {
        let v = TicketVerifier::new(&vector_key(), 16).unwrap();
        assert_eq!(
            v.verify_str(VECTOR, VECTOR_EXPIRES),
            Err(TicketError::Expired)
        );
        assert_eq!(
            v.verify_str(VECTOR, VECTOR_EXPIRES + 1),
            Err(TicketError::Expired)
        );
        let v = TicketVerifier::new(&vector_key(), 16).unwrap();
        let limit = VECTOR_EXPIRES - MAX_TTL_MS - ALLOWED_SKEW_MS;
        assert_eq!(v.verify_str(VECTOR, limit - 1), Err(TicketError::TooLong));
        assert_eq!(v.live(), 0);
        assert!(v.verify_str(VECTOR, limit).is_ok());
        // The far future, and now near u64::MAX, do not overflow.
        let far = mint(KEY, 1, 1, u64::MAX, nonce_of(1));
        let v = TicketVerifier::new(KEY, 16).unwrap();
        assert_eq!(v.verify_str(&far, 0), Err(TicketError::TooLong));
        assert!(v.verify_str(&far, u64::MAX - 1).is_ok());
        assert_eq!(v.verify_str(&far, u64::MAX), Err(TicketError::Expired));
    }

    #[test]
    fn a_ticket_is_good_once() {
        let v = TicketVerifier::new(&vector_key(), 16).unwrap();
        let now = VECTOR_EXPIRES - 10_000;
        assert!(v.verify_str(VECTOR, now).is_ok());
        assert_eq!(v.verify_str(VECTOR, now), Err(TicketError::Reused));
        assert_eq!(v.verify_str(VECTOR, now + 9_999), Err(TicketError::Reused));
        assert_eq!(
            v.verify_str(VECTOR, now + 10_000),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn the_clock_never_goes_backwards() {
        let v = TicketVerifier::new(KEY, 16).unwrap();
        let t = mint(KEY, 1, 2, 10_000, nonce_of(1));
        assert!(v.verify_str(&t, 5_000).is_ok());
        // Another ticket at a later time forgets the first one's nonce...
        let later = mint(KEY, 1, 2, 30_000, nonce_of(2));
        assert!(v.verify_str(&later, 20_000).is_ok());
        assert_eq!(v.live(), 1);
        // ...and a clock stepped back does not revive it.
        assert_eq!(v.verify_str(&t, 5_000), Err(TicketError::Expired));
    }

    #[test]
    fn busy_when_full_of_live_tickets_then_accepts_after_they_expire() {
        let v = TicketVerifier::new(KEY, 4).unwrap();
        for i in 0..4 {
            let t = mint(KEY, 1, i as u32, 1_000 + i, nonce_of(i));
            assert!(v.verify_str(&t, 0).is_ok());
        }
        let fifth = mint(KEY, 1, 9, 60_000, nonce_of(100));
        assert_eq!(v.verify_str(&fifth, 0), Err(TicketError::Busy));
        assert_eq!(v.verify_str(&fifth, 999), Err(TicketError::Busy));
        // The first (expiry 1000) expires: one slot frees.
        assert!(v.verify_str(&fifth, 1_000).is_ok());
        let sixth = mint(KEY, 1, 9, 60_000, nonce_of(101));
        assert_eq!(v.verify_str(&sixth, 1_000), Err(TicketError::Busy));
        assert!(v.verify_str(&sixth, 1_003).is_ok());
        // The refused ticket was not consumed: the live ones are still refused as reused.
        assert_eq!(v.verify_str(&fifth, 1_003), Err(TicketError::Reused));
        assert_eq!(v.live(), 2);
    }

    /// A dispatcher's listens share one memory: a ticket spent on one is spent on the
    /// next (a new `listen()` after `close()`), whatever key each verifies with.
    #[test]
    fn verifiers_sharing_a_memory_refuse_each_others_spent_tickets() {
        const OTHER: &[u8] = b"another key, thirty-two bytes ..";
        let memory = Arc::new(Mutex::new(Nonces::default()));
        let first = TicketVerifier::with_memory(KEY, 8, Arc::clone(&memory)).unwrap();
        let t = mint(KEY, 1, 1, 1_000, nonce_of(1));
        assert!(first.verify_str(&t, 0).is_ok());
        drop(first);
        let second = TicketVerifier::with_memory(KEY, 8, Arc::clone(&memory)).unwrap();
        assert_eq!(second.verify_str(&t, 1), Err(TicketError::Reused));
        let other = TicketVerifier::with_memory(OTHER, 8, Arc::clone(&memory)).unwrap();
        assert!(other
            .verify_str(&mint(OTHER, 1, 1, 1_000, nonce_of(2)), 2)
            .is_ok());
        assert_eq!(second.live(), 2);
        // A verifier of its own does not know them.
        let alone = TicketVerifier::new(KEY, 8).unwrap();
        assert!(alone.verify_str(&t, 3).is_ok());
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let v = TicketVerifier::new(KEY, 0).unwrap();
        let t = mint(KEY, 1, 1, 1_000, nonce_of(1));
        assert_eq!(v.verify_str(&t, 0), Err(TicketError::Busy));
    }

    #[test]
    fn memory_stays_bounded_over_many_short_tickets() {
        const MAX: usize = 1_000;
        let v = TicketVerifier::new(KEY, MAX).unwrap();
        let key = PlayerKey::new(KEY).unwrap();
        let mut busy = 0;
        for i in 0..100_000u64 {
            // 10 tickets per ms, each living 50..=199 ms (expiries out of order).
            let now = 1_000_000 + i / 10;
            let expires = now + 50 + (i * 37) % 150;
            let mut raw = [0u8; TICKET_BYTES];
            raw[0] = TICKET_VERSION;
            raw[1..5].copy_from_slice(&1u32.to_le_bytes());
            raw[9..17].copy_from_slice(&expires.to_le_bytes());
            raw[17..33].copy_from_slice(&nonce_of(i));
            let tag = key.mac(&raw[..BODY_BYTES]);
            raw[BODY_BYTES..].copy_from_slice(&tag);
            match v.verify(encode(&raw).as_bytes(), now) {
                Ok(_) => {}
                Err(TicketError::Busy) => busy += 1,
                Err(e) => panic!("ticket {i}: {e}"),
            }
            assert!(v.live() <= MAX);
            assert!(v.memory().by_expiry.len() <= MAX);
        }
        // ~1250 would be live at a time at this rate: some are refused, most accepted.
        assert!(busy > 0 && busy < 50_000, "busy {busy}");
    }

    #[test]
    fn malformed_inputs() {
        let v = TicketVerifier::new(&vector_key(), 16).unwrap();
        let now = VECTOR_EXPIRES - 1;
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            VECTOR.as_bytes()[..86].to_vec(),
            [VECTOR.as_bytes(), b"A"].concat(),
            [VECTOR.as_bytes(), b"="].concat(),
            [&VECTOR.as_bytes()[..86], b"="].concat(),
            [&VECTOR.as_bytes()[..85], b"=="].concat(),
            [&VECTOR.as_bytes()[..86], b"+"].concat(),
            [&VECTOR.as_bytes()[..86], b"/"].concat(),
            [b"+", &VECTOR.as_bytes()[1..]].concat(),
            [b"/", &VECTOR.as_bytes()[1..]].concat(),
            [b" ", &VECTOR.as_bytes()[1..]].concat(),
            [&VECTOR.as_bytes()[..86], "é".as_bytes()].concat(),
            [&VECTOR.as_bytes()[..85], "é".as_bytes()].concat(),
            vec![0xff; 87],
            vec![b'A'; 87],
        ];
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(v.verify(c, now), Err(TicketError::Malformed), "case {i}");
        }
        // Non-zero unused bits in the last character: same bytes, another spelling.
        let last = VECTOR.as_bytes()[86];
        let idx = ALPHABET.iter().position(|&c| c == last).unwrap();
        assert_eq!(idx & 3, 0);
        let mut alias = VECTOR.as_bytes().to_vec();
        alias[86] = ALPHABET[idx | 1];
        assert_eq!(v.verify(&alias, now), Err(TicketError::Malformed));
        // A well-formed ticket of another version (correctly signed) is malformed too.
        let mut raw = decode(VECTOR.as_bytes()).unwrap();
        raw[0] = 2;
        let tag = PlayerKey::new(&vector_key())
            .unwrap()
            .mac(&raw[..BODY_BYTES]);
        raw[BODY_BYTES..].copy_from_slice(&tag);
        assert_eq!(
            v.verify_str(&encode(&raw), now),
            Err(TicketError::Malformed)
        );
        assert_eq!(v.live(), 0);
    }

    #[test]
    fn reasons_are_stable() {
        let all = [
            (TicketError::Malformed, "ticket_malformed"),
            (TicketError::BadSignature, "ticket_forged"),
            (TicketError::Expired, "ticket_expired"),
            (TicketError::TooLong, "ticket_too_long"),
            (TicketError::Reused, "ticket_reused"),
            (TicketError::Busy, "ticket_busy"),
        ];
        for (e, s) in all {
            assert_eq!(e.as_str(), s);
            assert_eq!(e.to_string(), s);
        }
    }

    #[test]
    fn debug_shows_no_key_or_ticket() {
        let key = vector_key();
        let v = TicketVerifier::new(&key, 16).unwrap();
        v.verify_str(VECTOR, VECTOR_EXPIRES - 1).unwrap();
        let dbg = format!(
            "{v:?} {:?} {:#?}",
            v.verify_str(VECTOR, VECTOR_EXPIRES - 1),
            v
        );
        assert!(dbg.contains("live: 1"), "{dbg}");
        assert!(!dbg.contains(&VECTOR[..8]), "{dbg}");
        // No run of key or nonce bytes, in decimal or hex.
        for needle in ["0, 1, 2", "160, 161", "a0a1", "000102", "[0"] {
            assert!(!dbg.contains(needle), "{needle} in {dbg}");
        }
        for e in [
            TicketError::Malformed,
            TicketError::BadSignature,
            TicketError::Busy,
        ] {
            assert!(!format!("{e:?} {e}").contains(&VECTOR[..8]));
        }
    }

    #[test]
    fn query_parameter() {
        let t = "AQcA-_x";
        assert_eq!(ticket_from_query(&format!("/ws?ticket={t}")), Some(t));
        assert_eq!(
            ticket_from_query(&format!("/path?a=1&ticket={t}&b=2")),
            Some(t)
        );
        assert_eq!(ticket_from_query(&format!("/?b=2&ticket={t}")), Some(t));
        assert_eq!(ticket_from_query("/ws"), None);
        assert_eq!(ticket_from_query("/ws?"), None);
        assert_eq!(ticket_from_query("/ws?ticket="), None);
        assert_eq!(ticket_from_query("/ws?ticket=&a=1"), None);
        assert_eq!(ticket_from_query("/ws?ticket"), None);
        assert_eq!(ticket_from_query("/ws?xticket=abc"), None);
        assert_eq!(ticket_from_query("/ticket=abc"), None);
        assert_eq!(ticket_from_query("/ws?ticket=a&ticket=b"), None);
    }

    #[test]
    fn now_is_plausible() {
        // After 2020-01-01 and before 2200.
        let now = now_unix_ms();
        assert!(now > 1_577_836_800_000 && now < 7_258_118_400_000);
    }
}
