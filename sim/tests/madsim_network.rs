//! The simulator's TCP streams (vendor/madsim, the Faultline patch to `madsim::net`, `link.rs`):
//! a flushed write wakes its reader once, when it arrives, and the network's timing is
//! upstream's: in order, after the drawn latency, at least 1 ms after the reader started
//! waiting for it, and a write over a clogged link retried with doubling waits.
//!
//! The bug story: madsim 0.2.34 put each flushed write into a channel, which woke the reading
//! task at once; the reader's stream then took the write and slept until its arrival time, and
//! the delivery timer woke the reader again. Every message cost its reader a poll with nothing
//! to read (and the boxed message, and a channel slot).
#![cfg(madsim)]

mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use madsim::time::TimeHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::counted;

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 9092);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn now() -> Duration {
    TimeHandle::current().elapsed()
}

/// Runs `serve` on a server node with the first accepted stream and `client` on a client node
/// with a stream connected to it; returns both results.
fn connected<S, SF, C, CF>(serve: S, client: C) -> (SF::Output, CF::Output)
where
    S: FnOnce(TcpStream) -> SF + Send + 'static,
    SF: Future + Send + 'static,
    SF::Output: Send + 'static,
    C: FnOnce(TcpStream) -> CF + Send + 'static,
    CF: Future + Send + 'static,
    CF::Output: Send + 'static,
{
    let runtime = Runtime::with_seed_and_config(1, madsim::Config::default());
    runtime.block_on(async move {
        let handle = Handle::current();
        let server = handle.create_node().name("server").ip(SERVER.ip()).build();
        let client_node = handle.create_node().name("client").ip(CLIENT).build();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let served = server.spawn(async move {
            let listener = TcpListener::bind(SERVER).await.expect("the port is free");
            bound_tx.send(()).expect("the test waits");
            let (stream, _) = listener.accept().await.expect("the client connects");
            serve(stream).await
        });
        bound_rx.await.expect("the server binds");
        let clients = client_node.spawn(async move {
            let stream = TcpStream::connect(SERVER)
                .await
                .expect("the server listens");
            client(stream).await
        });
        let client_result = clients.await.expect("the client ends");
        let served = served.await.expect("the server ends");
        (served, client_result)
    })
}

/// Reads one-byte messages until the end of the stream; returns each with when it was read.
async fn read_all(mut stream: TcpStream) -> Vec<(u8, Duration)> {
    let mut read = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        let n = stream.read(&mut buf).await.expect("the stream stays up");
        if n == 0 {
            return read;
        }
        let at = now();
        read.extend(buf[..n].iter().map(|&byte| (byte, at)));
    }
}

async fn write_one(stream: &mut TcpStream, byte: u8) -> Duration {
    stream
        .write_all(&[byte])
        .await
        .expect("the stream stays up");
    stream.flush().await.expect("the stream stays up");
    now()
}

#[test]
fn a_message_wakes_a_waiting_reader_once_when_it_arrives() {
    let (reads, sent) = connected(
        |stream| async move {
            let (reader, polls) = counted(read_all(stream));
            let reads = reader.await;
            (reads, polls.load(Ordering::Relaxed))
        },
        |mut stream| async move {
            let mut sent = Vec::new();
            for i in 0..10 {
                // Well after the previous message arrived: the reader waits for each one.
                tokio::time::sleep(Duration::from_millis(20)).await;
                sent.push(write_one(&mut stream, i).await);
            }
            sent
        },
    );
    let (reads, polls) = reads;
    assert_eq!(
        reads.iter().map(|&(byte, _)| byte).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    for (&(_, read_at), sent_at) in reads.iter().zip(sent) {
        // The default latency is 1 to 10 ms.
        let latency = read_at - sent_at;
        assert!(
            latency >= Duration::from_millis(1) && latency <= Duration::from_millis(11),
            "read {latency:?} after it was sent"
        );
    }
    // The first poll and one per message, at its arrival; the writer hung up before the last
    // one arrived, so the reader reads the end of the stream in that poll. Upstream also polled
    // the reader when each message was sent: 21.
    assert_eq!(polls, 11);
}

#[test]
fn messages_written_at_once_arrive_in_order_at_least_a_millisecond_apart() {
    let (reads, sent_at) = connected(read_all, |mut stream| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent_at = now();
        for i in 0..5 {
            write_one(&mut stream, i).await;
        }
        sent_at
    });
    assert_eq!(
        reads.iter().map(|&(byte, _)| byte).collect::<Vec<_>>(),
        (0..5).collect::<Vec<_>>()
    );
    // Upstream's timing, kept: a message is read no earlier than 1 ms after the reader started
    // waiting for it, so a burst is spread out.
    let mut previous = sent_at;
    for &(_, read_at) in &reads {
        assert!(
            read_at >= previous + Duration::from_millis(1),
            "read at {read_at:?}, 1 ms after {previous:?} at the earliest"
        );
        previous = read_at;
    }
}

#[test]
fn a_message_sent_over_a_clogged_link_arrives_at_the_first_retry_after_it_heals() {
    let (reads, sent_at) = connected(read_all, |mut stream| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let net = NetSim::current();
        let client = Handle::current()
            .get_node("client")
            .expect("the client")
            .id();
        let server = Handle::current()
            .get_node("server")
            .expect("the server")
            .id();
        net.clog_link(client, server);
        let sent_at = write_one(&mut stream, 7).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        net.unclog_link(client, server);
        // Stay connected until the message is through.
        tokio::time::sleep(Duration::from_millis(200)).await;
        sent_at
    });
    let [(byte, read_at)] = reads[..] else {
        panic!("one message, read {reads:?}");
    };
    assert_eq!(byte, 7);
    // Retried 1, 3, 7, 15, 31 and 63 ms after it was sent (each wait twice the last); the link
    // healed at 50 ms, so the retry at 63 ms sends it, with the 1 to 10 ms latency.
    let waited = read_at - sent_at;
    assert!(
        waited >= Duration::from_millis(64) && waited <= Duration::from_millis(74),
        "read {waited:?} after it was sent"
    );
}
