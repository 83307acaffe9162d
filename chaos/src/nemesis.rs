//! The nemesis: the faults a simulation throws at a cluster, as data, and the logic that applies
//! them through a small [`Harness`] trait the simulator implements (this crate never depends on
//! the simulator; the harness maps [`Node`]s to simulated nodes and owns their disks).
//!
//! # Fault model
//!
//! Each kind below is a failure real deployments see. The broker must keep its promises through
//! every one of them (nothing acknowledged under acks=all and the durable flush policy is lost;
//! no offset ever holds two values; corrupt data is never served), and must make progress again
//! once they are healed. A checker failure is only actionable when the fault was in this list.
//!
//! - **Crash** (`Crash`): the node's process dies *and* its machine loses power, at one instant:
//!   the harness kills the simulated node and calls [`FaultyDisk::crash`] with no task of the
//!   node running in between. Unsynced bytes vanish (torn at sector boundaries when the disk is
//!   configured so); every open connection looks like EOF to its peer. Why survive it: power
//!   fails, kernels panic, operators `kill -9`.
//! - **Restart** (`Restart`): the node boots again from its disk (the node's `init` runs anew).
//!   A restart of a live node is a clean process restart: killed without power loss, so the page
//!   cache (unsynced writes) survives, as when only the process dies.
//! - **Pause / Resume**: the node's tasks stop running but its state and connections stay (a GC
//!   pause, a stopped VM, SIGSTOP). Peers see a long stall; every request needs a timeout.
//! - **Isolate** (`Isolate`): every packet to and from the node is dropped (a switch port dies,
//!   a firewall rule). Established connections stall; new connections are refused.
//! - **CutLink** (`CutLink`): packets from one node to another are dropped, one direction only
//!   (asymmetric partitions happen: a bad NIC queue, a one-way firewall rule). Cutting the
//!   client→broker direction drops requests; broker→client drops responses after the request
//!   was handled — the classic "did my write happen?" ambiguity.
//! - **Split** (`Split`): the cluster splits in two: every packet between a node of the given
//!   side and a node outside it is dropped, both ways, while each side still talks within itself
//!   (a rack or availability zone cut off). Undone by `Mend`.
//! - **Heal** (`Heal`): every network fault is undone, paused nodes resume, crashed nodes
//!   restart, disk faults stop, clocks return to true time, and a node whose disk misbehaved (EIO, full) gets a clean process
//!   restart — what an operator does once the hardware is fixed. The liveness phase follows it.
//! - **PacketLoss** (`PacketLoss`): each packet on every link is lost with the given
//!   probability (the simulated TCP retransmits, so this shows up as jittery stalls).
//! - **Latency** (`Latency`): every packet is delayed uniformly in `min..max` (congestion, a
//!   cross-region link). Reorders nothing on one connection; widens every race window.
//! - **DiskEio** (`DiskEio`): appends and syncs on the node's disk fail with `EIO` at the given
//!   rates (see [`crate::disk`] for what lands: a random prefix of a failed append; a failed
//!   sync drops the unsynced bytes, "fsyncgate"). The broker must not acknowledge what it
//!   could not write and must not serve what it could not sync under the durable policy.
//! - **DiskTorn** (`DiskTorn`): turns torn writes on or off for the node's next crashes: a random
//!   sector-aligned prefix of the unsynced tail survives. Recovery must truncate at the last
//!   whole, checksummed batch.
//! - **BitFlip** (`BitFlip`): one bit flips at rest in one of the node's partition log segment
//!   files (`*.log`), in both the live and the durable content (media decay, firmware bugs). The
//!   log's CRCs must catch it: the batch is never served, and data before it stays readable.
//!   Flips in the metadata files are left out of this kind: the broker then (correctly) refuses
//!   to start, which no liveness phase can heal without an operator.
//! - **DiskFull** (`DiskFull`): the disk's capacity becomes what it holds now plus a headroom;
//!   appends beyond fail with `ENOSPC` and write nothing. The broker must refuse, not corrupt.
//!
//! - **ClockSkew** (`ClockSkew`): the node's wall clock ([`crate::SkewedClock`]) jumps to true
//!   time plus an offset, forwards or backwards; undone after its duration and by `Heal`. Only
//!   wall-clock reads move (timestamps, LogAppendTime, segment age, retention, session and
//!   offset expiry); the runtime's timers measure durations and are not skewed, as a
//!   machine's monotonic clock is not. Why survive it: NTP steps, VMs resumed from snapshots,
//!   and brokers whose clocks disagree; leases and timeouts in replication will read it.
//!
//! - **DiskWipe** (`DiskWipe`): the node crashes as in `Crash` (kill and power loss at one
//!   instant) and its drive is replaced by an empty one: every partition log, checkpoint and
//!   broker file under its data directory is gone, durably. The metadata log
//!   (`__cluster_metadata-0`) survives, as it does in a Kafka deployment whose
//!   `metadata.log.dir` sits on another drive than `log.dirs`. Why keep it: a KRaft voter
//!   whose metadata log is wiped may vote twice in one term; Kafka forbids it to come back as a
//!   voter without being re-formatted and re-added (KIP-853), an operator's procedure rather
//!   than a fault to survive. Keeping it makes the fault fit any broker, voter or not. Undone
//!   by `Restart` (its `for-ms`): the broker boots on the empty data directory. Why survive
//!   it: drives die and are replaced; the broker must come back as an empty follower, and
//!   must not be elected leader from an ISR membership its lost log had earned (KIP-966).
//! - **SlowDisk** (`SlowDisk`): every append and sync on the drive of the node's partition logs
//!   takes `latency` more (see [`crate::disk`]); reads do not, nor does the metadata log, on its
//!   own drive as for `DiskWipe` (so the broker's heartbeats and metadata keep their pace, and
//!   the fault is about replication, not about fencing). Undone after its duration and by `Heal`. Why
//!   survive it: a failing or throttled drive. A follower that cannot keep up must drop out of
//!   the ISR after `replica.lag.time.max.ms` instead of holding up acks=all, and rejoin once it
//!   catches up.
//!
//! - **MetadataDiskEio** (`MetadataDiskEio`): the drive of the node's metadata log (Kafka's
//!   `metadata.log.dir`, on its own device as for `DiskWipe`) fails: every append, sync and
//!   truncation under `__cluster_metadata-0` returns `EIO` (an append lands a random prefix, a
//!   sync drops the unsynced bytes, as for `DiskEio`); reads still succeed. Undone after its
//!   duration and by `Heal`, without the clean restart `DiskEio` earns: a KRaft node whose
//!   metadata log fails halts, and its supervisor restarts it (the harness does, at once), so
//!   the node must come back by itself. Why survive it: a metadata log that cannot be written
//!   stops the node's quorum replica for good; a node that ran on as a broker would serve an
//!   image that never moves again and hold a vote it never casts.
//! - **Hold** (`Hold`): from the moment it strikes, the next `count` requests (default: every
//!   one until the heal) of one client (or of every client) to one Kafka API (`EndTxn`,
//!   `Produce`, optionally only transactional produce) are held in the network, each for
//!   `for` after it was written (default: until the heal), then delivered, never dropped; the
//!   heal delivers whatever is still held. A held request's bytes stay on their connection and
//!   the requests written after them on it wait behind them, as behind a stuck segment of one
//!   TCP stream (the client's connection layer holds them: `client::RequestHold`). The client
//!   hears nothing, times out, closes its side and retries on a new connection, or gives up
//!   and moves on; the broker receives the original bytes late, after the client's later
//!   requests (a retried EndTxn, the next transaction, an abort), and handles them like any
//!   request. Why survive it: a retransmitted segment, a congested path or a stalled
//!   middlebox delivers a request after its sender gave up on it, which Kafka's transaction
//!   protocol must fence (a late EndTxn must not end the next transaction; a late
//!   transactional produce must not open a transaction nobody will end: KIP-890).
//!
//! Outside the model: a clock running at a wrong rate, lost or misdirected synced writes,
//! corruption of metadata files, and faults of the harness itself.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::clock::SkewedClock;
use crate::disk::{FaultyDisk, FaultyDiskConfig};

