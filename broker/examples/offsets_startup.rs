//! Start-up cost of `__consumer_offsets` spread over `offsets.topic.num.partitions` partitions
//! (issue 10): `Broker::open` of a data directory whose offsets topic has 50 empty partitions
//! (Kafka's default) next to one whose offsets topic has 1, both with the same other topic, on
//! real files. Every partition's log opens and every group shard loads (replays nothing: the
//! partitions are empty). Kept out of the test suite; run it in a release build:
//!
//! ```sh
//! cargo run --release -p broker --example offsets_startup -- /work/offsets-startup 15
//! rm -r /work/offsets-startup
//! ```
//!
//! Arguments: a directory (created; emptied and rewritten each run) and the number of opens
//! measured per variant (after one warm-up each), alternating the variants so the machine's
//! noise falls on both alike. Prints the median and p90 of each, and their ratio.

// Real files and real time: meaningless (and its clock disallowed) in the simulation build.
#[cfg(madsim)]
fn main() {
    eprintln!("offsets_startup measures real files: run it in the normal build");
}

#[cfg(not(madsim))]
fn main() {
    real::main();
}

#[cfg(not(madsim))]
mod real {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use broker::broker::Broker;
    use broker::clock::SystemClock;
    use broker::config::BrokerConfig;
    use broker::disk::{Disk, FileDisk};
    use broker::group::offsets::OFFSETS_TOPIC;
    use tokio::time::Instant;

    fn config(dir: &Path, offsets_partitions: i32) -> BrokerConfig {
        BrokerConfig {
            data_dir: dir.to_path_buf(),
            offsets_topic_num_partitions: offsets_partitions,
            log_level: "warn".into(),
            ..BrokerConfig::default()
        }
    }

    /// A data directory with topic `orders` and an offsets topic of `offsets_partitions`.
    async fn prepare(dir: &Path, offsets_partitions: i32) {
        let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
        let broker = Broker::open(config(dir, offsets_partitions), disk, Arc::new(SystemClock))
            .await
            .expect("open");
        broker
            .create_topic("orders", 1, -1, &[], false)
            .await
            .expect("orders");
        broker.offsets_topic().await.expect("offsets topic");
        let made = broker.topic(OFFSETS_TOPIC).unwrap().partitions.len();
        assert_eq!(made, offsets_partitions as usize);
        broker.shutdown().await;
    }

    /// One clean start: the time of `Broker::open`, and of loading every group shard again
    /// (unloaded first) on its own, the part of the start that is the coordinator's.
    async fn open_once(dir: &Path, offsets_partitions: i32) -> (Duration, Duration) {
        let disk: Arc<dyn Disk> = Arc::new(FileDisk::new());
        let started = Instant::now();
        let broker = Broker::open(config(dir, offsets_partitions), disk, Arc::new(SystemClock))
            .await
            .expect("open");
        let took = started.elapsed();
        assert_eq!(
            broker.groups().loaded_shards().len(),
            offsets_partitions as usize
        );
        for index in 0..offsets_partitions {
            broker.groups().unload_shard(index);
        }
        let started = Instant::now();
        for index in 0..offsets_partitions {
            let partition = broker.partition(OFFSETS_TOPIC, index).unwrap();
            broker.groups().load_shard(index, partition).await.unwrap();
        }
        let shards = started.elapsed();
        broker.shutdown().await;
        (took, shards)
    }

    fn quantile(sorted: &[Duration], q: f64) -> Duration {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize]
    }

    #[tokio::main(flavor = "current_thread")]
    pub async fn main() {
        let mut args = std::env::args().skip(1);
        let root = PathBuf::from(args.next().expect("usage: offsets_startup DIR [RUNS]"));
        let runs: usize = args.next().map_or(15, |r| r.parse().expect("RUNS"));
        let disk = FileDisk::new();
        match disk.remove_dir_all(&root).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("emptying {}: {e}", root.display()),
        }
        let variants = [1, 50];
        for partitions in variants {
            prepare(&root.join(partitions.to_string()), partitions).await;
            open_once(&root.join(partitions.to_string()), partitions).await;
        }
        let mut times = [Vec::new(), Vec::new()];
        let mut shard_times = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (i, partitions) in variants.into_iter().enumerate() {
                let (open, shards) =
                    open_once(&root.join(partitions.to_string()), partitions).await;
                times[i].push(open);
                shard_times[i].push(shards);
            }
        }
        let mut medians = Vec::new();
        for (i, partitions) in variants.into_iter().enumerate() {
            times[i].sort();
            shard_times[i].sort();
            let (p50, p90) = (quantile(&times[i], 0.5), quantile(&times[i], 0.9));
            medians.push(p50);
            println!(
                "offsets topic of {partitions:>2} partitions: start p50 {:.2} ms, p90 {:.2} ms; \
                 of which loading the group shards p50 {:.3} ms ({runs} runs)",
                p50.as_secs_f64() * 1e3,
                p90.as_secs_f64() * 1e3,
                quantile(&shard_times[i], 0.5).as_secs_f64() * 1e3,
            );
        }
        println!(
            "50 / 1: {:.2}x; per extra partition: {:.3} ms",
            medians[1].as_secs_f64() / medians[0].as_secs_f64(),
            (medians[1].as_secs_f64() - medians[0].as_secs_f64()) * 1e3 / 49.0
        );
    }
}
