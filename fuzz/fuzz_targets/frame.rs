//! Frame parser: `frame::check`, `frame::read_header`, `frame::split_tag`, `frame::Reader`,
//! `frame::encode_unsigned` and the tags of `auth`.
//!
//! Properties (each input is used twice: as raw bytes, and as the recipe of a frame):
//! - `check` and `read_header` give exactly the result of an independent reference parser
//!   (same variant, same fields: errors are consistent and in the documented order);
//! - a frame that parses has length `56 + len`, `len <= maxPayload`, seq != 0, and
//!   round-trips: `encode_unsigned(header, payload)` rebuilds its first `24 + len` bytes
//!   and `auth::sign` rebuilds a tag that `auth::verify` accepts; `verify` on the original
//!   bytes agrees with an independent SHA-256 / RFC 2104 HMAC computation;
//! - a signed frame with any byte changed is refused by `check` or by `verify`;
//! - `read_header` reads only the first 24 bytes; `split_tag` splits 32 bytes off the end;
//! - `Reader` behaves like an index into the slice and never moves on a short read;
//! - `PlayerKey::new` accepts exactly 16..=64-byte keys and its MAC is RFC 2104 HMAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use move_dispatcher::auth::{self, PlayerKey};
use move_dispatcher::frame::{self, FrameError, Header, Reader};
use move_dispatcher_fuzz::{ref_check, ref_fields, ref_header, ref_hmac, ref_sha256, Input};

const MAXES: [usize; 5] = [0, 1, 64, 1024, 65535];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.u8();
    let max_payload = match control & 7 {
        0..=4 => MAXES[usize::from(control & 7)],
        _ => usize::from(input.u16()),
    };
    let key_len = usize::from(input.u8() % 72);
    let key_bytes: Vec<u8> = (0..key_len).map(|i| input.u8() ^ i as u8).collect();
    let key = check_key(&key_bytes);

    // 1. The rest of the input, after the control bytes, as a frame.
    let rest = input.clone().rest();
    raw(rest, max_payload, key.as_deref(), &key_bytes);

    // 2. The input as a recipe: header fields, payload, then mutations.
    let h = Header {
        flags: input.u8() & 1,
        room: input.u32(),
        player: input.u32(),
        seq: input.u32(),
        tick: input.u32(),
        kind: input.u16(),
        len: input.u16(), // ignored by encode_unsigned: the payload decides
    };
    // Mostly short payloads (hashing dominates the cost of an execution), sometimes long.
    let payload_len = if control & 0x80 != 0 {
        input.below(1100)
    } else {
        input.below(64)
    };
    let fill = input.u8();
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| fill.wrapping_add(i as u8).wrapping_mul(31))
        .collect();
    constructed(
        h,
        &payload,
        max_payload,
        key.as_deref(),
        &key_bytes,
        &mut input,
    );

    // 3. Reader against an index.
    reader(rest, &mut input);
});

