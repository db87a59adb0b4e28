//! The dispatcher's configuration, validated field by field.

use crate::arena;
use crate::frame;

/// Resolved configuration (validated by the TypeScript layer, re-checked by [`Config::validate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub worker_threads: usize,
    pub shards: usize,
    pub channel_capacity: usize,
    pub arena_bytes: usize,
    pub room_bytes: usize,
    pub max_payload: usize,
    pub max_batch_moves: u32,
    pub pin_cores: Option<Vec<usize>>,
    /// Caps the runtime's blocking pool. Reserved: nothing of the dispatcher runs blocking
    /// work yet (the journal and native ingress will).
    pub max_blocking_threads: usize,
    pub thread_name: String,
    /// Queue depth (moves) at which a shard is reported overloaded; 0 = never.
    pub overload_queue_depth: u64,
    /// Undelivered bytes at which a room is reported overloaded; 0 = never.
    pub overload_room_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            worker_threads: 1,
            shards: 1,
            channel_capacity: 65_536,
            arena_bytes: 8 << 20,
            room_bytes: 256 << 10,
            max_payload: 1024,
            max_batch_moves: 4096,
            pin_cores: None,
            max_blocking_threads: 4,
            thread_name: "move-disp".to_owned(),
            overload_queue_depth: 0,
            overload_room_bytes: 0,
        }
    }
}

/// An option out of range. Names the field; never carries data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "options.{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks every field against the ranges documented in `src/types.ts`.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max_frame = frame::FRAME_OVERHEAD + self.max_payload;
        let checks: [(&'static str, usize, usize, usize); 8] = [
            ("workerThreads", self.worker_threads, 1, 64),
            ("shards", self.shards, 1, 256),
            ("channelCapacity", self.channel_capacity, 1, 1 << 24),
            ("maxPayload", self.max_payload, 0, frame::MAX_WIRE_PAYLOAD),
            (
                "arenaBytes",
                self.arena_bytes,
                (64 << 10).max(2 * (arena::record_size(max_frame) + 8)),
                1 << 30,
            ),
            (
                "roomBytes",
                self.room_bytes,
                (4 << 10).max(max_frame),
                64 << 20,
            ),
            ("maxBatchMoves", self.max_batch_moves as usize, 1, 1 << 20),
            ("maxBlockingThreads", self.max_blocking_threads, 1, 512),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(ConfigError {
                    field,
                    message: format!("must be in {min}..={max}, got {value}"),
                });
            }
        }
        if self.thread_name.is_empty() || self.thread_name.contains('\0') {
            return Err(ConfigError {
                field: "threadName",
                message: "must be a non-empty string without NUL".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = Config {
            channel_capacity: 0,
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "channelCapacity");
        let bad = Config {
            room_bytes: 100,
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "roomBytes");
        let bad = Config {
            thread_name: String::new(),
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "threadName");
    }
}
