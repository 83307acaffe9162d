//! `SIM_LOG`: the brokers' logs on stderr while a simulation runs, each line under its node's
//! span (`node{id=2 name="broker-2"}`), filtered with tracing's env-filter syntax
//! (`info,broker::replica=debug`).
//!
//! Logging must change no run: the trace and its hash are the same at every level and without
//! a subscriber (`sim/tests/logging.rs` runs scenarios both ways in one process). What would
//! break that, and so must never be done here or in a log line of the code under simulation:
//! drawing from the simulator's randomness (madsim intercepts `getrandom`, so any RNG seeded
//! from the OS draws from the run's seed), creating a `HashMap` with std's `RandomState` on the
//! simulation thread (each one moves the thread's hash keys for every later map), spawning or
//! yielding a task, and doing work only when a level is enabled (`tracing::enabled!`) that
//! changes state. The subscriber below only formats and writes: the timer reads madsim's
//! clock (a read never advances it) and the writer is the process's stderr, outside the
//! simulation.

/// The subscriber `SIM_LOG=<filter>` installs: tracing's formatter, no colours, to `writer`.
pub fn subscriber<W>(filter: &str, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(writer)
        .with_ansi(false)
        .finish()
}

/// Installs the `SIM_LOG` subscriber for the whole process when `SIM_LOG` is set.
pub fn init_from_env() {
    use tracing_subscriber::util::SubscriberInitExt;
    if let Ok(filter) = std::env::var("SIM_LOG") {
        subscriber(&filter, std::io::stderr).init();
    }
}
