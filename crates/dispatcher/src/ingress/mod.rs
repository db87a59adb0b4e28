//! Native ingress: clients connect to the data plane itself (WebSocket, TCP, gRPC), prove who they
//! are once with a ticket the control plane minted, and their frames are validated on the
//! thread that read them ([`server`] says how).
//!
//! - [`ticket`]: the signed, short-lived, single-use tickets (`issueTicket` mints them in
//!   TypeScript);
//! - [`ws`]: RFC 6455 for the server side, sans-IO (handshake parsing, frame decoding and
//!   encoding);
//! - [`server`]: listeners, connections, outbound queues — and what every transport shares
//!   (admission, frame offering, outbound queue, close);
//! - [`grpc`]: the gRPC transport (`proto/ingress.proto`, served by tonic).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::outbox::Outbox;
use crate::shard::Worker;
use crate::verdict::Verdict;

pub mod grpc;
pub mod server;
pub mod ticket;
pub mod ws;

pub use server::{CloseReason, Ingress, Kick, ListenError, Options, SendOutcome, Transport};

/// What native ingress takes from a running dispatcher (`Core::ingress_parts`).
pub struct Parts {
    /// The shard workers, by shard index (a room's shard is `room % shards`).
    pub workers: Vec<Arc<Mutex<Worker>>>,
    /// Where ingress counts its frames' verdicts (merged into `stats()`).
    pub verdicts: Arc<[AtomicU64; Verdict::COUNT]>,
    /// The dispatcher's runtime.
    pub runtime: tokio::runtime::Handle,
    /// Where connection events go to JavaScript.
    pub outbox: Arc<Outbox>,
    /// The dispatcher's `maxPayload`.
    pub max_payload: usize,
    /// The dispatcher's memory of spent tickets, shared by its listens.
    pub tickets: Arc<Mutex<ticket::Nonces>>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("shards", &self.workers.len())
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}
