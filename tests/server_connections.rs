//! `max.connections`, `max.connections.per.ip` and their per-address overrides, over real
//! sockets. The bug: the number of connections had no bound at all; now a connection over a
//! limit is closed at once, as Kafka closes it, and counted.
#![cfg(not(madsim))]

#[path = "own_broker/mod.rs"]
mod own_broker;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bounds every wait; no test measures time.
const WAIT: Duration = Duration::from_secs(30);

/// A connection to `server` from the loopback address `from`.
async fn connect_from(from: &str, server: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(server.parse().unwrap()).await.unwrap()
}

/// Sends ApiVersions and reports whether an answer came back (false: the broker closed the
/// connection).
async fn answered(stream: &mut TcpStream) -> bool {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(0)
        .with_correlation_id(1);
    let mut body = BytesMut::new();
    header.encode(&mut body, 1).unwrap();
    ApiVersionsRequest::default().encode(&mut body, 0).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    // A write to a connection the broker already closed may fail: that is a "no" too.
    if stream.write_all(&frame).await.is_err() {
        return false;
    }
    let _ = stream.flush().await;
    let mut size = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut size))
        .await
        .expect("an answer or a close, not silence")
        .is_ok()
}

#[tokio::test]
async fn connections_over_the_per_address_or_the_total_limit_are_closed_at_once_and_counted() {
    let running = own_broker::start_broker_with(
        |c| {
            c.max_connections = 3;
            c.max_connections_per_ip = 2;
            c.max_connections_per_ip_overrides
                .insert("127.0.0.3".parse().unwrap(), 0);
        },
        None,
    )
    .await;
    let addr = running.addr.clone();
    let mut a1 = connect_from("127.0.0.1", &addr).await;
    let mut a2 = connect_from("127.0.0.1", &addr).await;
    assert!(answered(&mut a1).await);
    assert!(answered(&mut a2).await);
    let mut a3 = connect_from("127.0.0.1", &addr).await;
    assert!(!answered(&mut a3).await, "a third from one address");
    let mut c1 = connect_from("127.0.0.3", &addr).await;
    assert!(!answered(&mut c1).await, "an address whose override is 0");
    let mut b1 = connect_from("127.0.0.2", &addr).await;
    assert!(answered(&mut b1).await, "another address, within the total");
    let mut b2 = connect_from("127.0.0.2", &addr).await;
    assert!(!answered(&mut b2).await, "a fourth in all");
    assert_eq!(running.broker.connections_refused(), 3);
    // The admitted connections still work.
    assert!(answered(&mut a1).await);
    assert!(answered(&mut b1).await);
    running.stop().await;
}
