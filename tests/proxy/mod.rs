//! A TCP proxy between a client and the broker for the outcome tests: it passes traffic,
//! swallows responses, or cuts the connection when a request arrives, so a test can make a
//! request's outcome unknowable to the client on a real network.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Pass everything / swallow responses / cut the connection when a request arrives.
pub const PASS: u8 = 0;
pub const SWALLOW_RESPONSES: u8 = 1;
pub const CUT_ON_REQUEST: u8 = 2;

pub async fn start_proxy(listener: TcpListener, upstream: String, mode: Arc<AtomicU8>) {
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mode = Arc::clone(&mode);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = tokio::io::split(client);
                let (mut server_read, mut server_write) = tokio::io::split(server);
                let up_mode = Arc::clone(&mode);
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if up_mode.load(Ordering::SeqCst) == CUT_ON_REQUEST {
                            return; // drops both halves of this direction: the client sees EOF
                        }
                        if server_write.write_all(&buf[..n]).await.is_err()
                            || server_write.flush().await.is_err()
                        {
                            return;
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = tokio::select! {
                        read = server_read.read(&mut buf) => match read { Ok(0) | Err(_) => break, Ok(n) => n },
                        _ = async { while !up.is_finished() { tokio::time::sleep(Duration::from_millis(5)).await } } => break,
                    };
                    if mode.load(Ordering::SeqCst) == SWALLOW_RESPONSES {
                        continue;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err()
                        || client_write.flush().await.is_err()
                    {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
}
