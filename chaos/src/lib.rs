//! # Faultline's fault injection
//!
//! The faults a simulation throws at the broker, each with its model written where it is made
//! (STYLE.md, item 7). Production code never depends on this crate.
//!
//! - [`FaultyDisk`]: an in-memory [`broker::disk::Disk`] that loses unsynced bytes on power
//!   loss, tears the unsynced tail at sector boundaries, fails appends and syncs with `EIO`,
//!   fills up with `ENOSPC`, flips bits at rest, adds latency, slows appends and syncs (a slow
//!   drive) and can be wiped (a drive replaced by an empty one). All its randomness comes from
//!   one seed, so a simulation run replays exactly.
//! - [`nemesis`]: the cluster-level faults (crash with power loss, restart, pause, isolation,
//!   one-way link cuts, packet loss, latency, disk EIO, torn writes, bit flips, full disk, a
//!   wiped drive, a slow drive, clock skew) as
//!   data, with their fault model, applied through the [`nemesis::Harness`] trait the simulator
//!   implements.
//! - [`SkewedClock`]: a node's own wall clock (true time plus an offset), which the nemesis's
//!   `clock-skew` fault moves.
//!
//! The harness keeps one `FaultyDisk` per node, outside the simulated node, hands clones to each
//! incarnation of the broker, and calls [`FaultyDisk::crash`] when it kills the node:
//!
//! ```
//! # async fn demo() -> std::io::Result<()> {
//! use std::path::Path;
//! use broker::disk::{Disk, OpenMode};
//! use chaos::{FaultyDisk, FaultyDiskConfig};
//!
//! let disk = FaultyDisk::new(42, FaultyDiskConfig::default());
//! disk.create_dir_all(Path::new("/data")).await?;
//! let file = disk.open(Path::new("/data/00.log"), OpenMode::CreateNew).await?;
//! file.append(b"acknowledged").await?;
//! file.sync().await?;
//! disk.sync_dir(Path::new("/data")).await?;
//! file.append(b"not yet").await?;
//! disk.crash();
//! assert_eq!(disk.durable_content(Path::new("/data/00.log")).unwrap(), b"acknowledged");
//! assert!(file.append(b"x").await.is_err()); // handles die with the process
//! # Ok(()) }
//! ```

pub mod clock;
pub mod disk;
pub mod nemesis;

pub use clock::SkewedClock;

pub use disk::{FaultCounts, FaultyDisk, FaultyDiskConfig};
