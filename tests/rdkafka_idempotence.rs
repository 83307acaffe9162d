#![cfg(not(madsim))]
// Real sockets, threads and wall-clock time against a real librdkafka: the determinism rules in
// clippy.toml are for code that also runs under the simulator, which this never does.
#![allow(clippy::disallowed_methods)]
//! The idempotent producer (`enable.idempotence=true`) leaves exactly one copy of each record,
//! in order, even when connections break while produce requests are in flight.
//!
//! The bug this guards against: a broker that appends a retried batch a second time (lost
//! response, client retries, broker does not check the producer id and sequence), or refuses
//! the retry with an error that makes librdkafka raise a fatal idempotence error.
//!
//! Connections are cut by a small TCP proxy in front of the broker, which the broker advertises
//! as its address so every client connection goes through it.

mod common_broker;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common_broker::*;
use rdkafka::message::Message;

/// A TCP proxy to `upstream` whose connections can all be cut at once.
struct CuttingProxy {
    addr: std::net::SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(listener: TcpListener, upstream: std::net::SocketAddr) -> CuttingProxy {
        let addr = listener.local_addr().expect("proxy addr");
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true).expect("nonblocking accept");
        let (accept_live, accept_stop) = (Arc::clone(&live), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !accept_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client
                            .set_nonblocking(false)
                            .expect("blocking client socket");
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let mut live = accept_live.lock().unwrap();
                        live.push(client.try_clone().expect("clone"));
                        live.push(server.try_clone().expect("clone"));
                        pipe(
                            client.try_clone().expect("clone"),
                            server.try_clone().expect("clone"),
                        );
                        pipe(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CuttingProxy { addr, live, stop }
    }

    /// Closes every connection through the proxy, wherever its requests are.
    fn cut_all(&self) {
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut_all();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

#[test]
fn the_idempotent_producer_leaves_no_duplicates_when_connections_break() {
    let proxy_listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let proxy_addr = proxy_listener.local_addr().expect("proxy addr");
    let broker = TestBroker::start_with(|c| c.advertised_listener = Some(proxy_addr.to_string()));
    let proxy = CuttingProxy::start(proxy_listener, broker.addr);
    let bootstrap = proxy.addr.to_string();

    let topic = topic_name("idempotent");
    let partitions = 3;
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = client_config(&bootstrap).create().expect("admin client");
        let new_topic = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
        let created = broker
            .block_on(admin.create_topics(
                [&new_topic],
                &AdminOptions::new().operation_timeout(Some(WAIT)),
            ))
            .expect("CreateTopics");
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }
    let producer = producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "1"),
            ("batch.num.messages", "20"),
            ("max.in.flight.requests.per.connection", "5"),
            ("retry.backoff.ms", "20"),
            ("reconnect.backoff.ms", "10"),
        ],
    );
    let records: Vec<Outgoing> = (0..3_000)
        .map(|i| Outgoing {
            partition: Some(i % partitions),
            value: Some(format!("record-{i}").into_bytes()),
            ..Outgoing::default()
        })
        .collect();
    // Send in slices and cut every connection between them while requests are in flight.
    let mut reports = Vec::new();
    for (n, chunk) in records.chunks(300).enumerate() {
        enqueue(&producer, &topic, chunk, n * 300);
        producer.poll(Duration::from_millis(5));
        proxy.cut_all();
        reports.extend(take_reports(&producer));
    }
    let deadline = Instant::now() + WAIT;
    while reports.len() < records.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} delivery reports within {WAIT:?}",
            reports.len(),
            records.len()
        );
        producer.poll(Duration::from_millis(50));
        reports.extend(take_reports(&producer));
    }
    let failed: Vec<_> = reports.iter().filter(|(_, r)| r.is_err()).take(5).collect();
    assert!(
        failed.is_empty(),
        "the idempotent producer gave up on records: {failed:?}"
    );

    // Each partition holds its records exactly once, in the order they were sent.
    for partition in 0..partitions {
        let stored: Vec<Vec<u8>> = read_all(&bootstrap, &topic, partition)
            .iter()
            .map(|m| m.payload().expect("value").to_vec())
            .collect();
        let sent: Vec<Vec<u8>> = records
            .iter()
            .filter(|r| r.partition == Some(partition))
            .map(|r| r.value.clone().expect("value"))
            .collect();
        let mut copies: BTreeMap<&[u8], usize> = BTreeMap::new();
        for value in &stored {
            *copies.entry(value.as_slice()).or_default() += 1;
        }
        let duplicated: Vec<_> = copies.iter().filter(|(_, &n)| n > 1).take(5).collect();
        assert!(
            duplicated.is_empty(),
            "partition {partition} has duplicates: {duplicated:?}"
        );
        assert_eq!(
            stored, sent,
            "partition {partition}: every record once, in order"
        );
    }
}
