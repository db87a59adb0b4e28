//! The verdict, reason and status vocabularies shared with JavaScript.
//! Discriminants are the numbers `src/constants.ts` and `src/engine.ts` use.

/// Synchronous answer of `dispatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Verdict {
    /// Queued for validation; reaches JavaScript exactly once.
    Accepted = 0,
    /// A queue, the shard arena or the room budget is full; nothing was kept.
    Backpressure = 1,
    /// The dispatcher is closed.
    Closed = 2,
    /// Not a v1 frame (magic, version, flags, length, seq 0).
    Malformed = 3,
    /// Payload longer than `maxPayload`.
    Oversize = 4,
    /// The room is not open.
    UnknownRoom = 5,
    /// The tag kind disagrees with the room's auth mode.
    AuthMismatch = 6,
    /// The frame's player is not the connection's proven sender.
    WrongSender = 7,
    /// The sender spent its room's rate limit (token bucket); nothing was kept.
    RateLimited = 8,
    /// The frame's player (the proven sender) has not joined the room: refused at once,
    /// spending nothing (no room budget, queue slot, arena space or rate-limit token).
    NotMember = 9,
}

impl Verdict {
    /// Number of verdicts.
    pub const COUNT: usize = 10;
}

/// Why an accepted move failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// The tag does not match.
    BadTag = 0,
    /// The player is not in the room. Kept for compatibility: `dispatch` refuses
    /// non-members at once ([`Verdict::NotMember`]), so it does not occur.
    UnknownPlayer = 1,
    /// Duplicate or too-old seq.
    Replay = 2,
    /// Accepted by a shard that failed (its worker panicked) before validating it.
    ShardFailed = 3,
}

impl Reason {
    /// Number of reasons.
    pub const COUNT: usize = 4;

    /// The reason numbered `n`, if any.
    pub fn from_u32(n: u32) -> Option<Self> {
        [
            Self::BadTag,
            Self::UnknownPlayer,
            Self::Replay,
            Self::ShardFailed,
        ]
        .get(n as usize)
        .copied()
    }
}

/// Answer of control calls; JavaScript turns it into a typed error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    UnknownRoom = 1,
    RoomExists = 2,
    UnknownPlayer = 3,
    /// Wrong delivery mode for the call (drain on a push room), or a key that does not
    /// fit the room's auth mode (join).
    WrongDelivery = 4,
    Closed = 5,
    /// The memory the call needs (a pull room's `roomBytes`) could not be allocated.
    OutOfMemory = 6,
}