/// A node of the simulated cluster, as the nemesis names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// Broker by its node id (1-based, as in `node.id`).
    Broker(u32),
    /// Workload client by its index (1-based).
    Client(u32),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Broker(id) => write!(f, "broker-{id}"),
            Node::Client(id) => write!(f, "client-{id}"),
        }
    }
}

/// The kinds of fault, without their targets and parameters. Swarm testing switches kinds on
/// and off per seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Crash,
    Restart,
    Pause,
    Resume,
    Isolate,
    CutLink,
    Heal,
    PacketLoss,
    Latency,
    DiskEio,
    DiskTorn,
    BitFlip,
    DiskFull,
    Split,
    ClockSkew,
    DiskWipe,
    SlowDisk,
    MetadataDiskEio,
    Hold,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 19] = [
        FaultKind::Crash,
        FaultKind::Restart,
        FaultKind::Pause,
        FaultKind::Resume,
        FaultKind::Isolate,
        FaultKind::CutLink,
        FaultKind::Heal,
        FaultKind::PacketLoss,
        FaultKind::Latency,
        FaultKind::DiskEio,
        FaultKind::DiskTorn,
        FaultKind::BitFlip,
        FaultKind::DiskFull,
        FaultKind::Split,
        FaultKind::ClockSkew,
        FaultKind::DiskWipe,
        FaultKind::SlowDisk,
        FaultKind::MetadataDiskEio,
        FaultKind::Hold,
    ];

    /// The kebab-case name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::Resume => "resume",
            FaultKind::Isolate => "isolate",
            FaultKind::CutLink => "cut-link",
            FaultKind::Heal => "heal",
            FaultKind::PacketLoss => "packet-loss",
            FaultKind::Latency => "latency",
            FaultKind::DiskEio => "disk-eio",
            FaultKind::DiskTorn => "disk-torn",
            FaultKind::BitFlip => "bit-flip",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Split => "split",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::DiskWipe => "disk-wipe",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::MetadataDiskEio => "metadata-disk-eio",
            FaultKind::Hold => "hold",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The requests a [`Fault::Hold`] holds, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRequests {
    /// The client whose requests are held (`None`: every client's).
    pub client: Option<Node>,
    /// The Kafka API, as Kafka names it (`EndTxn`, `Produce`, `AddPartitionsToTxn`, ...).
    pub api: String,
    /// Only produce requests that carry a transactional id.
    pub transactional: bool,
    /// At most this many requests (`None`: every one until the heal).
    pub count: Option<u32>,
    /// How long each is held after it was written (`None`: until the heal).
    pub held_for: Option<Duration>,
}

