//! Native ingress parsers on network bytes: the WebSocket decoder (`ingress::ws`), the
//! upgrade request parser and the ticket verifier (`ingress::ticket`).
//!
//! Properties:
//! - no input makes any of them panic, loop or grow memory beyond its limit;
//! - the decoder is split-invariant: the same bytes fed whole, or cut at the points the
//!   input chooses (one byte at a time included), give the same events in the same order
//!   and the same final outcome (events up to an error are delivered either way);
//! - a message event never exceeds `max_message`, and the decoder's own buffer never
//!   holds more than `max_message`, plus a control frame interleaved in a fragmented
//!   message (125 bytes), plus one frame header;
//! - `parse_request` answers the same for the request cut anywhere before its end
//!   (incomplete: `None`, or the same error), and a parsed request consumes at most the
//!   bytes given;
//! - a ticket verifier refuses any input that is not a ticket signed with its key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use move_dispatcher::ingress::ticket::TicketVerifier;
use move_dispatcher::ingress::ws::{self, Decoder, Event};
use move_dispatcher_fuzz::Input;

/// One event as plain data (the slices live only inside the callback).
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

fn run(bytes: &[u8], cuts: &[usize], max_message: usize, text: bool) -> (Vec<Seen>, Option<u16>) {
    let mut d = Decoder::new(max_message, text);
    let mut seen = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < bytes.len()).collect();
    ends.sort_unstable();
    ends.dedup();
    ends.push(bytes.len());
    for end in ends {
        if end <= at {
            continue;
        }
        let mut chunk = bytes[at..end].to_vec();
        let r = d.feed(&mut chunk, &mut |e| {
            let len = match &e {
                Event::Binary(p) | Event::Text(p) => p.len(),
                _ => 0,
            };
            assert!(len <= max_message, "a message over the limit was delivered");
            seen.push(match e {
                Event::Binary(p) => Seen::Binary(p.to_vec()),
                Event::Text(p) => Seen::Text(p.to_vec()),
                Event::Ping(p) => Seen::Ping(p.to_vec()),
                Event::Pong(p) => Seen::Pong(p.to_vec()),
                Event::Close { code, reason } => Seen::Close(code, reason.to_vec()),
            });
        });
        assert!(
            d.buffered() <= max_message + ws::MAX_CONTROL_PAYLOAD + 14,
            "the decoder buffered more than a message, a control frame and a header"
        );
        match r {
            Ok(_) if d.is_ended() => return (seen, Some(0)),
            Ok(used) => assert!(used <= end - at),
            Err(close) => return (seen, Some(close.code)),
        }
        at = end;
    }
    (seen, None)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let control = input.u8();
    let max_message = [0_usize, 1, 125, 126, 1024, 65_536][usize::from(control % 6)];
    let text = control & 0x80 != 0;
    let ncuts = usize::from(input.u8() % 8);
    let cuts: Vec<usize> = (0..ncuts).map(|_| usize::from(input.u16())).collect();
    let bytes = input.rest();

    // Whole, cut where the input says, and one byte at a time (short inputs only).
    let whole = run(bytes, &[], max_message, text);
    assert_eq!(whole, run(bytes, &cuts, max_message, text), "cut at {cuts:?}");
    if bytes.len() <= 512 {
        let every: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(whole, run(bytes, &every, max_message, text), "byte at a time");
    }

    // The upgrade request parser: a prefix of a complete request is incomplete or fails
    // the same way; never consumes more than given.
    match ws::parse_request(bytes) {
        Ok(Some((_, used))) => {
            assert!(used <= bytes.len());
            for cut in cuts.iter().map(|c| c % used.max(1)) {
                assert!(matches!(ws::parse_request(&bytes[..cut]), Ok(None) | Err(_)));
            }
        }
        Ok(None) | Err(_) => {}
    }

    // Tickets: random bytes are never a valid ticket for this key.
    let verifier = TicketVerifier::new(&[7_u8; 32], 16).expect("a 32-byte key");
    assert!(verifier.verify(bytes, 1_700_000_000_000).is_err());
});
