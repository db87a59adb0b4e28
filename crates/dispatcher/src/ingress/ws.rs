//! RFC 6455 for the server side, sans-IO: no sockets, no runtime, no `async`. The connection
//! loop reads bytes and hands them here; it writes the bytes this module encodes.
//!
//! - Opening handshake: [`parse_request`] reads an HTTP/1.1 upgrade request from the bytes
//!   received so far (at most [`MAX_REQUEST_BYTES`]), [`response_101`] accepts it and
//!   [`response_error`] refuses it. No extension (`permessage-deflate`) and no subprotocol
//!   is ever negotiated: those request headers are ignored.
//! - Frames from the client: a [`Decoder`] per connection (56 bytes, no heap memory between
//!   messages) checks them as they arrive, in inputs cut anywhere, and delivers each message
//!   and control frame as an [`Event`]. A frame that arrives whole is unmasked in place and
//!   delivered as a slice of the caller's input; only fragmented messages and frames split
//!   across inputs are copied. A violation is a [`Close`]: the code to send and why.
//! - Frames to the client: [`encode_header`], [`encode_frame`] and [`encode_close`] (final,
//!   unmasked frames).
//!
//! The accept key needs SHA-1 (RFC 6455 §4.2.2), computed by a small private implementation
//! (FIPS 180-4) rather than a crate: SHA-1 serves here only the handshake, where its
//! collision weakness does not matter.
//!
//! # Panics
//! Never: every public function is total over arbitrary input.

/// Most bytes an upgrade request's header block may take, request line and final blank
/// line included. A client that sends more without ending the block gets
/// [`HandshakeError::TooLarge`].
pub const MAX_REQUEST_BYTES: usize = 4096;

/// What RFC 6455 §1.3 appends to the client's key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The standard base64 alphabet (RFC 4648 §4).
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// An upgrade request that passed every check of [`parse_request`]. Borrows the bytes it was
/// parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request-target as sent (e.g. `/moves?ticket=...`): visible ASCII, not decoded.
    pub target: &'a str,
    /// `Sec-WebSocket-Key`: 24 characters of base64 (16 bytes), for [`response_101`].
    pub key: &'a str,
}

/// Why an upgrade request is refused. [`status`](Self::status) is the HTTP status to answer
/// with ([`response_error`]); [`as_str`](Self::as_str) a stable description, fit for logs
/// and for the response body. Never carries request bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The header block does not end within [`MAX_REQUEST_BYTES`] (431).
    TooLarge,
    /// Not HTTP/1.1 syntax: bad request line, header line without a colon or with
    /// whitespace before it, obs-fold, bare CR or LF, control characters such as NUL (400).
    Malformed,
    /// A method other than `GET` (400).
    Method,
    /// A protocol other than `HTTP/1.1` (400).
    HttpVersion,
    /// No `Upgrade` header with the token `websocket` (400).
    Upgrade,
    /// No `Connection` header with the token `upgrade` (400).
    Connection,
    /// `Sec-WebSocket-Version` missing or not `13` (426, answered with
    /// `Sec-WebSocket-Version: 13`).
    Version,
    /// `Sec-WebSocket-Key` missing, repeated, or not the base64 of 16 bytes (400).
    Key,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            Self::TooLarge => 431,
            Self::Version => 426,
            Self::Malformed
            | Self::Method
            | Self::HttpVersion
            | Self::Upgrade
            | Self::Connection
            | Self::Key => 400,
        }
    }

    /// A stable description (ASCII, one line).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "request header block too large",
            Self::Malformed => "malformed request",
            Self::Method => "method is not GET",
            Self::HttpVersion => "protocol is not HTTP/1.1",
            Self::Upgrade => "missing Upgrade: websocket",
            Self::Connection => "missing Connection: upgrade",
            Self::Version => "unsupported Sec-WebSocket-Version",
            Self::Key => "bad Sec-WebSocket-Key",
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for HandshakeError {}

/// Parses the upgrade request at the start of `buf`, the bytes received so far.
///
/// Returns `Ok(None)` while the header block (ending with an empty line, `\r\n\r\n`) is
/// incomplete, and `Ok(Some((request, consumed)))` once it is complete and valid, where
/// `consumed` is the length of the header block: bytes after it belong to the frame stream
/// (a client must wait for the 101 before sending frames, but if it does not, those bytes
/// are its first frames). Call it again, on all the bytes received, each time more arrive.
///
/// Checks, in order: syntax (the whole block; bare LF, bare CR, NUL and other control
/// characters are refused as soon as they arrive), method `GET`, protocol `HTTP/1.1`,
/// `Upgrade` has the token `websocket` and `Connection` the token `upgrade` (both
/// case-insensitive, in comma-separated lists, possibly over several header lines),
/// `Sec-WebSocket-Version: 13`, and exactly one `Sec-WebSocket-Key` holding the base64 of
/// 16 bytes. Header names are case-insensitive; other headers (`Host`, `Origin`,
/// `Sec-WebSocket-Extensions`, `Sec-WebSocket-Protocol`, ...) are not looked at.
///
/// Each call scans the bytes from the start (at most [`MAX_REQUEST_BYTES`] of them), so a
/// client dribbling its request byte by byte costs quadratic time up to that cap: the
/// caller bounds the handshake with a timeout.
///
/// # Errors
/// The first failed check; [`HandshakeError::TooLarge`] once [`MAX_REQUEST_BYTES`] bytes
/// hold no complete header block.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
    let window = &buf[..buf.len().min(MAX_REQUEST_BYTES)];
    let end = window
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    check_bytes(&window[..end.unwrap_or(window.len())])?;
    let Some(end) = end else {
        return if buf.len() >= MAX_REQUEST_BYTES {
            Err(HandshakeError::TooLarge)
        } else {
            Ok(None)
        };
    };
    // Every line of the block, the request line first, each with its CRLF (the final empty
    // line is left out). `check_bytes` made sure that CR and LF only come as CRLF.
    let mut lines = buf[..end - 2]
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HandshakeError::Malformed);
    };
    if method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| b.is_ascii_graphic())
        || !version.starts_with(b"HTTP/")
    {
        return Err(HandshakeError::Malformed);
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut version_13 = None;
    let mut key = None;
    let mut keys = 0u32;
    // The split leaves one empty piece after the last CRLF.
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = split_header(line)?;
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection |= has_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            version_13 = Some(version_13.unwrap_or(true) && value == b"13");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            keys += 1;
            key = Some(value);
        }
    }
    if method != b"GET" {
        return Err(HandshakeError::Method);
    }
    if version != b"HTTP/1.1" {
        return Err(HandshakeError::HttpVersion);
    }
    if !upgrade {
        return Err(HandshakeError::Upgrade);
    }
    if !connection {
        return Err(HandshakeError::Connection);
    }
    if version_13 != Some(true) {
        return Err(HandshakeError::Version);
    }
    let key = match key {
        Some(key) if keys == 1 && is_key(key) => key,
        _ => return Err(HandshakeError::Key),
    };
    // Both are ASCII by now: the conversions cannot fail.
    let target = std::str::from_utf8(target).map_err(|_| HandshakeError::Malformed)?;
    let key = std::str::from_utf8(key).map_err(|_| HandshakeError::Key)?;
    Ok(Some((Request { target, key }, end)))
}

/// Refuses the bytes of a (partial) header block that no valid request contains: a LF not
/// after a CR, a CR not before a LF, a line starting with whitespace (obs-fold), and control
/// characters other than HTAB (NUL, a TLS `ClientHello`'s first byte, ...).
fn check_bytes(block: &[u8]) -> Result<(), HandshakeError> {
    let mut prev = None;
    for (i, &b) in block.iter().enumerate() {
        let ok = match b {
            b'\n' => prev == Some(b'\r'),
            b'\r' => block.get(i + 1).is_none_or(|&next| next == b'\n'),
            b' ' | b'\t' => prev.is_some() && prev != Some(b'\n'),
            0..=0x1f | 0x7f => false,
            _ => true,
        };
        if !ok {
            return Err(HandshakeError::Malformed);
        }
        prev = Some(b);
    }
    Ok(())
}

/// Splits a header line into its name (a token, no whitespace before the colon) and its
/// value without surrounding whitespace.
fn split_header(line: &[u8]) -> Result<(&[u8], &[u8]), HandshakeError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HandshakeError::Malformed)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HandshakeError::Malformed);
    }
    Ok((name, value.trim_ascii()))
}

