//! The gRPC transport of native ingress: `Ingress.Moves` of `proto/ingress.proto` (package
//! `move_dispatcher.v1`), one bidirectional stream per connection, served by tonic (HTTP/2,
//! no TLS) on the dispatcher's runtime.
//!
//! # A call is a connection
//! The call's metadata carries the ticket (`authorization: Bearer <ticket>`). Before any
//! message is read, the call takes a slot of `max_connections` (shared with WebSocket and
//! TCP; none left: `RESOURCE_EXHAUSTED`, `full`) and its ticket is checked (a bad one:
//! `UNAUTHENTICATED` with the ticket error's reason, `ticket_expired`, …). Then the call is
//! a connection of transport `Grpc`, admitted, fed and closed by the code the other
//! transports share (`server`): each `MoveFrames` holds one or more whole v1 frames, offered
//! to the shard of the ticket's room on the thread that decoded it; each is answered by
//! one `MoveAcks` with the frames accepted and refused (after the frames a full room held
//! back were offered again). `send` and `broadcast` reach the client as `MoveAcks` whose
//! `message` holds the bytes.
//!
//! # The end of a call
//! The client half-closing its side ends the call (`closed`: what is queued goes first,
//! then status `OK`). A close decided by the server ends the call with a status whose
//! message is the close reason's name (see [`status_of`]); for `backpressure` and
//! `shutdown` the status goes before the messages still queued.
//!
//! # The gRPC port's sockets
//! A TCP connection to the gRPC port is not a connection in the `max_connections` sense
//! until it opens a call (HTTP/2 multiplexes calls, and a client may carry several players'
//! calls over one socket), but the sockets themselves are bounded too ([`Socket`]): at most
//! `max_connections` at once, and of one client address at most
//! `max_handshakes_per_address` with no call admitted yet (more are closed at once and
//! counted refused); one that has
//! not had a call admitted within `handshake_timeout_ms` is closed (a client that connects
//! and says nothing, or only fails tickets, holds no file for long); HTTP/2 keepalive pings
//! at `idle_timeout_ms / 2` close a peer that stopped answering; and when the server stops,
//! every socket still open [`STOP_GRACE`] after the GOAWAY is closed, even one whose client
//! never reads (which would otherwise keep its connection task forever).
//!
//! The two messages are derived by hand with `prost` and the service is the few lines of
//! glue `tonic-build` would generate: no build script, no `protoc`. The TypeScript tests
//! load the shipped `proto/ingress.proto` with `@grpc/proto-loader`, which keeps the two in
//! step.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::{Code, Request, Response, Status, Streaming};

use super::server::{CloseReason, Conn, Handshaking, Hub, Intake, Transport};

/// `move_dispatcher.v1.MoveFrames`: what a client sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveFrames {
    /// One or more whole v1 frames, back to back.
    #[prost(bytes = "bytes", tag = "1")]
    pub frames: Bytes,
}

/// `move_dispatcher.v1.MoveAcks`: what the server sends, either the answer to one
/// `MoveFrames` (`message` absent) or an outbound message (`message` present, the counts 0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveAcks {
    /// Frames of the answered `MoveFrames` taken for validation (as `dispatch`'s
    /// `Accepted`: tag and replay checks follow on the shard, counted in `stats()`).
    #[prost(uint32, tag = "1")]
    pub accepted: u32,
    /// Frames of the answered `MoveFrames` refused at once (wrong sender, not a member,
    /// another room, rate limited, …).
    #[prost(uint32, tag = "2")]
    pub refused: u32,
    /// The bytes of one `send` or `broadcast`.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub message: Option<Bytes>,
}

/// The one method's path.
pub const MOVES_PATH: &str = "/move_dispatcher.v1.Ingress/Moves";

/// `MoveAcks` handed to tonic ahead of what the client read: past them, outbound messages
/// wait in the connection's queue (bounded by `max_backpressure_bytes`).
const CHANNEL_DEPTH: usize = 16;

/// Acks waiting for the channel, past which the call reads no more `MoveFrames` (the
/// client's writes then wait on HTTP/2 flow control).
const MAX_ACKS_WAITING: usize = 64;

