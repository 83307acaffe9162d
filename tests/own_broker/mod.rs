//! A Faultline broker in this test's tokio runtime, on 127.0.0.1 with a free port and a
//! temporary data directory, for the tests that drive it with Faultline's own client.
#![allow(dead_code)] // each test file uses a different part of this module

use std::sync::Arc;

use broker::broker::Broker;
use broker::clock::SystemClock;
use broker::config::BrokerConfig;
use broker::disk::FileDisk;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct TestBroker {
    pub addr: String,
    pub broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts a broker on 127.0.0.1:0; `advertise` overrides the address Metadata hands out.
pub async fn start_broker_with(
    configure: impl FnOnce(&mut BrokerConfig),
    advertise: Option<String>,
) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut config = BrokerConfig {
        data_dir: dir.path().join("data"),
        listen: addr.clone(),
        ..BrokerConfig::default()
    };
    config.advertised_listener = Some(advertise.unwrap_or_else(|| addr.clone()));
    configure(&mut config);
    let broker = Broker::open(config, Arc::new(FileDisk::new()), Arc::new(SystemClock))
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(broker::server::serve(
        Arc::clone(&broker),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    TestBroker {
        addr,
        broker,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

pub async fn start_broker() -> TestBroker {
    start_broker_with(|_| {}, None).await
}

impl TestBroker {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server).await;
        self.broker.shutdown().await;
    }
}