impl fmt::Display for HeldRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            Some(1) => f.write_str("the next ")?,
            Some(n) => write!(f, "the next {n} ")?,
            None => f.write_str("every ")?,
        }
        if self.transactional {
            f.write_str("transactional ")?;
        }
        write!(f, "{} request", self.api)?;
        if self.count != Some(1) {
            f.write_str("s")?;
        }
        match self.client {
            Some(node) => write!(f, " of {node}")?,
            None => f.write_str(" of every client")?,
        }
        match self.held_for {
            Some(d) => write!(f, " for {} ms each", d.as_millis()),
            None => f.write_str(" until the heal"),
        }
    }
}

/// One fault with its target and parameters. See the module doc for each kind's model.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Crash(Node),
    Restart(Node),
    Pause(Node),
    Resume(Node),
    Isolate(Node),
    CutLink {
        from: Node,
        to: Node,
    },
    /// Undo every fault (see the module doc).
    Heal,
    PacketLoss {
        rate: f64,
    },
    /// `None`: back to the simulator's default latency.
    Latency {
        range: Option<(Duration, Duration)>,
    },
    DiskEio {
        node: Node,
        write_rate: f64,
        sync_rate: f64,
    },
    DiskTorn {
        node: Node,
        on: bool,
    },
    BitFlip(Node),
    /// `headroom_bytes: None` removes the limit.
    DiskFull {
        node: Node,
        headroom_bytes: Option<u64>,
    },
    /// Undo an `Isolate`.
    Reconnect(Node),
    /// Undo a `CutLink`.
    RestoreLink {
        from: Node,
        to: Node,
    },
    /// Cut every link between `side` and the other nodes, both ways.
    Split {
        side: Vec<Node>,
    },
    /// Undo a `Split` of the same side.
    Mend {
        side: Vec<Node>,
    },
    /// The node's wall clock reads true time plus `offset_ms` (0: true time again).
    ClockSkew {
        node: Node,
        offset_ms: i64,
    },
    /// Crash the node and replace its drive by an empty one (the metadata log survives).
    DiskWipe(Node),
    /// Appends and syncs on the node's disk take `latency` more (`None`: back to its baseline).
    SlowDisk {
        node: Node,
        latency: Option<Duration>,
    },
    /// The drive of the node's metadata log fails (`on`) or works again.
    MetadataDiskEio {
        node: Node,
        on: bool,
    },
    /// Hold these requests in the network (delivered late, never dropped).
    Hold(HeldRequests),
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Crash(_) => FaultKind::Crash,
            Fault::Restart(_) => FaultKind::Restart,
            Fault::Pause(_) => FaultKind::Pause,
            Fault::Resume(_) => FaultKind::Resume,
            Fault::Isolate(_) | Fault::Reconnect(_) => FaultKind::Isolate,
            Fault::CutLink { .. } | Fault::RestoreLink { .. } => FaultKind::CutLink,
            Fault::Heal => FaultKind::Heal,
            Fault::PacketLoss { .. } => FaultKind::PacketLoss,
            Fault::Latency { .. } => FaultKind::Latency,
            Fault::DiskEio { .. } => FaultKind::DiskEio,
            Fault::DiskTorn { .. } => FaultKind::DiskTorn,
            Fault::BitFlip(_) => FaultKind::BitFlip,
            Fault::DiskFull { .. } => FaultKind::DiskFull,
            Fault::Split { .. } | Fault::Mend { .. } => FaultKind::Split,
            Fault::ClockSkew { .. } => FaultKind::ClockSkew,
            Fault::DiskWipe(_) => FaultKind::DiskWipe,
            Fault::SlowDisk { .. } => FaultKind::SlowDisk,
            Fault::MetadataDiskEio { .. } => FaultKind::MetadataDiskEio,
            Fault::Hold(_) => FaultKind::Hold,
        }
    }

    /// The fault that undoes this one after its duration, if it has one.
    pub fn inverse(&self) -> Option<Fault> {
        match *self {
            Fault::Crash(node) | Fault::DiskWipe(node) => Some(Fault::Restart(node)),
            Fault::SlowDisk { node, .. } => Some(Fault::SlowDisk {
                node,
                latency: None,
            }),
            Fault::Pause(node) => Some(Fault::Resume(node)),
            Fault::Isolate(node) => Some(Fault::Reconnect(node)),
            Fault::CutLink { from, to } => Some(Fault::RestoreLink { from, to }),
            Fault::PacketLoss { .. } => Some(Fault::PacketLoss { rate: 0.0 }),
            Fault::Latency { .. } => Some(Fault::Latency { range: None }),
            Fault::DiskEio { node, .. } => Some(Fault::DiskEio {
                node,
                write_rate: 0.0,
                sync_rate: 0.0,
            }),
            Fault::DiskFull { node, .. } => Some(Fault::DiskFull {
                node,
                headroom_bytes: None,
            }),
            Fault::DiskTorn { node, on } => Some(Fault::DiskTorn { node, on: !on }),
            Fault::MetadataDiskEio { node, on } => Some(Fault::MetadataDiskEio { node, on: !on }),
            Fault::Split { ref side } => Some(Fault::Mend { side: side.clone() }),
            Fault::ClockSkew { node, .. } => Some(Fault::ClockSkew { node, offset_ms: 0 }),
            Fault::Restart(_)
            | Fault::Resume(_)
            | Fault::Heal
            | Fault::BitFlip(_)
            | Fault::Reconnect(_)
            | Fault::RestoreLink { .. }
            | Fault::Mend { .. }
            // Each held request ends its own hold (`held_for`); the heal ends them all.
            | Fault::Hold(_) => None,
        }
    }
}