/// How long the gRPC port's sockets may outlive the server's stop (its GOAWAY) before they
/// are closed regardless.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// Serves `Ingress.Moves` on `listener` until [`Hub::stopped`]; then stops accepting, sends
/// GOAWAY and waits for the calls, which the close ends, and for the sockets, which
/// [`STOP_GRACE`] ends.
pub(super) async fn serve(hub: Arc<Hub>, listener: TcpListener) {
    let (tx, rx) = mpsc::channel::<std::io::Result<Socket>>(64);
    tokio::spawn(accept(Arc::clone(&hub), listener, tx));
    let incoming = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    let service = IngressService {
        hub: Arc::clone(&hub),
    };
    let keepalive = (hub.opts.idle_timeout_ms > 0).then(|| {
        Duration::from_millis(hub.opts.idle_timeout_ms / 2).max(Duration::from_millis(100))
    });
    let mut server = tonic::transport::Server::builder().http2_keepalive_interval(keepalive);
    if let Some(k) = keepalive {
        server = server.http2_keepalive_timeout(Some(k));
    }
    let _ = server
        .serve_with_incoming_shutdown(service, incoming, hub.stopped())
        .await;
}

/// Accepts the gRPC port's sockets until the server stops, each wrapped as a [`Socket`];
/// beyond `max_connections` open at once, or `max_handshakes_per_address` of one address
/// with no call admitted, closes them at once (counted refused).
async fn accept(hub: Arc<Hub>, listener: TcpListener, tx: mpsc::Sender<std::io::Result<Socket>>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            () = hub.stopped() => return,
            a = listener.accept() => a,
        };
        // Out of files, or a connection reset before it was taken: try the next one (after
        // a pause, so that a full file table does not spin this loop).
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Its address's handshakes in flight first: a socket counts as one until a call is
        // admitted on it (one client's silent sockets must not fill the port).
        let peer = stream.peer_addr().ok().map(super::server::canonical);
        let Ok(handshaking) = hub.begin_handshake(peer) else {
            drop(stream);
            continue;
        };
        if open.fetch_add(1, Ordering::AcqRel) >= hub.opts.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            hub.counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let socket = Socket::new(&hub, stream, peer, Slot(Arc::clone(&open)), handshaking);
        if tx.send(Ok(socket)).await.is_err() {
            return;
        }
    }
}

/// One of the `max_connections` places of the gRPC port's sockets, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a socket's calls tell it — one was admitted (its handshake deadline is over) — and
/// learn of it: the client's address. Handed to every request of the socket as its connect
/// info.
#[derive(Clone, Debug, Default)]
pub struct SocketInfo {
    admitted: Arc<AtomicBool>,
    peer: Option<std::net::SocketAddr>,
}

/// A TCP connection of the gRPC port, which ends (reads and writes fail) when no call was
/// admitted on it within `handshake_timeout_ms`, or [`STOP_GRACE`] after the server stopped.
struct Socket {
    io: TcpStream,
    info: SocketInfo,
    /// Until a call is admitted.
    handshake: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Its place among its address's handshakes in flight, until a call is admitted.
    handshaking: Option<Handshaking>,
    /// The server's stop, then the grace.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// An end came: every later read and write fails at once.
    ended: bool,
    _slot: Slot,
    /// For the count of sockets refused (no call admitted in time).
    hub: Arc<Hub>,
}

impl Socket {
    fn new(
        hub: &Arc<Hub>,
        io: TcpStream,
        peer: Option<std::net::SocketAddr>,
        slot: Slot,
        handshaking: Option<Handshaking>,
    ) -> Self {
        let ms = hub.opts.handshake_timeout_ms;
        let stop_hub = Arc::clone(hub);
        Self {
            io,
            info: SocketInfo {
                admitted: Arc::default(),
                peer,
            },
            handshake: (ms > 0).then(|| Box::pin(tokio::time::sleep(Duration::from_millis(ms)))),
            handshaking,
            stop: Box::pin(async move {
                stop_hub.stopped().await;
                tokio::time::sleep(STOP_GRACE).await;
            }),
            ended: false,
            _slot: slot,
            hub: Arc::clone(hub),
        }
    }

