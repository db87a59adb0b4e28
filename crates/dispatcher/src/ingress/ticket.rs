//! Tickets (filled in next).
