//! Load a file into a topic, one record per line (for benchmarks and
//! trying `logsieve stream` by hand):
//!
//!     cargo run --release -p logsieve-kafka --example produce -- BROKERS TOPIC FILE [--source-header S] [--partitions N]
//!
//! Lines are spread round-robin over the topic's partitions (`--partitions`,
//! default 3), in order within each. `--source-header S` sets the `source`
//! header of every record (for `--format text`). Prints records/s.

use std::io::BufRead;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut pos, mut source, mut partitions) = (Vec::new(), None, 3i32);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--source-header" => source = it.next(),
            "--partitions" => partitions = it.next().and_then(|p| p.parse().ok()).expect("--partitions N"),
            _ => pos.push(a),
        }
    }
    let [brokers, topic, file] = <[String; 3]>::try_from(pos).expect("usage: produce BROKERS TOPIC FILE");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    let input = std::io::BufReader::new(std::fs::File::open(&file).expect("open FILE"));
    let t0 = Instant::now();
    let mut n: u64 = 0;
    for line in input.split(b'\n') {
        let line = line.expect("read");
        let mut rec = BaseRecord::<(), [u8]>::to(&topic)
            .payload(&line[..])
            .partition((n % partitions as u64) as i32);
        if let Some(s) = &source {
            rec = rec.headers(OwnedHeaders::new().insert(Header {
                key: "source",
                value: Some(s.as_str()),
            }));
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        n += 1;
        if n % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{n} records to {topic} in {s:.2} s ({:.0} records/s)",
        n as f64 / s
    );
}