    /// Whether the socket must end now; registers `cx` for both ends otherwise.
    fn ending(&mut self, cx: &mut Context<'_>) -> bool {
        // A call admitted: the handshake deadline and the address's place both end.
        if (self.handshake.is_some() || self.handshaking.is_some())
            && self.info.admitted.load(Ordering::Acquire)
        {
            self.handshake = None;
            self.handshaking = None;
        }
        if !self.ended {
            if let Some(h) = self.handshake.as_mut() {
                if h.as_mut().poll(cx).is_ready() {
                    // A slow handshake, as on the other transports: counted refused.
                    self.ended = true;
                    self.hub
                        .counters
                        .refused_connections
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            if !self.ended && self.stop.as_mut().poll(cx).is_ready() {
                self.ended = true;
            }
        }
        self.ended
    }

    fn ended_error() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "gRPC socket closed by the server (no call admitted in time, or the server stopped)",
        )
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.ending(cx) {
            return Poll::Ready(Err(Self::ended_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.ending(cx) {
            return Poll::Ready(Err(Self::ended_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.ending(cx) {
            return Poll::Ready(Err(Self::ended_error()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.ending(cx) {
            return Poll::Ready(Err(Self::ended_error()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Socket {
    type ConnectInfo = SocketInfo;

    fn connect_info(&self) -> SocketInfo {
        self.info.clone()
    }
}

/// The HTTP service: `Moves`, or `UNIMPLEMENTED`.
#[derive(Clone)]
struct IngressService {
    hub: Arc<Hub>,
}

impl Service<http::Request<tonic::body::Body>> for IngressService {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != MOVES_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("move_dispatcher.v1.Ingress has only Moves").into_http())
            });
        }
        let moves = Moves {
            hub: Arc::clone(&self.hub),
        };
        // A MoveFrames of `max_message_bytes` of frames, with its field's tag and length.
        let limit = self.hub.opts.max_message_bytes + 16;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(
                tonic_prost::ProstCodec::<MoveAcks, MoveFrames>::default(),
            )
            .max_decoding_message_size(limit);
            Ok(grpc.streaming(moves, req).await)
        })
    }
}

/// `Moves` itself.
struct Moves {
    hub: Arc<Hub>,
}

impl Service<Request<Streaming<MoveFrames>>> for Moves {
    type Response = Response<Acks>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Status>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Streaming<MoveFrames>>) -> Self::Future {
        let hub = Arc::clone(&self.hub);
        Box::pin(async move { open(hub, req) })
    }
}

/// Admits a call (capacity, then ticket, before any message is read) and starts its task.
fn open(hub: Arc<Hub>, req: Request<Streaming<MoveFrames>>) -> Result<Response<Acks>, Status> {
    if !hub.reserve() {
        return Err(Status::resource_exhausted("full"));
    }
    // After the slot is taken, as the other transports do: either this sees the close, or
    // the close's count of open connections sees this call (and waits for it). Checked
    // first, a close between the check and the slot was missed: the call was let in after
    // `close()` had resolved.
    std::sync::atomic::fence(Ordering::SeqCst);
    if hub.stopping() {
        hub.refuse();
        return Err(Status::unavailable("shutdown"));
    }
    let ticket = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .unwrap_or("");
    let who = match hub.check_ticket(ticket) {
        Ok(who) => who,
        Err(reason) => {
            hub.refuse();
            return Err(Status::unauthenticated(reason));
        }
    };
    let info = req.extensions().get::<SocketInfo>();
    if let Some(info) = info {
        info.admitted.store(true, Ordering::Release);
    }
    let conn = hub.admit(&who, Transport::Grpc, info.and_then(|i| i.peer));
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let end = Arc::new(Mutex::new(None));
    tokio::spawn(call(hub, conn, req.into_inner(), tx, Arc::clone(&end)));
    Ok(Response::new(Acks {
        rx,
        end,
        done: false,
    }))
}

/// The ticket of an `authorization` value (`Bearer <ticket>`, the scheme in any case).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// The status a call ends with when the server closes it: the close reason's name (as
/// `onDisconnect` reports it) as the message. `None`: `OK`.
pub(super) fn status_of(reason: CloseReason) -> Option<Status> {
    Some(match reason {
        CloseReason::Closed => return None,
        CloseReason::Reset => Status::cancelled("reset"),
        CloseReason::Idle => Status::deadline_exceeded("idle"),
        CloseReason::Malformed => Status::invalid_argument("malformed"),
        CloseReason::Refused => Status::permission_denied("refused"),
        CloseReason::Backpressure => Status::resource_exhausted("backpressure"),
        CloseReason::Replaced => Status::aborted("replaced"),
        CloseReason::Shutdown => Status::unavailable("shutdown"),
        CloseReason::TooBig => Status::resource_exhausted("too_big"),
        CloseReason::Kicked => Status::aborted("kicked"),
        CloseReason::Text | CloseReason::Protocol => Status::internal("protocol"),
    })
}

/// How a call's response ends (set by its task before it lets go of the channel).
struct End {
    status: Status,
    /// Before the `MoveAcks` still queued (the client is not reading, or the server goes).
    first: bool,
}

/// The response stream of a call: what its task hands over, then the status it ended with.
pub struct Acks {
    rx: mpsc::Receiver<MoveAcks>,
    end: Arc<Mutex<Option<End>>>,
    done: bool,
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acks")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Acks {
    fn take_end(&mut self, first_only: bool) -> Option<Status> {
        let mut end = self.end.lock().unwrap_or_else(PoisonError::into_inner);
        if first_only && !end.as_ref().is_some_and(|e| e.first) {
            return None;
        }
        end.take().map(|e| e.status)
    }
}

impl Stream for Acks {
    type Item = Result<MoveAcks, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // The task sets the end before it drops the sender, which wakes this stream.
        if let Some(status) = this.take_end(true) {
            this.done = true;
            return Poll::Ready(Some(Err(status)));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(match this.take_end(false) {
                    Some(status) if status.code() == Code::Ok => None,
                    Some(status) => Some(Err(status)),
                    // The task was dropped before it could end the call: the runtime is
                    // shutting down (`dispatcher.close()`).
                    None => Some(Err(Status::unavailable("shutdown"))),
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A call's task: runs it, then ends its response and closes the connection.
async fn call(
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    mut inbound: Streaming<MoveFrames>,
    tx: mpsc::Sender<MoveAcks>,
    end: Arc<Mutex<Option<End>>>,
) {
    let reason = pump(&hub, &conn, &mut inbound, &tx).await;
    let kick = if reason == CloseReason::Kicked {
        hub.take_kick(&conn)
    } else {
        None
    };
    let status = match kick {
        Some(k) => Status::aborted(k.reason()),
        None => status_of(reason).unwrap_or_else(|| Status::new(Code::Ok, "")),
    };
    let first = matches!(reason, CloseReason::Backpressure | CloseReason::Shutdown);
    *end.lock().unwrap_or_else(PoisonError::into_inner) = Some(End { status, first });
    drop(tx);
    drop(inbound);
    hub.leave(&conn, reason);
}

/// The next `MoveAcks` to hand over: acks first, then outbound messages.
fn next_out(hub: &Hub, conn: &Conn, acks: &mut VecDeque<MoveAcks>) -> Option<MoveAcks> {
    acks.pop_front().or_else(|| {
        conn.pop_message(hub).map(|m| MoveAcks {
            accepted: 0,
            refused: 0,
            message: Some(Bytes::from_owner(m)),
        })
    })
}

/// Hands over what the channel takes now; `Err` when the call is gone.
fn push(
    hub: &Hub,
    conn: &Conn,
    tx: &mpsc::Sender<MoveAcks>,
    acks: &mut VecDeque<MoveAcks>,
) -> Result<(), ()> {
    loop {
        let permit = match tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(()),
        };
        match next_out(hub, conn, acks) {
            Some(m) => permit.send(m),
            None => return Ok(()),
        }
    }
}

fn ack(accepted: u32, refused: u32) -> MoveAcks {
    MoveAcks {
        accepted,
        refused,
        message: None,
    }
}

/// Reads `MoveFrames` and hands over `MoveAcks` until the call ends; why it ended.
async fn pump(
    hub: &Hub,
    conn: &Conn,
    inbound: &mut Streaming<MoveFrames>,
    tx: &mpsc::Sender<MoveAcks>,
) -> CloseReason {
    let mut intake = Intake::new(conn.room, conn.player);
    let mut acks: VecDeque<MoveAcks> = VecDeque::new();
    // The counts of the MoveFrames whose frames a full room held back: its ack waits.
    let (mut held_accepted, mut held_refused) = (0_u32, 0_u32);
    loop {
        if push(hub, conn, tx, &mut acks).is_err() {
            return CloseReason::Reset;
        }
        let want_write = !acks.is_empty() || conn.has_outbound();
        let stalled = intake.stalled();
        let reading = !stalled && acks.len() < MAX_ACKS_WAITING;
        tokio::select! {
            biased;
            // Also the idle sweeper's close (`idle`).
            () = conn.notified() => {}
            permit = tx.reserve(), if want_write => match permit {
                Ok(permit) => {
                    if let Some(m) = next_out(hub, conn, &mut acks) {
                        permit.send(m);
                    }
                }
                Err(_) => return CloseReason::Reset,
            },
            () = tokio::time::sleep(Duration::from_millis(1)), if stalled => {
                match intake.retry(hub) {
                    Ok((o, tail)) => {
                        if !tail.is_empty() {
                            // A MoveFrames must hold whole frames.
                            return CloseReason::Malformed;
                        }
                        held_accepted += o.accepted;
                        held_refused += o.refused;
                        if !intake.stalled() {
                            acks.push_back(ack(held_accepted, held_refused));
                            (held_accepted, held_refused) = (0, 0);
                        }
                    }
                    Err(reason) => return reason,
                }
            }
            m = inbound.message(), if reading => match m {
                Ok(Some(MoveFrames { frames })) => {
                    conn.mark_read(hub);
                    hub.counters
                        .bytes_in
                        .fetch_add(frames.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    match intake.offer_or_hold(hub, &frames) {
                        Ok((_, true)) => return CloseReason::Malformed,
                        Ok((o, false)) if intake.stalled() => {
                            (held_accepted, held_refused) = (o.accepted, o.refused);
                        }
                        Ok((o, false)) => acks.push_back(ack(o.accepted, o.refused)),
                        Err(reason) => return reason,
                    }
                }
                Ok(None) => {
                    flush(hub, conn, tx, &mut acks).await;
                    return CloseReason::Closed;
                }
                Err(status) => return reason_of(&status),
            },
        }
        if let Some(reason) = conn.asked_close() {
            return reason;
        }
    }
}

/// Why a call whose inbound stream failed closes.
fn reason_of(status: &Status) -> CloseReason {
    match status.code() {
        // tonic: a message over `max_decoding_message_size`.
        Code::OutOfRange => CloseReason::TooBig,
        // Bytes that are not a `MoveFrames` (tonic-prost), a gRPC message prefix that is
        // not one (a compressed flag without `grpc-encoding`, a flag other than 0 or 1), or
        // a message cut short by the end of the call (tonic's decoder): the client's
        // framing, not the connection's failure. (A reset arrives as an HTTP/2 error.)
        Code::Internal
            if status.message().starts_with("failed to decode")
                || status.message().starts_with("protocol error:")
                || status
                    .message()
                    .starts_with("Unexpected EOF decoding stream") =>
        {
            CloseReason::Malformed
        }
        _ => CloseReason::Reset,
    }
}

/// Hands over what is queued, for at most 200 ms (a client that does not read is not
/// waited for).
async fn flush(hub: &Hub, conn: &Conn, tx: &mpsc::Sender<MoveAcks>, acks: &mut VecDeque<MoveAcks>) {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        if push(hub, conn, tx, acks).is_err() || (acks.is_empty() && !conn.has_outbound()) {
            return;
        }
        match tokio::time::timeout_at(deadline, tx.reserve()).await {
            Ok(Ok(permit)) => {
                if let Some(m) = next_out(hub, conn, acks) {
                    permit.send(m);
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn bearer_takes_the_ticket_of_any_case_scheme() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn messages_match_the_proto_wire_format() {
        // MoveFrames { frames = 1: bytes }
        let m = MoveFrames {
            frames: Bytes::from_static(b"xy"),
        };
        assert_eq!(m.encode_to_vec(), [0x0a, 2, b'x', b'y']);
        // MoveAcks { accepted = 1, refused = 2: uint32; optional message = 3: bytes }
        assert_eq!(ack(3, 1).encode_to_vec(), [0x08, 3, 0x10, 1]);
        let out = MoveAcks {
            message: Some(Bytes::new()),
            ..ack(0, 0)
        };
        // Present though empty: proto3 `optional` keeps presence.
        assert_eq!(out.encode_to_vec(), [0x1a, 0]);
        let back = MoveAcks::decode(&[0x1a_u8, 0][..]).unwrap();
        assert_eq!(back.message, Some(Bytes::new()));
    }

    #[test]
    fn every_close_reason_but_closed_ends_with_an_error_status() {
        assert!(status_of(CloseReason::Closed).is_none());
        let s = status_of(CloseReason::Refused).unwrap();
        assert_eq!((s.code(), s.message()), (Code::PermissionDenied, "refused"));
        let s = status_of(CloseReason::Shutdown).unwrap();
        assert_eq!((s.code(), s.message()), (Code::Unavailable, "shutdown"));
    }
}