/// Whether `b` may appear in an HTTP token (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether the comma-separated list `value` holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether `key` is the canonical base64 of 16 bytes: 22 characters of the alphabet, the
/// last carrying 2 bits (its low 4 bits zero), then `==`.
fn is_key(key: &[u8]) -> bool {
    let value = |b: u8| BASE64.iter().position(|&c| c == b);
    match key {
        [digits @ .., b'=', b'='] if digits.len() == 22 => {
            digits.iter().all(|&b| value(b).is_some())
                && digits
                    .last()
                    .and_then(|&b| value(b))
                    .is_some_and(|v| v % 16 == 0)
        }
        _ => false,
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: the base64 of
/// SHA-1(key + `258EAFA5-E914-47DA-95CA-C5AB0DC85B11`) (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> [u8; 28] {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID);
    let digest = sha1.finish();
    let mut out = [b'='; 28];
    for (group, chars) in digest.chunks(3).zip(out.chunks_mut(4)) {
        let bits = group
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, &b)| bits | (u32::from(b) << (16 - 8 * i)));
        for (i, c) in chars.iter_mut().take(group.len() + 1).enumerate() {
            *c = BASE64[(bits >> (18 - 6 * i)) as usize & 63];
        }
    }
    out
}

/// The head of [`response_101`], up to the accept value.
const HEAD_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Accept: ";

/// Bytes of a [`response_101`].
pub const RESPONSE_101_BYTES: usize = HEAD_101.len() + 28 + 4;

/// The `101 Switching Protocols` response accepting a request whose `Sec-WebSocket-Key` is
/// `key` ([`Request::key`]). No extension, no subprotocol. A fixed-size array: a server
/// writes it from the stack, with no allocation per connection.
pub fn response_101(key: &str) -> [u8; RESPONSE_101_BYTES] {
    let mut out = [0; RESPONSE_101_BYTES];
    let (head, rest) = out.split_at_mut(HEAD_101.len());
    head.copy_from_slice(HEAD_101);
    let (accept, end) = rest.split_at_mut(28);
    accept.copy_from_slice(&accept_key(key));
    end.copy_from_slice(b"\r\n\r\n");
    out
}

/// Appends a short plain-text response refusing the upgrade: status line with the standard
/// reason phrase of `status` (400, 401, 403, 426, 431, 503, ...), `Connection: close`, the
/// `Content-Length` of the body, which is `reason` and a newline (control characters in
/// `reason` become spaces). A 426 also carries `Upgrade: websocket` and
/// `Sec-WebSocket-Version: 13`. The caller closes the connection once it is written.
///
/// `status` should be a three-digit error status; for a [`HandshakeError`] `e`, pass
/// `e.status()` and `e.as_str()`.
pub fn response_error(status: u16, reason: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(usize::from(status), out);
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n");
    if status == 426 {
        out.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(reason.len() + 1, out);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend(
        reason
            .bytes()
            .map(|b| if b.is_ascii_control() { b' ' } else { b }),
    );
    out.push(b'\n');
}

/// The standard reason phrase of the statuses a handshake answers with.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Appends `n` in decimal.
fn push_decimal(n: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Close code 1000: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code 1001: the server is going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1002: protocol error.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code 1003: a kind of data the endpoint does not accept (here: text).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
/// Close code 1007: data inconsistent with its type (invalid UTF-8).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code 1008: policy violation, the generic refusal.
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Close code 1009: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code 1011: internal error.
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// [`Decoder::default`]'s message limit: the largest frame of wire format v1
/// ([`crate::frame`]), one move per message.
pub const DEFAULT_MAX_MESSAGE: usize =
    crate::frame::FRAME_OVERHEAD + crate::frame::MAX_WIRE_PAYLOAD;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of masking key.
const MAX_HEADER: usize = 14;
/// First header byte: final fragment.
const FIN: u8 = 0x80;
/// First header byte: RSV1-3, meaningful only with an extension (none is negotiated).
const RSV: u8 = 0x70;
/// First header byte: the opcode.
const OPCODE: u8 = 0x0f;
/// Second header byte: the payload is masked.
const MASKED: u8 = 0x80;
/// Second header byte: the 7-bit length (126: a 16-bit length follows, 127: a 64-bit one).
const LEN7: u8 = 0x7f;
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// The frames the server sends. Always final: the server never fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn bits(self) -> u8 {
        match self {
            Self::Text => OP_TEXT,
            Self::Binary => OP_BINARY,
            Self::Close => OP_CLOSE,
            Self::Ping => OP_PING,
            Self::Pong => OP_PONG,
        }
    }
}

/// Why the decoder failed the connection: the code of the Close frame the server sends
/// before closing the connection (`encode_close(close.code, close.reason, out)`), and a
/// stable reason (ASCII, short enough for a Close payload). Never carries client bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    /// RSV1, RSV2 or RSV3 set: no extension is negotiated (1002).
    pub const RESERVED_BITS: Self = Self::protocol("reserved bits set");
    /// Opcode 3-7 or 0xB-0xF (1002).
    pub const UNKNOWN_OPCODE: Self = Self::protocol("unknown opcode");
    /// A client frame without a masking key (1002).
    pub const UNMASKED: Self = Self::protocol("unmasked client frame");
    /// A control frame with FIN clear (1002).
    pub const FRAGMENTED_CONTROL: Self = Self::protocol("fragmented control frame");
    /// A control frame announcing more than [`MAX_CONTROL_PAYLOAD`] bytes (1002).
    pub const CONTROL_TOO_LONG: Self = Self::protocol("control frame over 125 bytes");
    /// A continuation frame with no fragmented message open (1002).
    pub const NO_MESSAGE: Self = Self::protocol("continuation without a message");
    /// A text or binary frame while a fragmented message is open (1002).
    pub const MESSAGE_OPEN: Self = Self::protocol("new message inside a fragmented one");
    /// A 64-bit length with its most significant bit set (1002).
    pub const LENGTH_HIGH_BIT: Self = Self::protocol("64-bit length with the high bit set");
    /// A Close payload of exactly 1 byte (1002).
    pub const CLOSE_ONE_BYTE: Self = Self::protocol("close payload of 1 byte");
    /// A Close code a client may not send: valid are 1000-1003, 1007-1011, 3000-4999
    /// (1002).
    pub const BAD_CLOSE_CODE: Self = Self::protocol("invalid close code");
    /// A text frame to a decoder that accepts only binary (1003).
    pub const TEXT_NOT_ACCEPTED: Self = Self {
        code: CLOSE_UNSUPPORTED_DATA,
        reason: "text not accepted",
    };
    /// A text message that is not UTF-8 (1007).
    pub const BAD_TEXT: Self = Self {
        code: CLOSE_INVALID_DATA,
        reason: "invalid UTF-8 in text",
    };
    /// A Close reason that is not UTF-8 (1007).
    pub const BAD_CLOSE_REASON: Self = Self {
        code: CLOSE_INVALID_DATA,
        reason: "invalid UTF-8 in close reason",
    };
    /// A message longer than the decoder's limit, known from a frame header (1009).
    pub const TOO_BIG: Self = Self {
        code: CLOSE_TOO_BIG,
        reason: "message too big",
    };
    /// [`Decoder::feed`] after an error or a Close event (1002).
    pub const ENDED: Self = Self::protocol("input after the end of the stream");

    const fn protocol(reason: &'static str) -> Self {
        Self {
            code: CLOSE_PROTOCOL_ERROR,
            reason,
        }
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for Close {}

/// What the client sent, as [`Decoder::feed`] delivers it. Slices borrow either the
/// caller's input (a frame that arrived whole, unmasked in place) or the decoder's buffer
/// (a fragmented message, or a frame split across inputs); they live until `on` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A complete text message, valid UTF-8 (only with `text_allowed`).
    Text(&'a [u8]),
    /// A ping: the server answers with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong (unsolicited ones included).
    Pong(&'a [u8]),
    /// The client's Close: `code` is `None` for an empty payload, and `reason` is valid
    /// UTF-8. The stream ends: the server answers with a Close (echoing `code`, or 1000)
    /// and closes the connection.
    Close { code: Option<u16>, reason: &'a [u8] },
}

/// Where a decoder's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// Between messages.
    Idle,
    /// A binary message is being buffered: fragmented, or its frame split across inputs.
    Binary,
    /// A text message is being buffered.
    Text,
    /// After a Close event or an error: all input is refused.
    Ended,
}

/// RFC 6455 frames, client to server, for one connection: masking, fragmentation, control
/// frames, limits and UTF-8, validated as the bytes arrive, with no IO.
///
/// State is small (`size_of::<Decoder>()` is 56 bytes on 64-bit targets) and owns no
/// memory between messages: bytes are buffered (in a `Vec` allocated on demand and freed
/// when the message is delivered) only for a message that arrives in several frames or a
/// frame that arrives in several inputs. A frame that arrives whole in one input is
/// unmasked in place and delivered as a slice of that input, without a copy.
///
/// ```
/// use move_dispatcher::ingress::ws::{Decoder, Event};
///
/// let mut decoder = Decoder::new(1024, false);
/// // A masked binary frame "hi" (key 1 2 3 4), arriving in two reads.
/// let mut frame = [0x82, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
/// let (first, second) = frame.split_at_mut(5);
/// let mut messages = Vec::new();
/// let mut on = |event: Event<'_>| {
///     if let Event::Binary(bytes) = event {
///         messages.push(bytes.to_vec());
///     }
/// };
/// assert_eq!(decoder.feed(first, &mut on), Ok(5));
/// assert_eq!(decoder.feed(second, &mut on), Ok(3));
/// assert_eq!(messages, [b"hi".to_vec()]);
/// ```
pub struct Decoder {
    /// The message being buffered (unmasked; for text, valid UTF-8 but for at most the
    /// last 3 bytes), then the part received so far of the frame in flight when that frame
    /// is a control frame split across inputs. Empty and unallocated between messages.
    buf: Vec<u8>,
    /// Largest message, in bytes.
    max_message: u32,
    /// Payload bytes of the frame in flight still to come; 0 when no frame is in flight.
    remaining: u32,
    /// Masking key of the frame in flight, rotated so that `mask[0]` applies to its next
    /// byte.
    mask: [u8; 4],
    /// The first bytes of a frame header split across inputs.
    head: [u8; MAX_HEADER],
    /// Bytes of `head` received.
    head_len: u8,
    /// First header byte (FIN, opcode) of the frame in flight.
    frame: u8,
    /// Payload length of the frame in flight if it is a control frame.
    control_len: u8,
    /// Trailing bytes of `buf` that begin a UTF-8 sequence not yet complete (text only).
    utf8_tail: u8,
    stream: Stream,
    /// Whether text frames are accepted (and validated as UTF-8) or refused with 1003.
    text_allowed: bool,
}

/// State only: never the client's bytes.
impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered_len", &self.buf.len())
            .field("max_message", &self.max_message)
            .field("remaining", &self.remaining)
            .field("head_len", &self.head_len)
            .field("stream", &self.stream)
            .field("text_allowed", &self.text_allowed)
            .finish_non_exhaustive()
    }
}

