//! RFC 6455, server side, sans-IO (filled in next).