fn names(nodes: &[Node]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("{{{}}}", names.join(", "))
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(n) => write!(f, "crash {n} (kill + power loss)"),
            Fault::Hold(which) => write!(f, "hold {which} in the network"),
            Fault::Restart(n) => write!(f, "restart {n}"),
            Fault::Pause(n) => write!(f, "pause {n}"),
            Fault::Resume(n) => write!(f, "resume {n}"),
            Fault::Isolate(n) => write!(f, "isolate {n}"),
            Fault::Reconnect(n) => write!(f, "reconnect {n}"),
            Fault::CutLink { from, to } => write!(f, "cut link {from} -> {to}"),
            Fault::RestoreLink { from, to } => write!(f, "restore link {from} -> {to}"),
            Fault::Split { side } => write!(f, "split {} from the rest", names(side)),
            Fault::Mend { side } => write!(f, "mend the split of {}", names(side)),
            Fault::Heal => write!(f, "heal everything"),
            Fault::PacketLoss { rate } => write!(f, "packet loss {rate}"),
            Fault::Latency {
                range: Some((a, b)),
            } => {
                write!(f, "latency {}..{} us", a.as_micros(), b.as_micros())
            }
            Fault::Latency { range: None } => write!(f, "latency default"),
            Fault::DiskEio {
                node,
                write_rate,
                sync_rate,
            } => {
                write!(f, "disk eio on {node}: write {write_rate} sync {sync_rate}")
            }
            Fault::DiskTorn { node, on } => write!(f, "torn writes on {node}: {on}"),
            Fault::BitFlip(n) => write!(f, "bit flip on {n}"),
            Fault::DiskFull {
                node,
                headroom_bytes: Some(h),
            } => {
                write!(f, "disk full on {node} (headroom {h} bytes)")
            }
            Fault::DiskFull {
                node,
                headroom_bytes: None,
            } => write!(f, "disk unlimited on {node}"),
            Fault::ClockSkew { node, offset_ms } => {
                write!(f, "clock of {node} at true time {offset_ms:+} ms")
            }
            Fault::DiskWipe(n) => {
                write!(f, "wipe the disk of {n} (kill + power loss + empty drive)")
            }
            Fault::SlowDisk {
                node,
                latency: Some(l),
            } => write!(
                f,
                "slow disk on {node}: +{} ms per write and sync",
                l.as_millis()
            ),
            Fault::SlowDisk {
                node,
                latency: None,
            } => write!(f, "disk of {node} at its usual speed"),
            Fault::MetadataDiskEio { node, on: true } => {
                write!(f, "metadata log drive of {node} fails (eio)")
            }
            Fault::MetadataDiskEio { node, on: false } => {
                write!(f, "metadata log drive of {node} works again")
            }
        }
    }
}

