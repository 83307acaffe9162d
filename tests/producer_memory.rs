//! The producer's `buffer.memory` bound, on real sockets. The bug: the producer held every
//! record it was given, however far the brokers fell behind, so a producer facing a stalled
//! broker grew without limit. Now a send waits for room up to `max.block.ms`, then fails with
//! a clear error, and a record larger than the whole buffer fails at once.
#![cfg(not(madsim))]

mod own_broker;
mod proxy;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::*;
use own_broker::start_broker_with;
use proxy::{start_proxy, PASS, SWALLOW_RESPONSES};
use tokio::net::TcpListener;

/// Bounds every wait; no test measures time.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_send_waits_for_room_in_buffer_memory_and_fails_clearly_when_none_comes_in_max_block() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap().to_string();
    let b = start_broker_with(|_| {}, Some(proxy_addr.clone())).await;
    let mode = Arc::new(AtomicU8::new(PASS));
    start_proxy(proxy, b.addr.clone(), Arc::clone(&mode)).await;
    let mut config = ClientConfig::new(proxy_addr.clone());
    config.connection.request_timeout = Duration::from_secs(5);
    let client = Client::connect(config).await.unwrap();
    Admin::new(client.clone())
        .create_topic(NewTopic::new("slow", 1))
        .await
        .unwrap();
    let value = vec![7u8; 1000];
    // Room for two of these records (about 1 KiB each), not three.
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            retries: 0,
            buffer_memory: 2_500,
            max_block: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(producer
        .send_and_wait(ProducerRecord::new("slow", value.clone()))
        .await
        .is_acknowledged());
    assert_eq!(producer.buffered_bytes(), 0);

    // The broker stops answering: two records fill the buffer, the third finds no room.
    mode.store(SWALLOW_RESPONSES, Ordering::SeqCst);
    let first = producer
        .send(ProducerRecord::new("slow", value.clone()))
        .await;
    let second = producer
        .send(ProducerRecord::new("slow", value.clone()))
        .await;
    assert!(producer.buffered_bytes() <= 2_500);
    let third = tokio::time::timeout(WAIT, async {
        producer
            .send(ProducerRecord::new("slow", value.clone()))
            .await
            .await
    })
    .await
    .expect("an outcome");
    assert!(
        matches!(
            third,
            SendOutcome::Failed {
                error: SendError::BufferExhausted {
                    buffer_memory: 2_500,
                    max_block_ms: 300,
                    ..
                }
            }
        ),
        "{third:?}"
    );
    assert!(third.to_string_lossy().contains("buffer.memory"));

    // A record larger than the whole buffer fails at once.
    let huge = producer
        .send_and_wait(ProducerRecord::new("slow", vec![0u8; 3_000]))
        .await;
    assert!(
        matches!(
            huge,
            SendOutcome::Failed {
                error: SendError::RecordTooLarge { .. }
            }
        ),
        "{huge:?}"
    );

    // Once the broker answers again the swallowed batches end, their room comes back, and
    // sends go through.
    mode.store(PASS, Ordering::SeqCst);
    for delivery in [first, second] {
        tokio::time::timeout(WAIT, delivery).await.unwrap();
    }
    let after = tokio::time::timeout(
        WAIT,
        producer.send_and_wait(ProducerRecord::new("slow", value.clone())),
    )
    .await
    .unwrap();
    assert!(after.is_acknowledged(), "{after:?}");
    assert_eq!(producer.buffered_bytes(), 0);
    b.stop().await;
}

trait Describe {
    fn to_string_lossy(&self) -> String;
}

impl Describe for SendOutcome {
    fn to_string_lossy(&self) -> String {
        match self {
            SendOutcome::Failed { error } => error.to_string(),
            other => format!("{other:?}"),
        }
    }
}
