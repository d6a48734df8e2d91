//! `[kafka]`: what `logsieve stream` consumes, where it writes, and the
//! librdkafka settings passed through as they are (TLS, SASL, tuning).
//! Unknown fields are errors naming line and column, like every table.

use std::collections::BTreeMap;
use std::path::Path;

use logsieve_pipeline::config::{parse_toml, ConfigError};
use serde::Deserialize;

/// How a record's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// A JSON object with `source` and `log_message` (other fields kept).
    Jsonl,
    /// The whole value is the message; the source comes from the record's
    /// `source` header, else from `source`.
    Text,
}

impl std::str::FromStr for RecordFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Ok(Self::Jsonl),
            "text" | "txt" => Ok(Self::Text),
            other => Err(format!(
                "unknown record format `{other}` (expected jsonl or text)"
            )),
        }
    }
}

/// Which output partition a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partitioning {
    /// The input record's partition (modulo the output topic's partition
    /// count): each input partition's order holds in the output.
    Same,
    /// librdkafka's partitioner on the record key (order holds per key).
    Key,
}

impl std::str::FromStr for Partitioning {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "same" => Ok(Self::Same),
            "key" => Ok(Self::Key),
            other => Err(format!("unknown partitioning `{other}` (expected same or key)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Input topics.
    pub topics: Vec<String>,
    /// Consumer group id: processes with the same group share the partitions.
    pub group: String,
    /// Topic the labelled records are written to.
    pub output_topic: String,
    /// Dead-letter topic for records that are not valid input (with the
    /// error in the `logsieve.error` header). Without it such records go to
    /// the output topic, unclassified, with the reason in `detail`.
    pub dlq_topic: Option<String>,
    /// How record values are read.
    pub format: RecordFormat,
    /// Source for text records without a `source` header (and JSON objects without one).
    pub source: Option<String>,
    /// Output partition choice.
    pub partitioning: Partitioning,
    /// Stored offsets are committed this often (and on shutdown and on revoke).
    pub commit_interval_ms: u64,
    /// Most records classified together (the cascade's batch).
    pub max_batch: usize,
    /// How long a batch waits to fill once its first record is in.
    pub batch_linger_ms: u64,
    /// How long shutdown and revokes wait for the broker to acknowledge what
    /// is in flight.
    pub flush_timeout_ms: u64,
    /// `/metrics` and `/health` on 127.0.0.1 (or `metrics_host`) at this
    /// port; 0: none.
    pub metrics_port: u16,
    pub metrics_host: String,
    /// librdkafka settings for both clients (`"security.protocol" =
    /// "SASL_SSL"`, `"ssl.ca.location" = …`), applied after logsieve's own.
    pub options: BTreeMap<String, String>,
    /// librdkafka settings for the consumer only.
    pub consumer_options: BTreeMap<String, String>,
    /// librdkafka settings for the producer only.
    pub producer_options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topics: Vec::new(),
            group: "logsieve".into(),
            output_topic: String::new(),
            dlq_topic: None,
            format: RecordFormat::Jsonl,
            source: None,
            partitioning: Partitioning::Same,
            commit_interval_ms: 1000,
            max_batch: 2048,
            batch_linger_ms: 20,
            flush_timeout_ms: 30_000,
            metrics_port: 0,
            metrics_host: "127.0.0.1".into(),
            options: BTreeMap::new(),
            consumer_options: BTreeMap::new(),
            producer_options: BTreeMap::new(),
        }
    }
}

/// The file as this crate sees it: only `[kafka]`.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    kafka: KafkaConfig,
}

impl KafkaConfig {
    /// The `[kafka]` table of the configuration file `text` (read from
    /// `path`); defaults where it is absent.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Ok(parse_toml::<File>(text, path)?.kafka)
    }

    /// What must be set before a run: the reason when something is missing.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("no brokers (--brokers or kafka.brokers)".into());
        }
        if self.topics.is_empty() {
            return Err("no input topic (--topic or kafka.topics)".into());
        }
        if self.group.trim().is_empty() {
            return Err("no consumer group (--group or kafka.group)".into());
        }
        if self.output_topic.trim().is_empty() {
            return Err("no output topic (--output-topic or kafka.output_topic)".into());
        }
        if self.topics.contains(&self.output_topic)
            || self.dlq_topic.as_ref().is_some_and(|d| self.topics.contains(d))
        {
            return Err("the output or dead-letter topic is also an input topic".into());
        }
        if self.max_batch == 0 {
            return Err("kafka.max_batch must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_table_with_pass_through_options() {
        let c = KafkaConfig::from_toml(
            "[model]\nthreshold = 0.7\n[kafka]\nbrokers = \"b:9093\"\ntopics = [\"logs\"]\noutput_topic = \"out\"\nformat = \"text\"\n[kafka.options]\n\"security.protocol\" = \"SASL_SSL\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.brokers, "b:9093");
        assert_eq!(c.format, RecordFormat::Text);
        assert_eq!(c.options["security.protocol"], "SASL_SSL");
        assert_eq!(c.validate(), Ok(()));
        let e = KafkaConfig::from_toml("[kafka]\nbrokrs = \"x\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.toml") && e.contains("line 2") && e.contains("brokrs"),
            "{e}"
        );
        let missing = KafkaConfig::default().validate().unwrap_err();
        assert!(missing.contains("--topic"), "{missing}");
    }
}