/// What the simulator offers the nemesis: the node and network primitives, synchronous (they
/// take effect at the current simulated instant) and infallible except where noted.
pub trait Harness {
    /// Every node, in a fixed order.
    fn nodes(&self) -> Vec<Node>;
    /// Kills the node's process now (all its tasks stop; its connections close).
    fn kill(&mut self, node: Node);
    /// Boots the node again (its `init` runs anew).
    fn restart(&mut self, node: Node);
    fn pause(&mut self, node: Node);
    fn resume(&mut self, node: Node);
    fn clog_node(&mut self, node: Node);
    fn unclog_node(&mut self, node: Node);
    fn clog_link(&mut self, from: Node, to: Node);
    fn unclog_link(&mut self, from: Node, to: Node);
    fn set_packet_loss(&mut self, rate: f64);
    /// `None`: the simulator's default.
    fn set_latency(&mut self, range: Option<(Duration, Duration)>);
    /// The node's disk, if it has one (brokers do).
    fn disk(&self, node: Node) -> Option<FaultyDisk>;
    /// The disk configuration the node started with (what healing returns to).
    fn baseline_disk_config(&self, node: Node) -> FaultyDiskConfig;
    /// The node's wall clock, if it has one of its own (brokers do).
    fn clock(&self, node: Node) -> Option<SkewedClock>;
    /// Holds `which` requests in the network from now on (see [`Fault::Hold`]).
    fn hold_requests(&mut self, which: &HeldRequests);
    /// Ends every hold and delivers every request still held now; how many were.
    fn release_held_requests(&mut self) -> u32;
}

/// What applying a fault did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It took effect; the text says how (e.g. which bit flipped).
    Done(String),
    /// It did not apply in the current state (crash of a node that is down, ...).
    Skipped(String),
}

/// The nemesis's memory of what it broke, so that `Heal` can undo everything and the harness
/// can refuse faults that make no sense (pausing a dead node).
#[derive(Clone, Debug, Default)]
pub struct Nemesis {
    down: BTreeSet<Node>,
    paused: BTreeSet<Node>,
    isolated: BTreeSet<Node>,
    cut: BTreeSet<(Node, Node)>,
    /// Nodes whose disk failed operations since the last heal: they get a clean restart.
    disk_degraded: BTreeSet<Node>,
}

impl Nemesis {
    pub fn new() -> Nemesis {
        Nemesis::default()
    }

    pub fn is_down(&self, node: Node) -> bool {
        self.down.contains(&node)
    }

    pub fn is_paused(&self, node: Node) -> bool {
        self.paused.contains(&node)
    }

