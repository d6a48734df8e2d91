//! `logsieve stream`: classify a Kafka topic with a consumer group, at
//! least once. Kafka's own machinery shares the work (consumer groups,
//! committed offsets); see [`runner`] for the delivery guarantee and
//! [`offsets`] for when an offset may be stored.
//!
//! A crate of its own so that only the `logsieve` binary links librdkafka
//! (built from the bundled sources by `rdkafka-sys`, minutes on 2 cores):
//! the other crates never rebuild it.

pub mod config;
pub mod metrics;
pub mod offsets;
pub mod record;
pub mod runner;

pub use config::{KafkaConfig, Partitioning, RecordFormat};
pub use metrics::Metrics;
pub use runner::{run, RunOptions, StreamError, StreamSummary, ERROR_HEADER, ORIGIN_HEADERS};
