//! A real Faultline broker for the `rdkafka_*` tests: started on 127.0.0.1 with a free port and
//! a temporary data directory, driven by librdkafka (the `rdkafka` crate), stopped on drop.
//!
//! The broker runs on its own tokio runtime; the tests themselves are plain blocking `#[test]`s
//! that use librdkafka's polling clients (`BaseProducer`, `BaseConsumer`) and hand the admin
//! client's futures to [`TestBroker::block_on`]. Every wait is bounded by [`WAIT`].
//!
//! [`run_child_broker_if_asked`] is the other half of the self-exec trick that the crash test
//! uses to get a broker it can SIGKILL: the test binary re-runs itself as the broker process.

#![allow(dead_code)] // each test file uses a different part of this module

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use std::sync::Mutex;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The bound on every wait in these tests: generous, so a slow shared machine is not a failure,
/// but finite, so a hang is one.
pub const WAIT: Duration = Duration::from_secs(30);

/// A broker running in this process until dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stopped: Option<std::sync::mpsc::Receiver<()>>,
}

impl TestBroker {
    /// A broker with the default configuration (topic auto-creation on).
    pub fn start() -> TestBroker {
        TestBroker::start_with(|_| {})
    }

    /// A broker whose configuration `adjust` changes first.
    pub fn start_with(adjust: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut config = BrokerConfig {
            listen: addr.to_string(),
            data_dir: dir.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        adjust(&mut config);
        let broker = runtime
            .block_on(Broker::open(
                config,
                Arc::new(FileDisk::new()),
                Arc::new(SystemClock),
            ))
            .expect("broker opens");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            broker::server::serve(Arc::clone(&broker), listener, async {
                let _ = stop_rx.await;
            })
            .await;
            broker.shutdown().await;
            let _ = stopped_tx.send(());
        });
        TestBroker {
            addr,
            dir,
            runtime: Some(runtime),
            stop: Some(stop_tx),
            stopped: Some(stopped_rx),
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Runs a future (an admin request) to completion on the broker's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        let runtime = self.runtime.as_ref().expect("running");
        runtime.block_on(async {
            tokio::time::timeout(WAIT, future)
                .await
                .expect("admin request timed out")
        })
    }

    /// Client settings every test client starts from.
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.bootstrap())
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().expect("admin client")
    }

    /// Creates a topic through CreateTopics and waits for the answer.
    pub fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let admin = self.admin();
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let results = self
            .block_on(
                admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(WAIT))),
            )
            .expect("CreateTopics request");
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
    }

    /// Stops accepting, drains connections, closes the logs. Idempotent.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            // Clients may still hold connections open; bounded like everything else.
            let _ = stopped.recv_timeout(WAIT);
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        // A test that fails should fail within WAIT, not after librdkafka's default minutes.
        .set("message.timeout.ms", "20000")
        .set("socket.timeout.ms", "10000")
        .set("topic.metadata.refresh.interval.ms", "1000");
    config
}

/// Where a record went, or why it did not: what librdkafka's delivery report says.
pub type Delivered = Result<(i32, i64), KafkaError>;

/// A producer context that keeps every delivery report, by the index given at send time.
#[derive(Default)]
pub struct Recorder {
    reports: Mutex<Vec<(usize, Delivered)>>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let report = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        self.reports.lock().unwrap().push((*index, report));
    }
}

pub type TestProducer = BaseProducer<Recorder>;

/// A producer with `settings` on top of [`client_config`].
pub fn producer(bootstrap: &str, settings: &[(&str, &str)]) -> TestProducer {
    let mut config = client_config(bootstrap);
    config.set("linger.ms", "5");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config
        .create_with_context(Recorder::default())
        .expect("producer")
}

/// One record to send; `partition: None` lets the producer's partitioner choose.
#[derive(Clone, Debug, Default)]
pub struct Outgoing {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

/// Sends `records` in order and waits for every delivery report; the reports come back in
/// `records`' order.
pub fn send_all(producer: &TestProducer, topic: &str, records: &[Outgoing]) -> Vec<Delivered> {
    enqueue(producer, topic, records, 0);
    producer
        .flush(WAIT)
        .expect("every record acknowledged or failed within WAIT");
    let reports = take_reports(producer);
    assert_eq!(
        reports.len(),
        records.len(),
        "one delivery report per record"
    );
    reports.into_iter().map(|(_, report)| report).collect()
}

/// Hands `records` to the producer without waiting; record `i`'s delivery report carries the
/// index `first_index + i`.
pub fn enqueue(producer: &TestProducer, topic: &str, records: &[Outgoing], first_index: usize) {
    for (i, r) in records.iter().enumerate() {
        let index = first_index + i;
        let mut headers = OwnedHeaders::new();
        for (key, value) in &r.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8], Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(index)).headers(headers);
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if let Some(t) = r.timestamp {
            record = record.timestamp(t);
        }
        let deadline = Instant::now() + WAIT;
        let mut pending = record;
        // A full local queue is not an error: serve delivery reports and retry.
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    producer.poll(Duration::from_millis(10));
                    pending = back;
                }
                Err((e, _)) => panic!("enqueueing record {index}: {e}"),
            }
        }
    }
}