thread_local! {
    /// The last key checked against the reference (most inputs repeat their key).
    static LAST_KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Key rules: 16..=64 bytes, and the MAC is RFC 2104 HMAC-SHA256.
fn check_key(key: &[u8]) -> Option<Box<PlayerKey>> {
    match PlayerKey::new(key) {
        Ok(k) if LAST_KEY.with(|l| *l.borrow() == key) => Some(k),
        Ok(k) => {
            LAST_KEY.with(|l| *l.borrow_mut() = key.to_vec());
            assert!(
                (16..=64).contains(&key.len()),
                "accepted a {}-byte key",
                key.len()
            );
            assert_eq!(k.mac(b"probe"), ref_hmac(key, b"probe"));
            // Debug never shows key material.
            let dbg = format!("{k:?}");
            let hex: String = key[..4].iter().map(|b| format!("{b:02x}")).collect();
            assert!(!dbg.contains('[') && !dbg.contains(&hex), "{dbg}");
            Some(k)
        }
        Err(e) => {
            assert!(
                !(16..=64).contains(&key.len()),
                "refused a {}-byte key",
                key.len()
            );
            assert_eq!(e.len, key.len());
            None
        }
    }
}

fn raw(b: &[u8], max_payload: usize, key: Option<&PlayerKey>, key_bytes: &[u8]) {
    // read_header: reference result, and it looks at the first 24 bytes only.
    let header = frame::read_header(b);
    assert_eq!(header, ref_header(b));
    if b.len() >= 24 {
        assert_eq!(frame::read_header(&b[..24]), header);
        if let Ok(h) = header {
            assert_eq!(h, ref_fields(b));
            assert_eq!(h.frame_len(), 56 + usize::from(h.len));
            assert_eq!(h.is_hmac(), b[3] == 1);
        }
    }

    // split_tag: the last 32 bytes.
    match frame::split_tag(b) {
        Some((signed, tag)) => {
            assert!(b.len() >= 32);
            assert_eq!(signed.len() + 32, b.len());
            assert_eq!(signed, &b[..b.len() - 32]);
            assert_eq!(&tag[..], &b[b.len() - 32..]);
        }
        None => assert!(b.len() < 32),
    }

    // check: reference result for this limit and the extremes.
    for max in [max_payload, 0, 65535] {
        let got = frame::check(b, max);
        assert_eq!(got, ref_check(b, max), "check(len {}, max {max})", b.len());
        if let Err(e) = got {
            match e {
                FrameError::Short { len } => assert!(len == b.len() && len < 24),
                FrameError::BadHeader => assert!(header == Err(FrameError::BadHeader)),
                FrameError::Oversize { len, max: m } => assert!(len > m && m == max),
                FrameError::LengthMismatch { expected, actual } => {
                    assert!(expected != actual && actual == b.len());
                }
                FrameError::ZeroSeq => assert_eq!(ref_fields(b).seq, 0),
                _ => unreachable!("a FrameError variant the fuzz target does not know"),
            }
        }
    }

    let Ok(h) = frame::check(b, max_payload) else {
        // Not a frame: verify still answers (false or true), never panics.
        let _ = auth::verify(b, key);
        return;
    };
    // Lengths add up.
    let len = usize::from(h.len);
    assert!(len <= max_payload);
    assert_eq!(b.len(), frame::FRAME_OVERHEAD + len);
    assert_ne!(h.seq, 0);
    assert_eq!(h.flags & !frame::FLAG_HMAC, 0);

    // Round trip through encode + sign.
    let payload = &b[24..24 + len];
    let mut enc = frame::encode_unsigned(&h, payload).expect("a parsed payload fits u16");
    assert_eq!(enc.len(), b.len());
    assert_eq!(&enc[..24 + len], &b[..24 + len]);
    assert!(enc[24 + len..].iter().all(|&x| x == 0), "tag not zeroed");
    assert_eq!(frame::check(&enc, max_payload), Ok(h));

    let signed = &b[..24 + len];
    let tag = &b[24 + len..];
    // SHA-256 mode.
    auth::sign(&mut enc, None);
    assert_eq!(&enc[24 + len..], &ref_sha256(signed)[..]);
    assert!(auth::verify(&enc, None));
    assert_eq!(auth::verify(b, None), tag == ref_sha256(signed));
    // HMAC mode.
    if let Some(k) = key {
        auth::sign(&mut enc, Some(k));
        let expect = ref_hmac(key_bytes, signed);
        assert_eq!(&enc[24 + len..], &expect[..]);
        assert!(auth::verify(&enc, Some(k)));
        assert!(!auth::verify(&enc, None), "an HMAC tag passed as SHA-256");
        assert_eq!(auth::verify(b, Some(k)), tag == expect);
    }
    let mut t = [0u8; 32];
    t.copy_from_slice(tag);
    let mut u = t;
    assert!(auth::ct_eq(&t, &u));
    u[usize::from(b[0]) % 32] ^= 1 | b[1];
    assert!(!auth::ct_eq(&t, &u));
}

fn constructed(
    h: Header,
    payload: &[u8],
    max_payload: usize,
    key: Option<&PlayerKey>,
    key_bytes: &[u8],
    input: &mut Input<'_>,
) {
    let mut f = frame::encode_unsigned(&h, payload).expect("payload < 65536");
    let len = payload.len();
    assert_eq!(f.len(), 56 + len);
    let key = if h.flags & 1 == 1 { key } else { None };
    let hmac = key.is_some();
    let mut h = h;
    h.len = len as u16;
    h.flags = u8::from(hmac);
    f[3] = h.flags;
    auth::sign(&mut f, key);
    let expect = if len > max_payload {
        Err(FrameError::Oversize {
            len,
            max: max_payload,
        })
    } else if h.seq == 0 {
        Err(FrameError::ZeroSeq)
    } else {
        Ok(h)
    };
    assert_eq!(frame::check(&f, max_payload), expect);
    assert_eq!(frame::check(&f, 65535).is_ok(), h.seq != 0);
    assert!(auth::verify(&f, key));

    // Mutations: any change to a signed frame is refused by check or verify.
    let original = f.clone();
    let n = input.below(4);
    for _ in 0..n {
        match input.u8() % 4 {
            0 | 1 => {
                let at = input.below(f.len().max(1));
                if let Some(x) = f.get_mut(at) {
                    *x ^= input.u8() | 1;
                }
            }
            2 => {
                let cut = input.below(f.len() + 1);
                f.truncate(cut);
            }
            _ => {
                let n = input.below(8) + 1;
                let extra = input.take(n).to_vec();
                f.extend_from_slice(&extra);
            }
        }
    }
    if f != original {
        let accepted = frame::check(&f, 65535).is_ok() && auth::verify(&f, key);
        assert!(!accepted, "a modified frame passed check and verify");
        raw(&f, max_payload, key, key_bytes);
    }
}

fn reader(b: &[u8], input: &mut Input<'_>) {
    let mut r = Reader::new(b);
    let mut pos = 0usize;
    for _ in 0..input.below(16) {
        let left = b.len() - pos;
        assert_eq!(r.remaining(), left);
        match input.u8() % 4 {
            0 => {
                let n = input.below(40);
                match r.take(n) {
                    Some(s) => {
                        assert!(n <= left);
                        assert_eq!(s, &b[pos..pos + n]);
                        pos += n;
                    }
                    None => assert!(n > left),
                }
            }
            1 => match r.u16() {
                Some(v) => {
                    assert!(left >= 2);
                    assert_eq!(v, u16::from_le_bytes([b[pos], b[pos + 1]]));
                    pos += 2;
                }
                None => assert!(left < 2),
            },
            2 => match r.u32() {
                Some(v) => {
                    assert!(left >= 4);
                    assert_eq!(v.to_le_bytes(), b[pos..pos + 4]);
                    pos += 4;
                }
                None => assert!(left < 4),
            },
            _ => match r.array::<3>() {
                Some(a) => {
                    assert!(left >= 3);
                    assert_eq!(a, b[pos..pos + 3]);
                    pos += 3;
                }
                None => assert!(left < 3),
            },
        }
    }
    assert_eq!(r.remaining(), b.len() - pos);
}