impl Default for Decoder {
    /// A decoder for the product: binary only, messages up to [`DEFAULT_MAX_MESSAGE`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE, false)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// First byte: FIN and opcode (RSV known clear).
    b0: u8,
    /// Payload length, within limits.
    len: u32,
    mask: [u8; 4],
    /// Bytes of the input the header took (fewer than its length if it began in an
    /// earlier input).
    consumed: usize,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes (at most `u32::MAX`: larger
    /// values are clamped). With `text_allowed` false (the product: moves are binary),
    /// a text frame fails the connection with 1003; with it true (an echo server for the
    /// Autobahn suite), text is validated as UTF-8 and delivered.
    pub fn new(max_message: usize, text_allowed: bool) -> Self {
        Self {
            buf: Vec::new(),
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            remaining: 0,
            mask: [0; 4],
            head: [0; MAX_HEADER],
            head_len: 0,
            frame: 0,
            control_len: 0,
            utf8_tail: 0,
            stream: Stream::Idle,
            text_allowed,
        }
    }

    /// Decodes `input`, the next bytes from the client, calling `on` for each message and
    /// control frame in order.
    ///
    /// Consumes all of `input` and returns its length, unless a Close frame ends the
    /// stream: then it returns the offset just past that frame, and the bytes after it are
    /// ignored. The caller keeps no tail: the end of a frame that continues in the next
    /// input is kept here. Every frame is checked from its header as soon as the header has
    /// arrived (a client announcing a 2^62-byte message costs nothing), and text as it
    /// arrives. Frames are unmasked in place: `input` is scrambled on return.
    ///
    /// # Errors
    /// The [`Close`] to send when the client broke the protocol or a limit; events before
    /// the faulty frame have been delivered. After an error or a Close event every call
    /// returns [`Close::ENDED`].
    pub fn feed(
        &mut self,
        input: &mut [u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<usize, Close> {
        if self.stream == Stream::Ended {
            return Err(Close::ENDED);
        }
        let result = self.decode(input, on);
        if result.is_err() {
            self.end();
        }
        result
    }

    /// Whether nothing is buffered: no partial header, frame or message.
    pub fn is_idle(&self) -> bool {
        self.head_len == 0
            && self.remaining == 0
            && !matches!(self.stream, Stream::Binary | Stream::Text)
    }

    /// Whether the stream has ended (a Close event or an error).
    pub fn is_ended(&self) -> bool {
        self.stream == Stream::Ended
    }

    /// Heap bytes held (the capacity of the message buffer): 0 when idle.
    pub fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// Ends the stream: all further input is refused, the buffer is freed.
    fn end(&mut self) {
        self.stream = Stream::Ended;
        self.buf = Vec::new();
        self.remaining = 0;
        self.head_len = 0;
    }

    /// [`feed`](Self::feed) on a stream not yet ended.
    fn decode(&mut self, input: &mut [u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, Close> {
        let mut pos = 0;
        if self.remaining > 0 {
            pos = self.buffer_payload(input)?;
            if self.remaining > 0 {
                return Ok(pos);
            }
            if self.finish_buffered(on)? {
                self.end();
                return Ok(pos);
            }
        }
        while pos < input.len() {
            let Some(header) = self.next_header(&input[pos..])? else {
                return Ok(input.len());
            };
            pos += header.consumed;
            let len = header.len as usize;
            let op = header.b0 & OPCODE;
            let alone = op >= OP_CLOSE || (header.b0 & FIN != 0 && op != OP_CONTINUATION);
            if alone && input.len() - pos >= len {
                // The whole frame is here and is a whole message or a control frame:
                // delivered in place.
                let payload = &mut input[pos..pos + len];
                pos += len;
                unmask(payload, header.mask);
                if deliver(op, payload, on)? {
                    self.end();
                    return Ok(pos);
                }
                continue;
            }
            match op {
                OP_TEXT => self.stream = Stream::Text,
                OP_BINARY => self.stream = Stream::Binary,
                _ => {}
            }
            self.frame = header.b0;
            self.control_len = if op >= OP_CLOSE { header.len as u8 } else { 0 };
            self.mask = header.mask;
            self.remaining = header.len;
            pos += self.buffer_payload(&mut input[pos..])?;
            if self.remaining > 0 {
                return Ok(pos);
            }
            if self.finish_buffered(on)? {
                self.end();
                return Ok(pos);
            }
        }
        Ok(pos)
    }

    /// The header starting at `rest` (after the bytes in `head`), or `None` if `rest` ends
    /// first: then all of `rest` is in `head`.
    fn next_header(&mut self, rest: &[u8]) -> Result<Option<Header>, Close> {
        let old = usize::from(self.head_len);
        if old == 0 {
            if let Some(header) = self.parse_header(rest)? {
                return Ok(Some(header));
            }
            // Shorter than the header, so shorter than MAX_HEADER.
            let n = rest.len().min(MAX_HEADER);
            self.head[..n].copy_from_slice(&rest[..n]);
            self.head_len = n as u8;
            return Ok(None);
        }
        let take = (MAX_HEADER - old).min(rest.len());
        self.head[old..old + take].copy_from_slice(&rest[..take]);
        let Some(mut header) = self.parse_header(&self.head[..old + take])? else {
            self.head_len = (old + take) as u8;
            return Ok(None);
        };
        header.consumed -= old;
        self.head_len = 0;
        Ok(Some(header))
    }

    /// Checks the header at the start of `b` as far as it goes: `Ok(None)` if `b` ends
    /// before it does and nothing so far is wrong.
    fn parse_header(&self, b: &[u8]) -> Result<Option<Header>, Close> {
        let [b0, b1, ..] = *b else {
            return Ok(None);
        };
        if b0 & RSV != 0 {
            return Err(Close::RESERVED_BITS);
        }
        let in_message = matches!(self.stream, Stream::Binary | Stream::Text);
        let op = b0 & OPCODE;
        match op {
            OP_CONTINUATION if !in_message => return Err(Close::NO_MESSAGE),
            OP_TEXT | OP_BINARY if in_message => return Err(Close::MESSAGE_OPEN),
            OP_TEXT if !self.text_allowed => return Err(Close::TEXT_NOT_ACCEPTED),
            OP_CLOSE | OP_PING | OP_PONG if b0 & FIN == 0 => return Err(Close::FRAGMENTED_CONTROL),
            OP_CLOSE | OP_PING | OP_PONG if usize::from(b1 & LEN7) > MAX_CONTROL_PAYLOAD => {
                return Err(Close::CONTROL_TOO_LONG)
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
            _ => return Err(Close::UNKNOWN_OPCODE),
        }
        if b1 & MASKED == 0 {
            return Err(Close::UNMASKED);
        }
        let (len, at) = match b1 & LEN7 {
            126 => match b.get(2..4) {
                Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
                _ => return Ok(None),
            },
            127 => match b.get(2..10).and_then(|x| <[u8; 8]>::try_from(x).ok()) {
                Some(x) => (u64::from_be_bytes(x), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(Close::LENGTH_HIGH_BIT);
        }
        // `buf` holds the message so far, and nothing else between frames.
        let room = u64::from(self.max_message).saturating_sub(self.buf.len() as u64);
        if op < OP_CLOSE && len > room {
            return Err(Close::TOO_BIG);
        }
        let Some(mask) = b.get(at..at + 4).and_then(|m| <[u8; 4]>::try_from(m).ok()) else {
            return Ok(None);
        };
        Ok(Some(Header {
            b0,
            // At most `max_message` (a u32) or 125.
            len: len as u32,
            mask,
            consumed: at + 4,
        }))
    }

    /// Unmasks and buffers what `input` holds of the frame in flight; returns the bytes
    /// taken.
    fn buffer_payload(&mut self, input: &mut [u8]) -> Result<usize, Close> {
        let take = input.len().min(self.remaining as usize);
        self.reserve_bounded(take);
        let chunk = &mut input[..take];
        unmask(chunk, self.mask);
        self.mask.rotate_left(take % 4);
        self.remaining -= take as u32;
        if self.frame & OPCODE >= OP_CLOSE {
            self.buf.extend_from_slice(chunk);
        } else {
            self.append(chunk)?;
        }
        Ok(take)
    }

    /// Makes room in `buf` for `extra` more bytes, growing its capacity as a vector does
    /// (doubling) but never past what the limits let it hold — `max_message` plus one
    /// control frame — unless the bytes themselves need more (they cannot: headers are
    /// checked against the limits first). Plain doubling could leave a buffer of a
    /// message split across reads at almost twice the limit.
    fn reserve_bounded(&mut self, extra: usize) {
        let need = self.buf.len() + extra;
        if need <= self.buf.capacity() {
            return;
        }
        let limit = (self.max_message as usize + MAX_CONTROL_PAYLOAD).max(need);
        let target = (self.buf.capacity() * 2).max(need).min(limit);
        self.buf.reserve_exact(target - self.buf.len());
    }

    /// Appends message bytes, checking text as it goes: fails as soon as the bytes cannot
    /// begin valid UTF-8, and keeps an incomplete sequence at the end for the next bytes.
    fn append(&mut self, bytes: &[u8]) -> Result<(), Close> {
        let from = self.buf.len() - usize::from(self.utf8_tail);
        self.buf.extend_from_slice(bytes);
        if self.stream == Stream::Text {
            let unchecked = &self.buf[from..];
            self.utf8_tail = match std::str::from_utf8(unchecked) {
                Ok(_) => 0,
                Err(e) if e.error_len().is_none() => (unchecked.len() - e.valid_up_to()) as u8,
                Err(_) => return Err(Close::BAD_TEXT),
            };
        }
        Ok(())
    }

    /// Completes the buffered frame whose last byte just arrived: delivers a control frame,
    /// or the message if the frame was its last. Returns whether the stream ended (Close).
    fn finish_buffered(&mut self, on: &mut impl FnMut(Event<'_>)) -> Result<bool, Close> {
        let op = self.frame & OPCODE;
        if op >= OP_CLOSE {
            let start = self.buf.len() - usize::from(self.control_len);
            if deliver(op, &self.buf[start..], on)? {
                return Ok(true);
            }
            self.buf.truncate(start);
            if self.buf.is_empty() {
                self.buf = Vec::new();
            }
        } else if self.frame & FIN != 0 {
            if self.utf8_tail != 0 {
                return Err(Close::BAD_TEXT);
            }
            on(if self.stream == Stream::Text {
                Event::Text(&self.buf)
            } else {
                Event::Binary(&self.buf)
            });
            self.buf = Vec::new();
            self.stream = Stream::Idle;
        }
        Ok(false)
    }
}

/// Delivers a whole message or control frame (`payload` unmasked). Returns whether the
/// stream ended (Close).
fn deliver(op: u8, payload: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<bool, Close> {
    match op {
        OP_BINARY => on(Event::Binary(payload)),
        OP_TEXT => {
            if std::str::from_utf8(payload).is_err() {
                return Err(Close::BAD_TEXT);
            }
            on(Event::Text(payload));
        }
        OP_PING => on(Event::Ping(payload)),
        OP_PONG => on(Event::Pong(payload)),
        _ => {
            on(close_event(payload)?);
            return Ok(true);
        }
    }
    Ok(false)
}

/// The Close event for a Close payload: empty, or a valid code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event<'_>, Close> {
    match *payload {
        [] => Ok(Event::Close {
            code: None,
            reason: &[],
        }),
        [_] => Err(Close::CLOSE_ONE_BYTE),
        [hi, lo, ref reason @ ..] => {
            let code = u16::from_be_bytes([hi, lo]);
            if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                return Err(Close::BAD_CLOSE_CODE);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Close::BAD_CLOSE_REASON);
            }
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

/// XORs `data` with the masking key `mask` (`mask[0]` on `data[0]`), 8 bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let key = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let (words, tail) = data.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ key).to_ne_bytes();
    }
    // `tail` starts at a multiple of 8, so with `mask[0]`.
    for (byte, m) in tail.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Writes the header of a final, unmasked frame of `len` payload bytes into `out`; returns
/// its length (2, 4 or 10). A control frame's payload must not exceed
/// [`MAX_CONTROL_PAYLOAD`] bytes (clients refuse it).
pub fn encode_header(opcode: Opcode, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = FIN | opcode.bits();
    if len <= MAX_CONTROL_PAYLOAD {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Whether `frame`, a frame this module encoded, is a pong.
pub fn is_pong(frame: &[u8]) -> bool {
    frame.first() == Some(&(FIN | OP_PONG))
}

/// Appends a final, unmasked frame carrying `payload`.
pub fn encode_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = [0; 10];
    let n = encode_header(opcode, payload.len(), &mut header);
    out.reserve(n + payload.len());
    out.extend_from_slice(&header[..n]);
    out.extend_from_slice(payload);
}

/// Appends a Close frame with `code` and `reason`, the reason cut (on a character
/// boundary) to keep the payload within [`MAX_CONTROL_PAYLOAD`] bytes. `code` should be
/// one an endpoint may send (not 1005, 1006 or 1015).
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut n = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(n) {
        n -= 1;
    }
    let mut header = [0; 10];
    let h = encode_header(Opcode::Close, 2 + n, &mut header);
    out.extend_from_slice(&header[..h]);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..n]);
}

/// SHA-1 (FIPS 180-4 §6.1), streaming, for [`accept_key`] only.
struct Sha1 {
    state: [u32; 5],
    block: [u8; 64],
    /// Bytes of `block` filled.
    filled: usize,
    /// Bytes hashed so far.
    total: u64,
}

impl Sha1 {
    fn new() -> Self {
        Self {
            state: [
                0x6745_2301,
                0xefcd_ab89,
                0x98ba_dcfe,
                0x1032_5476,
                0xc3d2_e1f0,
            ],
            block: [0; 64],
            filled: 0,
            total: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        while !data.is_empty() {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == 64 {
                self.compress();
                self.filled = 0;
            }
        }
    }

    /// Pads (`0x80`, zeros, the big-endian bit length) and returns the digest.
    fn finish(mut self) -> [u8; 20] {
        let bits = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0; 20];
        for (bytes, word) in out.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// One block into the state. Variable names are those of FIPS 180-4.
    #[allow(clippy::many_single_char_names)]
    fn compress(&mut self) {
        let mut w = [0u32; 80];
        for (word, bytes) in w.iter_mut().zip(self.block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.state;
        for (t, &wt) in w.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e]) {
            *s = s.wrapping_add(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        use std::fmt::Write;
        bytes.iter().fold(String::new(), |mut s, b| {
            write!(s, "{b:02x}").unwrap();
            s
        })
    }

    fn sha1(data: &[u8]) -> String {
        let mut h = Sha1::new();
        h.update(data);
        hex(&h.finish())
    }

    #[test]
    fn sha1_matches_the_fips_vectors() {
        assert_eq!(sha1(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha1(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        // 56 bytes: the padding spills into a second block.
        assert_eq!(
            sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        // Fed in uneven pieces.
        let mut h = Sha1::new();
        let million = vec![b'a'; 1_000_000];
        for piece in million.chunks(999) {
            h.update(piece);
        }
        assert_eq!(hex(&h.finish()), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            &accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid request with `headers` (each ending with CRLF) and the final empty line.
    fn request(headers: &str) -> Vec<u8> {
        format!("GET /moves?ticket=abc.def HTTP/1.1\r\nHost: example.com\r\n{headers}\r\n")
            .into_bytes()
    }

    fn valid() -> Vec<u8> {
        request(&format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        ))
    }

    fn parse(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
        parse_request(buf)
    }

    #[test]
    fn parses_a_valid_request_with_extra_headers_and_frames_after_it() {
        let mut buf = request(&format!(
            "user-agent: test\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
             Origin: https://example.com\r\nsec-websocket-key:{KEY}  \r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Sec-WebSocket-Protocol: moves\r\nsEc-WeBsOcKeT-vErSiOn:\t13\r\nX-Empty:\r\n"
        ));
        let header_len = buf.len();
        buf.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
        let (req, consumed) = parse(&buf).unwrap().unwrap();
        assert_eq!(req.target, "/moves?ticket=abc.def");
        assert_eq!(req.key, KEY);
        assert_eq!(consumed, header_len);
        // Tokens spread over several header lines.
        let split = request(&format!(
            "Upgrade: h2c\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\
             Connection: upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
        ));
        assert!(parse(&split).unwrap().is_some());
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        let buf = valid();
        for n in 0..buf.len() {
            assert_eq!(parse(&buf[..n]), Ok(None), "prefix of {n} bytes");
        }
        assert_eq!(parse(&buf).unwrap().unwrap().1, buf.len());
    }

    fn err(buf: &[u8]) -> HandshakeError {
        parse(buf).expect_err("request should be refused")
    }

    fn with(headers: &[&str]) -> Vec<u8> {
        let mut lines = headers.join("\r\n");
        lines.push_str("\r\n");
        request(&lines)
    }

    const UPGRADE: &str = "Upgrade: websocket";
    const CONNECTION: &str = "Connection: Upgrade";
    const VERSION: &str = "Sec-WebSocket-Version: 13";
    const KEY_HEADER: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn refuses_requests_that_are_not_websocket_upgrades() {
        let text = String::from_utf8(valid()).unwrap();
        let post = text.replacen("GET", "POST", 1);
        assert_eq!(err(post.as_bytes()), HandshakeError::Method);
        let http10 = text.replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(err(http10.as_bytes()), HandshakeError::HttpVersion);
        let cases: [(&[&str], HandshakeError); 9] = [
            (&[CONNECTION, VERSION, KEY_HEADER], HandshakeError::Upgrade),
            (
                &["Upgrade: h2c", CONNECTION, VERSION, KEY_HEADER],
                HandshakeError::Upgrade,
            ),
            (&[UPGRADE, VERSION, KEY_HEADER], HandshakeError::Connection),
            (
                &[UPGRADE, "Connection: keep-alive", VERSION, KEY_HEADER],
                HandshakeError::Connection,
            ),
            (
                &[UPGRADE, "Connection: upgraded", VERSION, KEY_HEADER],
                HandshakeError::Connection,
            ),
            (&[UPGRADE, CONNECTION, KEY_HEADER], HandshakeError::Version),
            (
                &[UPGRADE, CONNECTION, "Sec-WebSocket-Version: 8", KEY_HEADER],
                HandshakeError::Version,
            ),
            (
                &[
                    UPGRADE,
                    CONNECTION,
                    VERSION,
                    "Sec-WebSocket-Version: 8",
                    KEY_HEADER,
                ],
                HandshakeError::Version,
            ),
            (
                &[
                    UPGRADE,
                    CONNECTION,
                    "Sec-WebSocket-Version: 13, 8",
                    KEY_HEADER,
                ],
                HandshakeError::Version,
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(err(&with(headers)), expected, "{headers:?}");
        }
        assert_eq!(HandshakeError::Version.status(), 426);
        assert!(parse(&with(&[UPGRADE, CONNECTION, VERSION, KEY_HEADER]))
            .unwrap()
            .is_some());
    }

    #[test]
    fn refuses_missing_repeated_or_bad_keys() {
        assert_eq!(
            err(&with(&[UPGRADE, CONNECTION, VERSION])),
            HandshakeError::Key
        );
        let twice = [UPGRADE, CONNECTION, VERSION, KEY_HEADER, KEY_HEADER];
        assert_eq!(err(&with(&twice)), HandshakeError::Key);
        for key in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ=",      // 23 characters
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZR==",     // non-canonical: low bits of the last digit set
            "dGhlIHNhbXBsZSBub2-jZQ==",     // not in the alphabet
            "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 19 bytes
            "dGhlIHNhbXBsZSBub25jZQAA",     // 24 characters, no padding (18 bytes)
        ] {
            let header = format!("Sec-WebSocket-Key: {key}");
            let buf = with(&[UPGRADE, CONNECTION, VERSION, &header]);
            assert_eq!(err(&buf), HandshakeError::Key, "{key:?}");
        }
    }

    #[test]
    fn refuses_malformed_requests() {
        let good = [UPGRADE, CONNECTION, VERSION, KEY_HEADER];
        let cases: &[&[u8]] = &[
            // Request line: extra spaces, missing parts, bad target, not HTTP.
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET / XTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            // Headers: no colon, whitespace before the colon, empty name, obs-fold.
            b"GET / HTTP/1.1\r\nUpgrade websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade : websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\n: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: 1\r\n\tfolded\r\n\r\n",
            b"GET / HTTP/1.1\r\n Upgrade: websocket\r\n\r\n",
            // Bare LF, bare CR, NUL, DEL.
            b"GET / HTTP/1.1\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(
                err(case),
                HandshakeError::Malformed,
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        // Garbage is refused before the header block ends: no waiting for 4 KiB.
        for early in [
            &b"GET / HTTP/1.1\n"[..],
            b"GET / HTTP/1.1\r\nA: \0",
            b"\x16\x03\x01\x02\x00",
            b"GET / HTTP/1.1\r\n ",
        ] {
            assert_eq!(err(early), HandshakeError::Malformed, "{early:?}");
        }
        // Obs-text in a value is tolerated.
        let mut latin = with(&good);
        let after_request_line = latin.iter().position(|&b| b == b'\n').unwrap() + 1;
        latin.splice(
            after_request_line..after_request_line,
            b"X-Name: caf\xe9\r\n".iter().copied(),
        );
        assert!(parse(&latin).unwrap().is_some());
    }

    #[test]
    fn the_header_block_is_capped_at_4_kib() {
        let base = valid();
        // Pad with one header so that the block is exactly `total` bytes long.
        let padded = |total: usize| {
            let filler = total - base.len() - "X-Pad: \r\n".len();
            let mut buf = base[..base.len() - 2].to_vec();
            buf.extend_from_slice(format!("X-Pad: {}\r\n\r\n", "p".repeat(filler)).as_bytes());
            assert_eq!(buf.len(), total);
            buf
        };
        let exact = padded(MAX_REQUEST_BYTES);
        assert_eq!(parse(&exact).unwrap().unwrap().1, MAX_REQUEST_BYTES);
        let mut with_frames = exact.clone();
        with_frames.extend_from_slice(&[0x82; 100]);
        assert_eq!(parse(&with_frames).unwrap().unwrap().1, MAX_REQUEST_BYTES);
        let over = padded(MAX_REQUEST_BYTES + 1);
        assert_eq!(parse(&over), Err(HandshakeError::TooLarge));
        assert_eq!(parse(&over[..MAX_REQUEST_BYTES - 1]), Ok(None));
        assert_eq!(
            parse(&over[..MAX_REQUEST_BYTES]),
            Err(HandshakeError::TooLarge)
        );
        assert_eq!(HandshakeError::TooLarge.status(), 431);
    }

    #[test]
    fn errors_have_statuses_and_stable_strings() {
        let all = [
            (
                HandshakeError::TooLarge,
                431,
                "request header block too large",
            ),
            (HandshakeError::Malformed, 400, "malformed request"),
            (HandshakeError::Method, 400, "method is not GET"),
            (HandshakeError::HttpVersion, 400, "protocol is not HTTP/1.1"),
            (HandshakeError::Upgrade, 400, "missing Upgrade: websocket"),
            (
                HandshakeError::Connection,
                400,
                "missing Connection: upgrade",
            ),
            (
                HandshakeError::Version,
                426,
                "unsupported Sec-WebSocket-Version",
            ),
            (HandshakeError::Key, 400, "bad Sec-WebSocket-Key"),
        ];
        for (e, status, text) in all {
            assert_eq!(
                (e.status(), e.as_str(), e.to_string()),
                (status, text, text.to_owned())
            );
        }
    }

    #[test]
    fn writes_the_101() {
        assert_eq!(
            std::str::from_utf8(&response_101(KEY)).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn writes_error_responses() {
        let mut out = Vec::new();
        let e = HandshakeError::Version;
        response_error(e.status(), e.as_str(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nContent-Length: 34\r\n\r\n\
             unsupported Sec-WebSocket-Version\n"
        );
        for (status, phrase) in [
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (431, "Request Header Fields Too Large"),
            (503, "Service Unavailable"),
            (599, "Error"),
        ] {
            let mut out = Vec::new();
            response_error(status, "no\r\nX-Injected: 1", &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} {phrase}\r\n")),
                "{text}"
            );
            assert!(
                text.ends_with("\r\nContent-Length: 18\r\n\r\nno  X-Injected: 1\n"),
                "{text}"
            );
            assert!(!text.contains("Sec-WebSocket-Version"));
        }
    }

    // ------------------------------------------------------------------ frames

    const K: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame with first byte `b0` (FIN, RSV, opcode), masked with `key` (or not).
    fn raw_frame(b0: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![b0];
        let masked = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(masked | n as u8),
            n @ 126..=0xffff => {
                out.push(masked | 0x7e);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(masked | 0x7f);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match key {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    /// A masked client frame.
    fn frame(fin: bool, op: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        raw_frame(if fin { FIN | op } else { op }, payload, Some(key))
    }

    /// An event that owns its bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Binary(Vec<u8>),
        Text(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, Vec<u8>),
    }

    impl From<Event<'_>> for Ev {
        fn from(e: Event<'_>) -> Self {
            match e {
                Event::Binary(b) => Self::Binary(b.to_vec()),
                Event::Text(b) => Self::Text(b.to_vec()),
                Event::Ping(b) => Self::Ping(b.to_vec()),
                Event::Pong(b) => Self::Pong(b.to_vec()),
                Event::Close { code, reason } => Self::Close(code, reason.to_vec()),
            }
        }
    }

    /// Feeds `stream` to `dec` in pieces ending at `cuts` (increasing offsets) and at the
    /// end; stops at an error or a Close event. Every other call must consume its piece.
    fn run(dec: &mut Decoder, stream: &[u8], cuts: &[usize]) -> (Vec<Ev>, Option<Close>) {
        let mut events = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([stream.len()].iter()) {
            let mut piece = stream[start..end].to_vec();
            match dec.feed(&mut piece, &mut |e| events.push(Ev::from(e))) {
                Err(close) => return (events, Some(close)),
                Ok(_) if matches!(events.last(), Some(Ev::Close(..))) => return (events, None),
                Ok(n) => assert_eq!(n, piece.len(), "a piece was not consumed whole"),
            }
            start = end;
        }
        (events, None)
    }

    fn whole(dec: &mut Decoder, stream: &[u8]) -> (Vec<Ev>, Option<Close>) {
        run(dec, stream, &[])
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn decoder_state_is_small() {
        let size = std::mem::size_of::<Decoder>();
        assert!(size <= 64, "Decoder is {size} bytes");
        #[cfg(target_pointer_width = "64")]
        assert_eq!(size, 56);
        let mut dec = Decoder::default();
        assert!(dec.is_idle() && !dec.is_ended());
        assert_eq!(dec.buffered(), 0);
        let mut secret = frame(true, OP_BINARY, b"secret", K)[..9].to_vec();
        assert_eq!(dec.feed(&mut secret, &mut |_| panic!()), Ok(9));
        let debug = format!("{dec:?}");
        assert!(
            debug.contains("buffered_len: 3") && !debug.contains("115"),
            "{debug}"
        );
    }

    #[test]
    fn unmask_matches_a_bytewise_xor_at_every_length() {
        for len in 0..40 {
            let data = bytes(len);
            let mut fast = data.clone();
            unmask(&mut fast, K);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ K[i % 4]).collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn delivers_single_frames_of_every_length_form_in_place() {
        for len in [0, 1, 7, 8, 125, 126, 127, 65_535, 65_536, 70_001, 1 << 20] {
            let payload = bytes(len);
            let mut input = frame(true, OP_BINARY, &payload, K);
            let header = input.len() - len;
            assert_eq!(
                header,
                [6, 8, 14][usize::from(len > 125) + usize::from(len > 65_535)]
            );
            let range = input.as_ptr_range();
            let mut dec = Decoder::new(1 << 20, false);
            let mut seen = 0;
            let consumed = dec.feed(&mut input, &mut |e| {
                let Event::Binary(p) = e else { panic!("{e:?}") };
                assert_eq!(p, &payload[..]);
                // Zero copy: the payload is a slice of the input.
                assert!(len == 0 || range.contains(&p.as_ptr()));
                seen += 1;
            });
            assert_eq!((consumed, seen), (Ok(header + len), 1));
            assert!(dec.is_idle());
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn reassembles_fragments_around_control_frames() {
        let mut stream = frame(false, OP_BINARY, b"ab", K);
        stream.extend(frame(true, OP_PING, b"p", [1, 2, 3, 4]));
        stream.extend(frame(false, OP_CONTINUATION, b"", K));
        stream.extend(frame(false, OP_CONTINUATION, b"cd", [9, 9, 9, 9]));
        stream.extend(frame(true, OP_PONG, b"", K));
        stream.extend(frame(true, OP_CONTINUATION, b"ef", K));
        stream.extend(frame(true, OP_BINARY, b"next", K));
        let mut dec = Decoder::new(6, false);
        let (events, err) = whole(&mut dec, &stream);
        assert_eq!(err, None);
        assert_eq!(
            events,
            [
                Ev::Ping(b"p".to_vec()),
                Ev::Pong(vec![]),
                Ev::Binary(b"abcdef".to_vec()),
                Ev::Binary(b"next".to_vec()),
            ]
        );
        // The message buffer is gone once the message is out.
        assert!(dec.is_idle());
        assert_eq!(dec.buffered(), 0);
        // A frame split across inputs is buffered only until it is complete.
        let big = frame(true, OP_BINARY, &bytes(300), K);
        let mut dec = Decoder::new(300, false);
        let (events, err) = run(&mut dec, &big, &[3, 100]);
        assert_eq!((events, err), (vec![Ev::Binary(bytes(300))], None));
        assert_eq!(dec.buffered(), 0);
        let mut first = big[..100].to_vec();
        assert_eq!(dec.feed(&mut first, &mut |_| panic!()), Ok(100));
        // 8 header bytes, 92 of payload.
        assert!(!dec.is_idle() && dec.buffered() >= 92);
    }

    /// A message or control frame split across reads never leaves the buffer's capacity
    /// past `max_message` plus one control frame (a vector's doubling did: 85 bytes of a
    /// ping, then 2 more, gave 170 with a 1-byte message limit — found by `fuzz/ws`).
    #[test]
    fn buffer_capacity_stays_within_the_limits() {
        let ping = frame(true, OP_PING, &bytes(112), K);
        let mut dec = Decoder::new(1, false);
        let (head, tail) = ping.split_at(91);
        assert_eq!(dec.feed(&mut head.to_vec(), &mut |_| panic!()), Ok(91));
        assert_eq!(dec.feed(&mut tail[..2].to_vec(), &mut |_| panic!()), Ok(2));
        assert!(
            dec.buffered() <= 1 + MAX_CONTROL_PAYLOAD,
            "{}",
            dec.buffered()
        );
        for max in [1, 125, 126, 1024, 65_536] {
            // A fragmented message at the limit, fed in uneven reads, with a ping between
            // its fragments split too.
            let body = bytes(max);
            let mut wire = frame(false, OP_BINARY, &body[..max / 2], K);
            wire.extend(frame(true, OP_PING, &bytes(125), K));
            wire.extend(frame(true, OP_CONTINUATION, &body[max / 2..], K));
            for step in [1, 7, 61, 600, 5_000] {
                let mut dec = Decoder::new(max, false);
                let mut messages = 0;
                for chunk in wire.chunks(step) {
                    dec.feed(&mut chunk.to_vec(), &mut |e| {
                        messages += usize::from(matches!(e, Event::Binary(_)));
                    })
                    .expect("a valid stream");
                    let cap = dec.buffered();
                    assert!(
                        cap <= max + MAX_CONTROL_PAYLOAD,
                        "max {max} step {step}: {cap}"
                    );
                }
                assert_eq!(messages, 1, "max {max} step {step}");
            }
        }
    }

    #[test]
    fn refuses_text_unless_allowed() {
        let text = frame(true, OP_TEXT, b"hi", K);
        let mut dec = Decoder::new(100, false);
        // Refused from the first two bytes.
        assert_eq!(
            dec.feed(&mut text[..2].to_vec(), &mut |_| panic!()),
            Err(Close::TEXT_NOT_ACCEPTED)
        );
        assert_eq!(Close::TEXT_NOT_ACCEPTED.code, 1003);
        assert!(dec.is_ended());
        let mut dec = Decoder::new(100, true);
        assert_eq!(
            whole(&mut dec, &text),
            (vec![Ev::Text(b"hi".to_vec())], None)
        );
    }

    #[test]
    fn validates_text_as_it_arrives() {
        let text_of = |frames: &[Vec<u8>]| {
            let mut dec = Decoder::new(1000, true);
            whole(&mut dec, &frames.concat())
        };
        let s = "h\u{e9}llo \u{20ac} \u{1d11e}";
        assert_eq!(
            text_of(&[frame(true, OP_TEXT, s.as_bytes(), K)]),
            (vec![Ev::Text(s.as_bytes().to_vec())], None)
        );
        // "€" is E2 82 AC: a code point across three fragments, a ping in between.
        let split = [
            frame(false, OP_TEXT, b"a\xe2", K),
            frame(false, OP_CONTINUATION, b"\x82", K),
            frame(true, OP_PING, b"", K),
            frame(true, OP_CONTINUATION, b"\xacb", K),
        ];
        let euro = "a\u{20ac}b".as_bytes().to_vec();
        assert_eq!(
            text_of(&split),
            (vec![Ev::Ping(vec![]), Ev::Text(euro)], None)
        );
        for bad in [
            &b"\xff"[..],
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"ok\xe2\x82",
        ] {
            let (events, err) = text_of(&[frame(true, OP_TEXT, bad, K)]);
            assert_eq!((events, err), (vec![], Some(Close::BAD_TEXT)), "{bad:?}");
        }
        assert_eq!(Close::BAD_TEXT.code, 1007);
        // A message ending inside a code point.
        let cut = [
            frame(false, OP_TEXT, b"a\xe2", K),
            frame(true, OP_CONTINUATION, b"\x82", K),
        ];
        assert_eq!(text_of(&cut), (vec![], Some(Close::BAD_TEXT)));
        // Fail fast: the first fragment is enough, and so is the start of a frame.
        let mut dec = Decoder::new(1000, true);
        let mut first = frame(false, OP_TEXT, b"ok\xc0\xafmore", K);
        assert_eq!(
            dec.feed(&mut first, &mut |_| panic!()),
            Err(Close::BAD_TEXT)
        );
        let mut dec = Decoder::new(1000, true);
        let long = frame(true, OP_TEXT, &[&b"abc\xff"[..], &[b'x'; 200]].concat(), K);
        assert_eq!(
            dec.feed(&mut long[..12].to_vec(), &mut |_| panic!()),
            Err(Close::BAD_TEXT)
        );
    }

    #[test]
    fn every_protocol_error_has_its_close() {
        let mut cases = vec![
            (
                raw_frame(FIN | 0x40 | OP_BINARY, b"x", Some(K)),
                Close::RESERVED_BITS,
            ),
            (
                raw_frame(FIN | 0x20 | OP_BINARY, b"x", Some(K)),
                Close::RESERVED_BITS,
            ),
            (
                raw_frame(FIN | 0x10 | OP_PING, b"", Some(K)),
                Close::RESERVED_BITS,
            ),
            (raw_frame(FIN | OP_BINARY, b"x", None), Close::UNMASKED),
            (raw_frame(OP_PING, b"", Some(K)), Close::FRAGMENTED_CONTROL),
            (
                raw_frame(OP_CLOSE, &[3, 232], Some(K)),
                Close::FRAGMENTED_CONTROL,
            ),
            (frame(true, OP_PING, &[0; 126], K), Close::CONTROL_TOO_LONG),
            (
                frame(true, OP_PONG, &[0; 65_536], K),
                Close::CONTROL_TOO_LONG,
            ),
            (frame(true, OP_CONTINUATION, b"x", K), Close::NO_MESSAGE),
            (frame(false, OP_CONTINUATION, b"x", K), Close::NO_MESSAGE),
            (
                [
                    frame(false, OP_BINARY, b"a", K),
                    frame(true, OP_BINARY, b"b", K),
                ]
                .concat(),
                Close::MESSAGE_OPEN,
            ),
            (
                [
                    frame(false, OP_BINARY, b"a", K),
                    frame(false, OP_TEXT, b"b", K),
                ]
                .concat(),
                Close::MESSAGE_OPEN,
            ),
            (frame(true, OP_CLOSE, &[3], K), Close::CLOSE_ONE_BYTE),
            (
                frame(true, OP_CLOSE, b"\x03\xe8\xff", K),
                Close::BAD_CLOSE_REASON,
            ),
            (
                vec![FIN | OP_BINARY, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Close::LENGTH_HIGH_BIT,
            ),
        ];
        for op in (3..=7).chain(0xb..=0xf) {
            cases.push((frame(true, op, b"", K), Close::UNKNOWN_OPCODE));
        }
        for code in [
            0u16, 1, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000,
            65_535,
        ] {
            cases.push((
                frame(true, OP_CLOSE, &code.to_be_bytes(), K),
                Close::BAD_CLOSE_CODE,
            ));
        }
        for (stream, expected) in cases {
            let mut dec = Decoder::new(100, true);
            let (_, err) = whole(&mut dec, &stream);
            assert_eq!(err, Some(expected), "{stream:x?}");
            let code = if expected == Close::BAD_CLOSE_REASON {
                1007
            } else {
                1002
            };
            assert_eq!(expected.code, code);
            // The stream is over.
            assert!(dec.is_ended() && dec.buffered() == 0);
            assert_eq!(
                dec.feed(&mut frame(true, OP_PING, b"", K), &mut |_| panic!()),
                Err(Close::ENDED)
            );
        }
    }

    #[test]
    fn delivers_valid_close_frames_and_stops() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("bye \u{1f44b}".as_bytes());
            let mut input = frame(true, OP_CLOSE, &payload, K);
            let close_len = input.len();
            input.extend(frame(true, OP_BINARY, b"ignored", K));
            let mut dec = Decoder::new(100, false);
            let mut events = Vec::new();
            assert_eq!(
                dec.feed(&mut input, &mut |e| events.push(Ev::from(e))),
                Ok(close_len)
            );
            assert_eq!(events, [Ev::Close(Some(code), payload[2..].to_vec())]);
            assert!(dec.is_ended());
            assert_eq!(dec.feed(&mut [], &mut |_| panic!()), Err(Close::ENDED));
        }
        let mut dec = Decoder::new(100, false);
        let empty = frame(true, OP_CLOSE, b"", K);
        assert_eq!(
            whole(&mut dec, &empty),
            (vec![Ev::Close(None, vec![])], None)
        );
        // A close inside a fragmented message ends it; split, it still ends the stream.
        let mut dec = Decoder::new(100, false);
        let stream = [
            frame(false, OP_BINARY, b"a", K),
            frame(true, OP_CLOSE, b"\x03\xe8", K),
        ]
        .concat();
        assert_eq!(
            run(&mut dec, &stream, &[9]),
            (vec![Ev::Close(Some(1000), vec![])], None)
        );
        assert!(dec.is_ended() && dec.buffered() == 0);
    }

    #[test]
    fn checks_the_message_limit_from_the_header() {
        // 2^40 bytes announced, no mask key, no payload: refused at once, nothing buffered.
        for len in [1u64 << 40, 1 << 62, (1 << 63) - 1, 1001] {
            let mut header = vec![FIN | OP_BINARY, 0x80 | 0x7f];
            header.extend_from_slice(&len.to_be_bytes());
            let mut dec = Decoder::new(1000, false);
            assert_eq!(
                dec.feed(&mut header, &mut |_| panic!()),
                Err(Close::TOO_BIG)
            );
            assert_eq!(dec.buffered(), 0);
        }
        assert_eq!(Close::TOO_BIG.code, 1009);
        let mut dec = Decoder::new(1000, false);
        assert_eq!(
            dec.feed(
                &mut [FIN | OP_BINARY, 0x80 | 0x7e, 0x03, 0xe9],
                &mut |_| panic!()
            ),
            Err(Close::TOO_BIG)
        );
        // Exactly the limit passes, whole or fragmented; one byte more across fragments fails
        // at the header of the fragment that crosses it.
        let mut dec = Decoder::new(1000, false);
        assert_eq!(
            whole(&mut dec, &frame(true, OP_BINARY, &bytes(1000), K)).0,
            [Ev::Binary(bytes(1000))]
        );
        let ok = [
            frame(false, OP_BINARY, &bytes(600), K),
            frame(true, OP_CONTINUATION, &bytes(400), K),
        ];
        assert_eq!(whole(&mut dec, &ok.concat()).0.len(), 1);
        let mut first = frame(false, OP_BINARY, &bytes(600), K);
        assert_eq!(dec.feed(&mut first, &mut |_| panic!()), Ok(first.len()));
        let mut over = frame(true, OP_CONTINUATION, &bytes(401), K)[..4].to_vec();
        assert_eq!(dec.feed(&mut over, &mut |_| panic!()), Err(Close::TOO_BIG));
        // Control frames are not messages: a limit of 0 still lets pings through.
        let mut dec = Decoder::new(0, false);
        let pings = [
            frame(true, OP_PING, &[1; 125], K),
            frame(true, OP_BINARY, b"", K),
        ]
        .concat();
        assert_eq!(
            whole(&mut dec, &pings),
            (vec![Ev::Ping(vec![1; 125]), Ev::Binary(vec![])], None)
        );
    }

    /// Several frames of every kind, text included, ending with a Close.
    fn mixed_stream(big: usize) -> Vec<u8> {
        [
            frame(true, OP_BINARY, b"one", K),
            frame(true, OP_BINARY, &bytes(big), [0xde, 0xad, 0xbe, 0xef]),
            frame(false, OP_TEXT, "\u{e9}t\u{e9} \u{2603}".as_bytes(), K),
            frame(true, OP_PING, b"ping!", [0, 0, 0, 0]),
            frame(false, OP_CONTINUATION, b"", K),
            frame(true, OP_PONG, &bytes(125), K),
            frame(true, OP_CONTINUATION, "\u{1f600}".as_bytes(), [1, 2, 3, 4]),
            frame(true, OP_BINARY, b"", K),
            frame(true, OP_TEXT, "\u{10ffff}".as_bytes(), K),
            frame(true, OP_CLOSE, b"\x0f\xa0done", K),
        ]
        .concat()
    }

    #[test]
    fn a_stream_split_anywhere_gives_the_same_events() {
        let stream = mixed_stream(300);
        let expected = whole(&mut Decoder::new(1000, true), &stream);
        assert_eq!(expected.0.len(), 8);
        assert_eq!(expected.0[7], Ev::Close(Some(4000), b"done".to_vec()));
        assert_eq!(expected.1, None);
        for cut in 0..=stream.len() {
            assert_eq!(
                run(&mut Decoder::new(1000, true), &stream, &[cut]),
                expected,
                "cut at {cut}"
            );
        }
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            run(&mut Decoder::new(1000, true), &stream, &every),
            expected
        );
        // The 64-bit length form, byte by byte and cut around its header.
        let stream = mixed_stream(70_000);
        let expected = whole(&mut Decoder::new(70_000, true), &stream);
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            run(&mut Decoder::new(70_000, true), &stream, &every),
            expected
        );
        for cut in (0..40).chain(70_000..70_060) {
            assert_eq!(
                run(&mut Decoder::new(70_000, true), &stream, &[cut]),
                expected,
                "cut at {cut}"
            );
        }
    }

    /// Property: random valid streams (every frame kind, fragments at random byte
    /// positions, text cut mid code point, control frames between fragments) cut at random
    /// points give the events they encode, as they do fed whole.
    #[test]
    fn prop_random_streams_cut_anywhere_decode_to_their_messages() {
        let mut rng = crate::testutil::Rng::new(0x0005_eed5_0c4e);
        for _ in 0..3_000 {
            let (stream, expected) = random_stream(&mut rng);
            let mut cuts: Vec<usize> = (0..rng.below(8))
                .map(|_| rng.below(stream.len() as u64 + 1) as usize)
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                whole(&mut Decoder::new(1 << 17, true), &stream),
                (expected.clone(), None)
            );
            assert_eq!(
                run(&mut Decoder::new(1 << 17, true), &stream, &cuts),
                (expected, None),
                "cuts {cuts:?}"
            );
        }
    }

    fn random_len(rng: &mut crate::testutil::Rng) -> usize {
        match rng.below(20) {
            0 => 126 + rng.below(500) as usize,
            1 => 65_530 + rng.below(10) as usize,
            _ => rng.below(40) as usize,
        }
    }

    fn random_text(rng: &mut crate::testutil::Rng, len: usize) -> Vec<u8> {
        const CHARS: [char; 6] = ['a', ' ', '\u{e9}', '\u{20ac}', '\u{1d11e}', '\u{10ffff}'];
        let mut s = String::new();
        while s.len() < len {
            s.push(CHARS[rng.below(6) as usize]);
        }
        s.into_bytes()
    }

    fn random_control(rng: &mut crate::testutil::Rng, out: &mut Vec<u8>, events: &mut Vec<Ev>) {
        let payload = bytes(rng.below(126) as usize);
        let key = (rng.next() as u32).to_le_bytes();
        if rng.below(2) == 0 {
            out.extend(frame(true, OP_PING, &payload, key));
            events.push(Ev::Ping(payload));
        } else {
            out.extend(frame(true, OP_PONG, &payload, key));
            events.push(Ev::Pong(payload));
        }
    }

    fn random_stream(rng: &mut crate::testutil::Rng) -> (Vec<u8>, Vec<Ev>) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        for _ in 0..=rng.below(5) {
            let key = (rng.next() as u32).to_le_bytes();
            match rng.below(4) {
                0 => random_control(rng, &mut out, &mut events),
                kind => {
                    let text = kind == 1;
                    let len = random_len(rng);
                    let message = if text {
                        random_text(rng, len)
                    } else {
                        bytes(len)
                    };
                    // Cut into fragments at random byte positions, mid code point included.
                    let mut cuts: Vec<usize> = (0..rng.below(4))
                        .map(|_| rng.below(message.len() as u64 + 1) as usize)
                        .collect();
                    cuts.sort_unstable();
                    cuts.push(message.len());
                    let mut start = 0;
                    for (i, &end) in cuts.iter().enumerate() {
                        let last = i + 1 == cuts.len();
                        let op = match (i, text) {
                            (0, true) => OP_TEXT,
                            (0, false) => OP_BINARY,
                            _ => OP_CONTINUATION,
                        };
                        out.extend(frame(last, op, &message[start..end], key));
                        if !last && rng.below(3) == 0 {
                            random_control(rng, &mut out, &mut events);
                        }
                        start = end;
                    }
                    events.push(if text {
                        Ev::Text(message)
                    } else {
                        Ev::Binary(message)
                    });
                }
            }
        }
        if rng.below(2) == 0 {
            out.extend(frame(true, OP_CLOSE, b"\x03\xe8", K));
            events.push(Ev::Close(Some(1000), vec![]));
        }
        (out, events)
    }

    /// A server frame as a client would send it: mask bit set, key inserted, payload
    /// masked.
    fn as_client(server: &[u8], key: [u8; 4]) -> Vec<u8> {
        let at = match server[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let mut out = server[..at].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        out.extend(
            server[at..]
                .iter()
                .zip(key.iter().cycle())
                .map(|(b, k)| b ^ k),
        );
        out
    }

    #[test]
    fn encodes_unmasked_final_frames() {
        let mut header = [0; 10];
        for (len, expected) in [
            (0usize, &[0x82, 0][..]),
            (125, &[0x82, 125]),
            (126, &[0x82, 126, 0, 126]),
            (65_535, &[0x82, 126, 0xff, 0xff]),
            (65_536, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let n = encode_header(Opcode::Binary, len, &mut header);
            assert_eq!(&header[..n], expected, "len {len}");
        }
        for (opcode, b0) in [
            (Opcode::Text, 0x81),
            (Opcode::Close, 0x88),
            (Opcode::Ping, 0x89),
            (Opcode::Pong, 0x8a),
        ] {
            assert_eq!((encode_header(opcode, 3, &mut header), header[0]), (2, b0));
        }
        // What the encoder writes, masked, decodes back.
        let mut out = Vec::new();
        encode_frame(Opcode::Binary, &bytes(70_000), &mut out);
        encode_frame(Opcode::Ping, b"hb", &mut out);
        assert_eq!(out.len(), 10 + 70_000 + 4);
        let mut stream = as_client(&out[..70_010], K);
        stream.extend(as_client(&out[70_010..], K));
        let events = whole(&mut Decoder::new(1 << 20, false), &stream);
        assert_eq!(
            events,
            (
                vec![Ev::Binary(bytes(70_000)), Ev::Ping(b"hb".to_vec())],
                None
            )
        );
    }

    #[test]
    fn encodes_close_frames_within_125_bytes() {
        let mut out = Vec::new();
        encode_close(CLOSE_NORMAL, "", &mut out);
        assert_eq!(out, [0x88, 2, 0x03, 0xe8]);
        let close = Close::TOO_BIG;
        let mut out = Vec::new();
        encode_close(close.code, close.reason, &mut out);
        let events = whole(&mut Decoder::default(), &as_client(&out, K));
        assert_eq!(
            events.0,
            [Ev::Close(Some(1009), b"message too big".to_vec())]
        );
        // Cut on a character boundary: 61 two-byte characters fit in 123 bytes, 62 do not.
        let long = "\u{e9}".repeat(100);
        let mut out = Vec::new();
        encode_close(CLOSE_GOING_AWAY, &long, &mut out);
        assert_eq!(out.len(), 2 + 2 + 122);
        let events = whole(&mut Decoder::default(), &as_client(&out, K));
        assert_eq!(
            events.0,
            [Ev::Close(Some(1001), "\u{e9}".repeat(61).into_bytes())]
        );
        for reason in [
            Close::RESERVED_BITS,
            Close::UNKNOWN_OPCODE,
            Close::UNMASKED,
            Close::FRAGMENTED_CONTROL,
            Close::CONTROL_TOO_LONG,
            Close::NO_MESSAGE,
            Close::MESSAGE_OPEN,
            Close::LENGTH_HIGH_BIT,
            Close::CLOSE_ONE_BYTE,
            Close::BAD_CLOSE_CODE,
            Close::TEXT_NOT_ACCEPTED,
            Close::BAD_TEXT,
            Close::BAD_CLOSE_REASON,
            Close::TOO_BIG,
            Close::ENDED,
        ] {
            assert!(reason.reason.is_ascii() && reason.reason.len() <= 123);
        }
    }
}
