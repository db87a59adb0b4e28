//! Native ingress: clients connect to the data plane itself (WebSocket, TCP, gRPC), prove who
//! they are once with a ticket the control plane minted, and their frames are validated on
//! the thread that read them.
//!
//! - [`ticket`]: the signed, short-lived, single-use tickets (`issueTicket` mints them in
//!   TypeScript);
//! - [`ws`]: RFC 6455 for the server side, sans-IO (handshake parsing, frame decoding and
//!   encoding).

pub mod ticket;
pub mod ws;