/// The delivery reports received so far (serve them with `producer.poll` or `flush`), by index.
pub fn take_reports(producer: &TestProducer) -> Vec<(usize, Delivered)> {
    let mut reports = std::mem::take(&mut *producer.context().reports.lock().unwrap());
    reports.sort_by_key(|(index, _)| *index);
    reports
}

/// Sends `records` and insists every one was acknowledged; returns (partition, offset) each.
pub fn send_ok(producer: &TestProducer, topic: &str, records: &[Outgoing]) -> Vec<(i32, i64)> {
    send_all(producer, topic, records)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("record {i} to {topic}: {e}")))
        .collect()
}

/// A consumer without a group (plain `assign`), reading from wherever it is told.
pub fn consumer(bootstrap: &str) -> BaseConsumer {
    let mut config = client_config(bootstrap);
    config
        // librdkafka's assign() needs a group handle, though nothing is ever committed and the
        // group coordinator is never asked for anything.
        .set("group.id", "faultline-rdkafka-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("enable.partition.eof", "false");
    config.create().expect("consumer")
}

/// Reads `count` records of `topic`/`partition` starting at `from`, within [`WAIT`].
pub fn read(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
) -> Vec<OwnedMessage> {
    let consumer = consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from))
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + WAIT;
    let mut records = Vec::with_capacity(count);
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "read {} of {count} records of {topic}-{partition} from offset {from} within {WAIT:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => records.push(message.detach()),
            Some(Err(e)) => panic!("consuming {topic}-{partition}: {e}"),
        }
    }
    records
}

/// Reads a partition from its log start up to its current high watermark. Offsets may have
/// gaps (an unclean restart skips the offsets it may have handed out before the crash), so this
/// reads until the record just below the high watermark, not a number of records.
pub fn read_all(bootstrap: &str, topic: &str, partition: i32) -> Vec<OwnedMessage> {
    let (low, high) = watermarks(bootstrap, topic, partition);
    let mut records = Vec::new();
    if low == high {
        return records;
    }
    let consumer = consumer(bootstrap);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(low))
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + WAIT;
    while records
        .last()
        .is_none_or(|m: &OwnedMessage| m.offset() < high - 1)
    {
        assert!(
            Instant::now() < deadline,
            "read {topic}-{partition} up to its high watermark {high} within {WAIT:?}: got to {:?}",
            records.last().map(|m: &OwnedMessage| m.offset())
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => records.push(message.detach()),
            Some(Err(e)) => panic!("consuming {topic}-{partition}: {e}"),
        }
    }
    records
}

/// (log start offset, high watermark) of a partition, from ListOffsets.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    consumer(bootstrap)
        .fetch_watermarks(topic, partition, WAIT)
        .expect("ListOffsets for the watermarks")
}

/// A record's headers as (key, value) pairs, in order, duplicates kept.
pub fn headers_of(message: &impl Message) -> Vec<(String, Option<Vec<u8>>)> {
    match message.headers() {
        None => Vec::new(),
        Some(headers) => headers
            .iter()
            .map(|h: Header<'_, &[u8]>| (h.key.to_string(), h.value.map(|v| v.to_vec())))
            .collect(),
    }
}

/// A fresh topic name, so tests sharing a broker never collide.
pub fn topic_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The environment variable that turns a test binary into a broker process: `PORT:DATA_DIR`.
pub const CHILD_BROKER_ENV: &str = "FAULTLINE_CHILD_BROKER";

/// If [`CHILD_BROKER_ENV`] is set, runs a broker on that port and directory until the process
/// is killed; otherwise returns at once. Called by a `#[test]` the parent runs with `--exact`.
pub fn run_child_broker_if_asked() {
    let Ok(spec) = std::env::var(CHILD_BROKER_ENV) else {
        return;
    };
    let (port, dir) = spec
        .split_once(':')
        .expect("FAULTLINE_CHILD_BROKER is PORT:DIR");
    let listen = format!("127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        // The parent may restart us on the port the killed broker held: retry the bind briefly.
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(&listen).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("child broker: bind {listen}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("child broker: bind {listen}: {e}"),
            }
        };
        let config = BrokerConfig {
            listen: listen.clone(),
            data_dir: Path::new(dir).to_path_buf(),
            // Transactions a kill left open are aborted soon after their timeout.
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 500,
            ..BrokerConfig::default()
        };
        let broker = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
            .await
            .expect("child broker opens its data directory");
        broker::server::serve(broker, listener, std::future::pending::<()>()).await;
    });
}