    /// Applies `fault` now.
    pub fn apply(&mut self, fault: &Fault, h: &mut dyn Harness) -> Applied {
        use Applied::{Done, Skipped};
        match *fault {
            Fault::Crash(node) => {
                if self.down.contains(&node) {
                    return Skipped(format!("{node} is already down"));
                }
                // Kill and power loss at the same instant: nothing of the node runs between.
                h.kill(node);
                let lost = h.disk(node).map(|disk| {
                    let before = disk.fault_counts();
                    disk.crash();
                    let after = disk.fault_counts();
                    (
                        after.lost_bytes - before.lost_bytes,
                        after.torn_writes - before.torn_writes,
                    )
                });
                self.down.insert(node);
                self.paused.remove(&node);
                match lost {
                    Some((bytes, torn)) => {
                        Done(format!("lost {bytes} unsynced bytes, {torn} torn"))
                    }
                    None => Done("no disk".into()),
                }
            }
            Fault::DiskWipe(node) => {
                if self.down.contains(&node) {
                    return Skipped(format!("{node} is already down"));
                }
                let Some(disk) = h.disk(node) else {
                    return Skipped(format!("{node} has no disk"));
                };
                h.kill(node);
                disk.crash();
                let metadata_log = |p: &Path| {
                    p.file_name()
                        .is_some_and(|n| n == broker::controller::raft::METADATA_DIR)
                };
                let wiped = disk.wipe(metadata_log);
                self.down.insert(node);
                self.paused.remove(&node);
                Done(format!("{wiped} files gone"))
            }
            Fault::SlowDisk { node, latency } => {
                let Some(disk) = h.disk(node) else {
                    return Skipped(format!("{node} has no disk"));
                };
                let baseline = h.baseline_disk_config(node);
                let mut config = disk.config();
                config.write_latency = latency.or(baseline.write_latency);
                config.write_latency_spares = match latency {
                    // The drive of the partition logs: the metadata log is on its own.
                    Some(_) => Some(broker::controller::raft::METADATA_DIR.to_string()),
                    None => baseline.write_latency_spares,
                };
                disk.set_config(config);
                Done(String::new())
            }
            Fault::Restart(node) => {
                if self.paused.contains(&node) {
                    return Skipped(format!("{node} is paused"));
                }
                if !self.down.remove(&node) {
                    // A clean process restart: the page cache survives.
                    h.kill(node);
                }
                h.restart(node);
                self.disk_degraded.remove(&node);
                Done(String::new())
            }
            Fault::Pause(node) => {
                if self.down.contains(&node) || !self.paused.insert(node) {
                    return Skipped(format!("{node} is down or paused"));
                }
                h.pause(node);
                Done(String::new())
            }
            Fault::Resume(node) => {
                if !self.paused.remove(&node) {
                    return Skipped(format!("{node} is not paused"));
                }
                h.resume(node);
                Done(String::new())
            }
            Fault::Isolate(node) => {
                self.isolated.insert(node);
                h.clog_node(node);
                Done(String::new())
            }
            Fault::Reconnect(node) => {
                if !self.isolated.remove(&node) {
                    return Skipped(format!("{node} is not isolated"));
                }
                h.unclog_node(node);
                Done(String::new())
            }
            Fault::CutLink { from, to } => {
                self.cut.insert((from, to));
                h.clog_link(from, to);
                Done(String::new())
            }
            Fault::RestoreLink { from, to } => {
                if !self.cut.remove(&(from, to)) {
                    return Skipped(format!("{from} -> {to} is not cut"));
                }
                h.unclog_link(from, to);
                Done(String::new())
            }
            Fault::Split { ref side } | Fault::Mend { ref side } => {
                let split = matches!(fault, Fault::Split { .. });
                let others: Vec<Node> = h
                    .nodes()
                    .into_iter()
                    .filter(|n| !side.contains(n))
                    .collect();
                if side.is_empty() || others.is_empty() {
                    return Skipped("one side of the split is empty".into());
                }
                let mut links = 0;
                for &a in side {
                    for &b in &others {
                        for (from, to) in [(a, b), (b, a)] {
                            if split && self.cut.insert((from, to)) {
                                h.clog_link(from, to);
                                links += 1;
                            } else if !split && self.cut.remove(&(from, to)) {
                                h.unclog_link(from, to);
                                links += 1;
                            }
                        }
                    }
                }
                Done(format!("{links} links"))
            }
            Fault::PacketLoss { rate } => {
                h.set_packet_loss(rate);
                Done(String::new())
            }
            Fault::Latency { range } => {
                h.set_latency(range);
                Done(String::new())
            }
            Fault::DiskEio {
                node,
                write_rate,
                sync_rate,
            } => {
                let Some(disk) = h.disk(node) else {
                    return Skipped(format!("{node} has no disk"));
                };
                let mut config = disk.config();
                config.write_eio_rate = write_rate;
                config.sync_eio_rate = sync_rate;
                disk.set_config(config);
                if write_rate > 0.0 || sync_rate > 0.0 {
                    self.disk_degraded.insert(node);
                }
                Done(String::new())
            }
            Fault::MetadataDiskEio { node, on } => {
                let Some(disk) = h.disk(node) else {
                    return Skipped(format!("{node} has no disk"));
                };
                let dir = broker::controller::raft::METADATA_DIR;
                if on {
                    disk.fail_io_in(dir);
                } else {
                    disk.heal_io_in(dir);
                }
                // No clean restart at the heal (not `disk_degraded`): the node halts and is
                // restarted on its own, or the fault found it wanting.
                Done(String::new())
            }
            Fault::DiskTorn { node, on } => {
                let Some(disk) = h.disk(node) else {
                    return Skipped(format!("{node} has no disk"));
                };
                let mut config = disk.config();
                config.torn_writes = on;
                disk.set_config(config);
                Done(String::new())
            }
            Fault::BitFlip(node) => {
                let Some(disk) = h.disk(node) else {
                    return Skipped(format!("{node} has no disk"));
                };
                let segment = |p: &Path| p.extension().is_some_and(|e| e == "log");
                match disk.flip_random_bit_matching(segment) {
                    Some((path, pos, bit)) => {
                        Done(format!("{} byte {pos} bit {bit}", path.display()))
                    }
                    None => Skipped("no segment bytes to flip".into()),
                }
            }
            Fault::DiskFull {
                node,
                headroom_bytes,
            } => {
                let Some(disk) = h.disk(node) else {
                    return Skipped(format!("{node} has no disk"));
                };
                match headroom_bytes {
                    Some(headroom) => {
                        let capacity = disk.used_bytes() + headroom;
                        disk.set_capacity(Some(capacity));
                        self.disk_degraded.insert(node);
                        Done(format!("capacity {capacity} bytes"))
                    }
                    None => {
                        disk.set_capacity(h.baseline_disk_config(node).capacity_bytes);
                        Done(String::new())
                    }
                }
            }
            Fault::ClockSkew { node, offset_ms } => {
                let Some(clock) = h.clock(node) else {
                    return Skipped(format!("{node} has no clock of its own"));
                };
                clock.set_offset_ms(offset_ms);
                Done(String::new())
            }
            Fault::Hold(ref which) => {
                h.hold_requests(which);
                Done(String::new())
            }
            Fault::Heal => {
                let mut done = Vec::new();
                let held = h.release_held_requests();
                if held > 0 {
                    done.push(format!("delivered {held} held requests"));
                }
                for node in h.nodes() {
                    if let Some(clock) = h.clock(node).filter(|c| c.offset_ms() != 0) {
                        clock.set_offset_ms(0);
                        done.push(format!("reset the clock of {node}"));
                    }
                }
                h.set_packet_loss(0.0);
                h.set_latency(None);
                for node in std::mem::take(&mut self.isolated) {
                    h.unclog_node(node);
                }
                for (from, to) in std::mem::take(&mut self.cut) {
                    h.unclog_link(from, to);
                }
                for node in std::mem::take(&mut self.paused) {
                    h.resume(node);
                    done.push(format!("resumed {node}"));
                }
                for node in h.nodes() {
                    if let Some(disk) = h.disk(node) {
                        disk.set_config(h.baseline_disk_config(node));
                        disk.heal_io_in(broker::controller::raft::METADATA_DIR);
                    }
                }
                for node in std::mem::take(&mut self.down) {
                    h.restart(node);
                    self.disk_degraded.remove(&node);
                    done.push(format!("restarted {node}"));
                }
                for node in std::mem::take(&mut self.disk_degraded) {
                    h.kill(node);
                    h.restart(node);
                    done.push(format!("clean restart of {node} (its disk misbehaved)"));
                }
                Done(done.join(", "))
            }
        }
    }
}
