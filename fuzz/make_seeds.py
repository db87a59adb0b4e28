#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/seed-*.

The fuzzers find most of their corpus themselves; these seeds give them, from the first
second, frames whose tags verify (which mutation cannot produce) and operation sequences
that reach the interesting states (replays, key rotation, held push batches, each kind of
backpressure, rate limits, reopened rooms). The byte layouts mirror the decoders in
fuzz_targets/*.rs. Run from anywhere: python3 fuzz/make_seeds.py
"""

import hashlib
import hmac
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(bytes(data))


def frame(room, player, seq, payload=b"", key=None, tick=0, kind=0):
    flags = 1 if key else 0
    head = b"MV" + bytes([1, flags]) + struct.pack("<IIIIHH", room, player, seq, tick, kind, len(payload))
    signed = head + payload
    tag = hmac.new(key, signed, hashlib.sha256).digest() if key else hashlib.sha256(signed).digest()
    return signed + tag


# --- frame: control byte (max payload index), key length and bytes, then the rest is
# parsed as a frame (and then as a recipe).
def frame_seeds():
    k = bytes(range(32))
    key_section = bytes([32]) + bytes(b ^ i for i, b in enumerate(k))
    for i, (payload, key) in enumerate([(b"", None), (b"hello", None), (b"\xab" * 64, None),
                                        (b"move", k), (b"", k)]):
        f = frame(42, 7, 3 + i, payload, key, tick=1200, kind=5)
        write("frame", f"{i}", bytes([3]) + key_section + f)


# --- stream: control byte (sender mode, split mode), cut count and cut seeds, then bytes.
def stream_seeds():
    k = b"\x0b" * 32
    frames = [frame(1, 1, s, b"p" * (s % 5)) for s in range(1, 6)]
    body = b"".join(frames)
    write("stream", "sha-room1", [0, 3, 10, 0, 70, 0, 200, 0] + list(body))
    mixed = (frame(1, 2, 1, b"abc") + frame(2, 2, 1, b"x", k) + frame(3, 2, 9) + frame(4, 1, 5, b"rl")
             + frame(9, 1, 1) + frame(5, 1, 1) + frame(77, 1, 1) + frame(1, 2, 0)
             + frame(1, 2, 4, b"z" * 300))
    write("stream", "mixed", [0, 2, 33, 0, 97, 1] + list(mixed) + list(frame(1, 2, 5)[:40]))
    write("stream", "bytewise", [4 | (2 << 5), 0] + list(frame(1, 3, 1, b"hi") + frame(1, 3, 2)))
    write("stream", "sender", [2, 2, 0] + list(frame(1, 2, 1) + frame(1, 3, 1)))
    write("stream", "malformed-tail", [0, 0] + list(frame(1, 1, 1) + b"MV\x02\x00" + b"\x00" * 40))
    write("stream", "backpressure", [1, 1, 60, 0] + list(frame(1, 1, 1) + frame(9, 1, 1) + frame(1, 1, 2)))


# --- window: first byte odd starts near u32::MAX; then ops (low 3 bits = kind).
def window_seeds():
    write("window", "ascending", [0] + [0] * 63)
    write("window", "edges", [0, 0 | (200 << 3) & 0xF8] + [2, 3, 10, 11, 19, 1, 2, 3] * 8)
    write("window", "near-max", [1, 0xff, 0xff, 0, 8, 1, 7, 7 | (2 << 3), 0, 3])
    write("window", "jumps", [0, 4, 0x80, 0, 5, 3, 2, 3, 1, 4, 0xff, 0xff, 2, 3, 6, 1, 2, 3, 4])


# --- dispatch: config index, then operations (see Driver::run).
OPEN, CLOSE, JOIN, LEAVE, MOVE, STREAM, DRAIN, FLUSH, RELEASE, POLL, CLOSE_INPUT = 0, 1, 2, 4, 5, 9, 10, 12, 13, 14, 15
NONE_KEY = 4


def mv(room, player, seq=0, mode=0, lsel=10, damage=7, sender=0, extra=()):
    """A move: seq selector 0 = next, 3 = replay last, 4 | (k << 3) = last - 9k, 6 = zero."""
    return [MOVE, room, player, seq, *extra, mode, lsel, damage, sender]


def dispatch_seeds():
    R0, R1, R2, R3 = 0, 1, 2, 3
    # SHA-256 pull room: valid moves, replays, old, corrupted, spoofed, unknown player.
    ops = [14, OPEN, R1, 0, JOIN, R1, 0, NONE_KEY, JOIN, R1, 1, NONE_KEY]
    for _ in range(20):
        ops += mv(R1, 0)
    ops += mv(R1, 0, seq=3) + mv(R1, 0, seq=4 | (2 << 3)) + mv(R1, 0, damage=0) + mv(R1, 1, sender=7, extra=())
    ops += [0] + mv(R1, 2) + mv(R1, 1, seq=6)
    ops += [FLUSH, 0, DRAIN, R1]
    for _ in range(10):
        ops += mv(R1, 1)
    ops += [FLUSH, 0, DRAIN, R1, LEAVE, R1, 0] + mv(R1, 0) + [FLUSH, 0, DRAIN, R1, CLOSE, R1, DRAIN, R1]
    write("dispatch", "sha-pull", ops)

    # HMAC pull room: keys, forged key, key rotation, bad key lengths.
    ops = [14, OPEN, R2, 1, JOIN, R2, 0, 1, JOIN, R2, 1, 2, JOIN, R2, 2, 6, JOIN, R2, 2, NONE_KEY]
    for _ in range(6):
        ops += mv(R2, 0) + mv(R2, 1)
    ops += mv(R2, 0, mode=(3 << 2) | (3 << 4)) + mv(R2, 0, mode=2) + mv(R2, 0, mode=3)
    ops += [JOIN, R2, 0, 3] + mv(R2, 0) + mv(R2, 0, mode=(3 << 2) | (1 << 4))
    ops += [FLUSH, 0, DRAIN, R2, FLUSH, 0, DRAIN, R2]
    write("dispatch", "hmac-pull", ops)

    # Push rooms: small batches, a held batch, close while held, reopen.
    ops = [15, OPEN, R3, 2, JOIN, R3, 0, NONE_KEY, JOIN, R3, 1, NONE_KEY, OPEN, R1, 2, JOIN, R1, 0, NONE_KEY]
    for _ in range(6):
        ops += mv(R3, 0) + mv(R1, 0)
    ops += [FLUSH, 8 | 2] + mv(R3, 1) + mv(R3, 0, seq=3) + [CLOSE, R3, FLUSH, 0, OPEN, R3, 2, POLL, RELEASE, R1]
    ops += [JOIN, R3, 0, NONE_KEY] + mv(R3, 0) + [FLUSH, 8, CLOSE, R3, RELEASE, R3, FLUSH, 0]
    write("dispatch", "push", ops)

    # Queue backpressure (capacity 7), then room budget (4608 bytes, 1 KiB frames).
    ops = [4, OPEN, R1, 0, JOIN, R1, 0, NONE_KEY]
    for _ in range(9):
        ops += mv(R1, 0)
    ops += [FLUSH, 0, DRAIN, R1]
    write("dispatch", "queue-full", ops)
    ops = [20, OPEN, R1, 0, JOIN, R1, 0, NONE_KEY]
    for _ in range(6):
        ops += mv(R1, 0, lsel=200)
    ops += [FLUSH, 0] + mv(R1, 0, lsel=200) + [DRAIN, R1] + mv(R1, 0, lsel=200) + [FLUSH, 0, DRAIN, R1]
    write("dispatch", "room-full", ops)

    # Arena backpressure: 4000-byte payloads, 64 in flight, 40 KB rooms, 64 KiB arena.
    ops = [10]
    for r in (R0, R1, R2, R3):
        ops += [OPEN, r, 0, JOIN, r, 0, NONE_KEY]
    for _ in range(5):
        for r in (R0, R1, R2, R3):
            ops += mv(r, 0, lsel=200)
    ops += [FLUSH, 0] + [DRAIN, R0, DRAIN, R1, DRAIN, R2, DRAIN, R3]
    for _ in range(5):
        for r in (R0, R1, R2, R3):
            ops += mv(r, 0, lsel=201)
    ops += [FLUSH, 0]
    write("dispatch", "arena-full", ops)

    # Rate limit: burst 2, no refill; a re-join keeps the bucket, leave + join refills.
    ops = [14, OPEN, R0, 4 | (2 << 3), JOIN, R0, 0, NONE_KEY]
    for _ in range(4):
        ops += mv(R0, 0, sender=4)
    ops += [JOIN, R0, 0, NONE_KEY] + mv(R0, 0) + [LEAVE, R0, 0, JOIN, R0, 0, NONE_KEY] + mv(R0, 0) + mv(R0, 0)
    ops += [FLUSH, 0, DRAIN, R0]
    write("dispatch", "rate-limit", ops)

    # dispatchStream: frames of several rooms, a partial tail; then a malformed tail.
    ops = [15, OPEN, R1, 0, JOIN, R1, 0, NONE_KEY, OPEN, R2, 1, JOIN, R2, 0, 2]
    stream = [STREAM, 5]
    for i in range(6):
        r = R1 if i % 2 else R2
        stream += [r, 0, 0, 0, 10 + i, 7]
    ops += stream + [1, R1, 0, 0, 0, 20, 7, 33, 0]
    ops += [STREAM, 2, R1, 0, 0, 0, 5, 7, R1, 0, 3, 0, 5, 7, R1, 0, 0, 0, 5, 4, 3, 1, 0]
    ops += [FLUSH, 0, DRAIN, R1, DRAIN, R2]
    write("dispatch", "stream", ops)

    # Reopen a closing room: pending moves stay ahead; players must join again.
    ops = [14, OPEN, R1, 0, JOIN, R1, 0, NONE_KEY] + mv(R1, 0) + [CLOSE, R1] + mv(R1, 0) + [OPEN, R1, 0] + mv(R1, 0)
    ops += [OPEN, R1, 2, JOIN, R1, 0, NONE_KEY] + mv(R1, 0) + [FLUSH, 0, DRAIN, R1, CLOSE, R1, OPEN, R1, 2]
    write("dispatch", "reopen", ops)

    # Two shards, then closing the input.
    ops = [13, OPEN, R0, 0, OPEN, R1, 0, JOIN, R0, 0, NONE_KEY, JOIN, R1, 0, NONE_KEY]
    for _ in range(5):
        ops += mv(R0, 0) + mv(R1, 0)
    ops += [CLOSE_INPUT, 0xC1] + mv(R0, 0) + [OPEN, R2, 0, FLUSH, 0, DRAIN, R0]
    write("dispatch", "close-input", ops)

    # Shard failure (two shards): moves before the Fail validated, after it ShardFailed;
    # controls still work; once reported the shard's rooms answer Closed, the other shard
    # goes on; a second Fail stops the worker (flushes still answered); shard 2 is none.
    FAIL0, FAIL1, FAIL2 = 0xF4, 0xF5, 0xF6
    ops = [15, OPEN, R0, 0, OPEN, R1, 0, OPEN, R2, 2]
    ops += [JOIN, R0, 0, NONE_KEY, JOIN, R1, 0, NONE_KEY, JOIN, R2, 0, NONE_KEY]
    for _ in range(3):
        ops += mv(R0, 0) + mv(R2, 0) + mv(R1, 0)
    ops += [CLOSE_INPUT, FAIL0] + mv(R0, 0) + mv(R2, 0) + mv(R1, 0) + mv(R0, 0, seq=3)
    ops += [JOIN, R0, 1, NONE_KEY] + mv(R0, 1) + mv(R0, 2) + [CLOSE_INPUT, FAIL0, FLUSH, 0]
    ops += mv(R0, 0) + mv(R1, 0) + [JOIN, R0, 2, NONE_KEY, OPEN, R0, 0, CLOSE, R0, LEAVE, R0, 0]
    ops += [STREAM, 2, R0, 0, 0, 0, 5, 7, R1, 0, 0, 0, 5, 7, 0, 0]
    ops += [DRAIN, R0, DRAIN, R1, CLOSE_INPUT, FAIL2, CLOSE_INPUT, FAIL0, FLUSH, 0, FLUSH, 0]
    ops += [CLOSE_INPUT, FAIL0] + mv(R1, 0) + [FLUSH, 0, DRAIN, R0, DRAIN, R1]
    write("dispatch", "shard-failure", ops)
    # One shard, failing with push batches held; rooms of the failed shard, open or not.
    ops = [14, OPEN, R2, 2, JOIN, R2, 0, NONE_KEY] + mv(R2, 0) + mv(R2, 0) + [FLUSH, 4]
    ops += mv(R2, 0) + [CLOSE_INPUT, FAIL0] + mv(R2, 0) + [FLUSH, 4, RELEASE, R2]
    # Every room of the failed shard answers Closed, open or not (room 99, room 1).
    ops += mv(5, 0) + [JOIN, 5, 0, NONE_KEY, CLOSE, R1, LEAVE, R1, 0, FLUSH, 0]
    write("dispatch", "shard-failure-push", ops)


if __name__ == "__main__":
    frame_seeds()
    stream_seeds()
    window_seeds()
    dispatch_seeds()
