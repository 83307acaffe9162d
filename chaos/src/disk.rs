//! [`FaultyDisk`]: an in-memory [`Disk`] that loses, tears, fails and corrupts like a real one.
//!
//! # Fault model
//!
//! Every fault below is one a real disk under a real kernel produces. The broker must survive
//! each of them without losing an acknowledged record, or must stop serving the data it can no
//! longer trust; a checker failure is only a bug when the fault that caused it is listed here.
//!
//! - **Power loss** ([`FaultyDisk::crash`]). Strikes between any two operations, including
//!   between the steps of an operation that sleeps (latency). Every file's content reverts to
//!   what its last successful sync made durable, and every directory's entries revert to what
//!   its last successful `sync_dir` made durable: unsynced creations (of files, and of
//!   directories made with `create_dir`) and renames vanish,
//!   unsynced removals come back. Why survive it: the machine can lose power at any time, and
//!   the page cache is volatile.
//! - **Torn writes** ([`FaultyDiskConfig::torn_writes`]). Strikes at a crash, on a file whose
//!   unsynced content only extends its durable content (appends since the last sync): a random
//!   prefix of that tail survives, cut at a 512-byte sector boundary counted from the start of
//!   the file, or at the end. The cut can fall inside one append. Why: the kernel writes dirty
//!   pages back on its own schedule, and a sector is the unit a disk writes atomically. Recovery
//!   must find the last whole record by checksum and truncate the rest.
//! - **Handles die with the process**. A handle opened before a crash returns `EIO` for every
//!   operation and reports length 0, and any operation in flight at the crash (sleeping its
//!   latency) fails with `EIO` without landing. Why: after a restart, no file descriptor from
//!   before exists; code that keeps one is a bug the simulation must expose.
//! - **EIO on append** (chosen with [`FaultyDisk::fail_next_write`] or [`FaultyDisk::fail_io_under`],
//!   or random at [`FaultyDiskConfig::write_eio_rate`]). A random prefix of the buffer, possibly
//!   empty, lands in the file before the error. Why: the contract leaves the tail unknown after
//!   a failed append; the log must not ack, and must truncate or go offline.
//! - **EIO on sync** (chosen with [`FaultyDisk::fail_next_sync`] or [`FaultyDisk::fail_io_under`],
//!   or random at [`FaultyDiskConfig::sync_eio_rate`]). The bytes since the last good sync are
//!   dropped at once (content reverts to durable content) and the sync returns `EIO`. Why: on
//!   Linux a failed fsync marks the dirty pages clean and forgets the error ("fsyncgate"); a
//!   retried sync then succeeds over data that is gone. Truncations under
//!   [`FaultyDisk::fail_io_under`] fail with `EIO` too, and change nothing.
//! - **Bit flips at rest** ([`FaultyDisk::flip_bit`], [`FaultyDisk::flip_random_bit`]). One bit
//!   changes in both the content reads see and the durable content, anywhere in a file. Why:
//!   media decay and firmware bugs; the disk does not checksum, so the log's CRCs must catch it.
//! - **ENOSPC** ([`FaultyDiskConfig::capacity_bytes`], [`FaultyDisk::set_capacity`]). An append
//!   that would take the sum of the lengths of all files the disk holds (by a live or durable
//!   name, or through an open handle) beyond the capacity writes nothing and fails with raw OS
//!   error 28 (`StorageFull`). Why: disks fill up; the broker must refuse writes, not corrupt.
//! - **Latency** ([`FaultyDiskConfig::latency`]). Every operation first sleeps a random time in
//!   `min..=max` with `tokio::time::sleep` (virtual under madsim), so operations interleave with
//!   other tasks, crashes and kills the way they do on a real disk.
//! - **A slow disk** ([`FaultyDiskConfig::write_latency`]). Every append and sync (the
//!   operations that wait for the device) sleeps this long on top of any latency above; reads,
//!   which a page cache serves, do not. No random draw, so switching it on and off leaves the
//!   disk's fault stream as it was. Files under a directory named by
//!   [`FaultyDiskConfig::write_latency_spares`] are spared, as if on another device. Why: a
//!   failing drive retrying sectors, a saturated or
//!   throttled volume, a noisy neighbour; the broker must keep its promises at any speed, and a
//!   follower that cannot keep up must fall out of the ISR rather than hold up acks=all.
//! - **Wipe** ([`FaultyDisk::wipe`]). Every file and directory the caller does not keep
//!   vanishes from both the live and the durable tree, as when a failed drive is replaced by an
//!   empty one. Struck only on a powered-off node (the nemesis kills the node first).
//!
//! Outside the model: lost or misdirected writes of synced data, reads that fail, a `sync_dir`
//! that fails, and renames across directories (refused with an error).
//!
//! # Determinism
//! All randomness comes from one splitmix64 generator seeded at construction (the harness
//! passes a seed drawn from madsim's seeded RNG), and all state sits in ordered maps, so one seed
//! and one schedule of operations give one outcome, in both builds.
//!
//! # Paths
//! Paths resolve from one root: `data/a` and `/data/a` name the same file. `..` is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use broker::disk::{DirLock, Disk, DiskFile, LockDirError, OpenMode};

/// The unit a disk writes atomically; torn writes are cut at multiples of it.
pub const SECTOR_BYTES: u64 = 512;

const ENOENT: i32 = 2;
const EIO: i32 = 5;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const ENOSPC: i32 = 28;
const ENOTEMPTY: i32 = 39;

type Ino = u64;
const ROOT: Ino = 0;

/// Which faults a [`FaultyDisk`] injects on its own. The default injects none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultyDiskConfig {
    /// On a crash, keep a random sector-aligned prefix of each file's unsynced appends.
    pub torn_writes: bool,
    /// Probability, per append, of `EIO` after a random prefix of the buffer lands.
    pub write_eio_rate: f64,
    /// Probability, per sync, of `EIO` that drops the bytes since the last good sync.
    pub sync_eio_rate: f64,
    /// Total bytes the files may hold; `None` is unlimited.
    pub capacity_bytes: Option<u64>,
    /// Each operation first sleeps a random time in `min..=max`.
    pub latency: Option<(Duration, Duration)>,
    /// Each append and sync also sleeps this long (a slow device) ...
    pub write_latency: Option<Duration>,
    /// ... but for files under a directory of this name, which sit on another device (the
    /// metadata log on its own `metadata.log.dir`).
    pub write_latency_spares: Option<String>,
}

/// How many faults a [`FaultyDisk`] has injected, for run reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub crashes: u64,
    /// Files whose crash kept part, but not all, of their unsynced appends.
    pub torn_writes: u64,
    /// Unsynced bytes dropped by crashes and failed syncs.
    pub lost_bytes: u64,
    pub write_eios: u64,
    pub sync_eios: u64,
    pub enospcs: u64,
    pub bit_flips: u64,
}

/// The faulty simulated disk. Cheap to clone: clones share one disk, so the harness keeps one
/// outside a simulated node and hands clones to each incarnation of the broker.
#[derive(Clone)]
pub struct FaultyDisk {
    state: Arc<Mutex<State>>,
}

struct State {
    config: FaultyDiskConfig,
    rng: SplitMix64,
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    next_ino: Ino,
    nodes: BTreeMap<Ino, Node>,
    fail_next_writes: u32,
    fail_next_syncs: u32,
    failing_prefixes: BTreeSet<PathBuf>,
    /// Directory names under which I/O fails wherever they sit ([`FaultyDisk::fail_io_in`]).
    failing_dir_names: BTreeSet<String>,
    counts: FaultCounts,
    /// Directories held by a [`DirLock`], by their resolved names. A crash, or the harness
    /// saying the holding process died ([`FaultyDisk::release_locks`]), clears them, as an OS
    /// lock goes with its process whenever the process's objects are dropped.
    locked_dirs: BTreeSet<Vec<String>>,
    /// Bumped by every release of all locks; a [`DirLock`] from before releases nothing.
    lock_epoch: u64,
    /// Whether some inode may be unreachable: set by every change that drops or replaces a
    /// name, cleared by a collection that left none behind. A closed handle collects only when
    /// it is set (a segment's every atomic checkpoint closed a handle, and walking the whole
    /// tree each time was 2 % of a simulation).
    maybe_garbage: bool,
}

enum Node {
    File(FileNode),
    Dir(DirNode),
}

struct FileNode {
    /// What reads see.
    live: Vec<u8>,
    /// What survives power loss.
    durable: Vec<u8>,
    open_handles: usize,
    /// Known to hold: `live` is `durable` with bytes appended. Set by a sync, kept by appends;
    /// every other change of either content clears it, and the next sync compares them. A
    /// sync then copies the new tail without comparing the whole file first: each of a
    /// segment's syncs compared up to its full length (1-2 % of a swarm run in `memcmp`).
    extends_durable: bool,
}

#[derive(Default)]
struct DirNode {
    live: BTreeMap<String, Ino>,
    durable: BTreeMap<String, Ino>,
}

/// splitmix64: small, fast, and good enough to drive fault injection.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn names_of(path: &Path) -> io::Result<Vec<String>> {
    Ok(names_in(path)?.into_iter().map(str::to_owned).collect())
}

/// [`names_of`], borrowed from `path`: what a walk needs, without a string per name (every
/// open, rename and removal walks its path).
fn names_in(path: &Path) -> io::Result<Vec<&str>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => names
                .push(name.to_str().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "non-UTF-8 path")
                })?),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("FaultyDisk does not resolve {}", path.display()),
                ))
            }
        }
    }
    Ok(names)
}

impl State {
    fn file(&mut self, ino: Ino) -> &mut FileNode {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(file)) => file,
            _ => panic!("inode {ino} is not a file"),
        }
    }

    fn dir(&mut self, ino: Ino) -> &mut DirNode {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(dir)) => dir,
            _ => panic!("inode {ino} is not a directory"),
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes.get(&ino), Some(Node::Dir(_)))
    }

    /// Walks `names` from the root through live (or durable) entries.
    fn walk(&self, names: &[&str], durable: bool) -> io::Result<Ino> {
        let mut ino = ROOT;
        for &name in names {
            let Some(Node::Dir(dir)) = self.nodes.get(&ino) else {
                return Err(os_error(ENOTDIR));
            };
            let entries = if durable { &dir.durable } else { &dir.live };
            ino = *entries.get(name).ok_or_else(|| os_error(ENOENT))?;
        }
        Ok(ino)
    }

    fn live_dir(&self, path: &Path) -> io::Result<Ino> {
        let ino = self.walk(&names_in(path)?, false)?;
        if !self.is_dir(ino) {
            return Err(os_error(ENOTDIR));
        }
        Ok(ino)
    }

    /// The live directory holding `path`, and the last name of `path`.
    fn parent_and_name(&self, path: &Path) -> io::Result<(Ino, String)> {
        let mut names = names_in(path)?;
        let name = names
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root has no name"))?;
        let parent = self.walk(&names, false)?;
        if !self.is_dir(parent) {
            return Err(os_error(ENOTDIR));
        }
        Ok((parent, name.to_owned()))
    }

    fn new_node(&mut self, node: Node) -> Ino {
        self.next_ino += 1;
        self.nodes.insert(self.next_ino, node);
        self.next_ino
    }

    fn used_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| match node {
                Node::File(file) => file.live.len() as u64,
                Node::Dir(_) => 0,
            })
            .sum()
    }

    /// A name was dropped or replaced: drops the inodes nothing reaches any more.
    fn unlinked(&mut self) {
        self.maybe_garbage = true;
        self.collect_garbage();
    }

    /// Drops the inodes no live name, durable name or open handle reaches.
    fn collect_garbage(&mut self) {
        if !self.maybe_garbage {
            return;
        }
        // Marks indexed by inode (every inode is at most `next_ino`), one bit per tree: a flat
        // array, not a set, since a collection walks every node (sets made it 2 % of a run).
        const LIVE: u8 = 1;
        const DURABLE: u8 = 2;
        let mut marks = vec![0u8; self.next_ino as usize + 1];
        let mut stack = Vec::new();
        for tree in [LIVE, DURABLE] {
            stack.push(ROOT);
            while let Some(ino) = stack.pop() {
                let Some(mark) = marks.get_mut(ino as usize) else {
                    continue;
                };
                if *mark & tree != 0 {
                    continue;
                }
                *mark |= tree;
                if let Some(Node::Dir(dir)) = self.nodes.get(&ino) {
                    stack.extend(if tree == DURABLE {
                        dir.durable.values()
                    } else {
                        dir.live.values()
                    });
                }
            }
        }
        let mut kept_open = false;
        self.nodes.retain(|&ino, node| {
            if marks.get(ino as usize).is_some_and(|&m| m != 0) {
                return true;
            }
            let open = matches!(node, Node::File(f) if f.open_handles > 0);
            kept_open |= open;
            open
        });
        // An unreachable file kept for its handles is garbage once they close.
        self.maybe_garbage = kept_open;
    }

    fn under_failing_prefix(&self, path: &Path) -> bool {
        self.failing_prefixes
            .iter()
            .any(|prefix| path.starts_with(prefix))
            || (!self.failing_dir_names.is_empty()
                && path.components().any(|c| {
                    c.as_os_str()
                        .to_str()
                        .is_some_and(|name| self.failing_dir_names.contains(name))
                }))
    }

    fn write_fails(&mut self, path: &Path) -> bool {
        if self.fail_next_writes > 0 {
            self.fail_next_writes -= 1;
            return true;
        }
        self.under_failing_prefix(path) || self.rng.chance(self.config.write_eio_rate)
    }

    fn sync_fails(&mut self, path: &Path) -> bool {
        if self.fail_next_syncs > 0 {
            self.fail_next_syncs -= 1;
            return true;
        }
        self.under_failing_prefix(path) || self.rng.chance(self.config.sync_eio_rate)
    }

    /// The files reachable by live names, with their paths, in path order.
    fn live_files(&self) -> Vec<(PathBuf, Ino)> {
        let mut files = Vec::new();
        let mut stack = vec![(PathBuf::from("/"), ROOT)];
        while let Some((path, ino)) = stack.pop() {
            match self.nodes.get(&ino) {
                Some(Node::Dir(dir)) => stack.extend(
                    dir.live
                        .iter()
                        .rev()
                        .map(|(name, &child)| (path.join(name), child)),
                ),
                Some(Node::File(_)) => files.push((path, ino)),
                None => {}
            }
        }
        files
    }
}

impl FaultyDisk {
    /// An empty disk whose faults are drawn from `seed`.
    pub fn new(seed: u64, config: FaultyDiskConfig) -> FaultyDisk {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        let state = State {
            config,
            rng: SplitMix64(seed),
            generation: 0,
            next_ino: ROOT,
            nodes,
            fail_next_writes: 0,
            fail_next_syncs: 0,
            failing_prefixes: BTreeSet::new(),
            failing_dir_names: BTreeSet::new(),
            counts: FaultCounts::default(),
            locked_dirs: BTreeSet::new(),
            lock_epoch: 0,
            maybe_garbage: false,
        };
        FaultyDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sleeps the configured latency, if any, and returns the generation it started in. The
    /// lock is not held across the sleep.
    async fn delay(&self) -> u64 {
        let (generation, pause) = {
            let mut state = self.lock();
            let generation = state.generation;
            let pause = state.config.latency.map(|(min, max)| {
                assert!(min <= max, "latency min exceeds max");
                let spread = (max - min).as_nanos() as u64;
                min + Duration::from_nanos(state.rng.below(spread + 1))
            });
            (generation, pause)
        };
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        generation
    }

    /// Sleeps the slow-disk latency of appends and syncs to `path`, if any (no random draw).
    async fn slow_write(&self, path: &Path) {
        let pause = {
            let state = self.lock();
            let spared = state
                .config
                .write_latency_spares
                .as_deref()
                .is_some_and(|dir| path.components().any(|c| c.as_os_str() == dir));
            state.config.write_latency.filter(|_| !spared)
        };
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }

    /// The state, or `EIO` if a crash struck since `generation`: an operation in flight at a
    /// power loss never lands after it.
    fn lock_since(&self, generation: u64) -> io::Result<MutexGuard<'_, State>> {
        let state = self.lock();
        if state.generation != generation {
            return Err(os_error(EIO));
        }
        Ok(state)
    }

    /// Power loss: every file and directory reverts to its durable state (with torn tails when
    /// configured), handles opened before it return `EIO`, and unreachable inodes are dropped.
    pub fn crash(&self) {
        let mut state = self.lock();
        let State {
            nodes,
            rng,
            config,
            counts,
            ..
        } = &mut *state;
        counts.crashes += 1;
        for node in nodes.values_mut() {
            match node {
                Node::Dir(dir) => dir.live = dir.durable.clone(),
                Node::File(file) => {
                    let (durable_len, live_len) =
                        (file.durable.len() as u64, file.live.len() as u64);
                    let extends = live_len > durable_len
                        && (file.extends_durable || file.live.starts_with(&file.durable));
                    let keep = if config.torn_writes && extends {
                        // Candidates: the durable end, each sector boundary strictly inside the
                        // unsynced tail, and the live end.
                        let boundaries = (live_len - 1) / SECTOR_BYTES - durable_len / SECTOR_BYTES;
                        match rng.below(boundaries + 2) {
                            0 => durable_len,
                            i if i == boundaries + 1 => live_len,
                            i => (durable_len / SECTOR_BYTES + i) * SECTOR_BYTES,
                        }
                    } else {
                        durable_len
                    };
                    if extends {
                        assert!(durable_len <= keep && keep <= live_len);
                        if durable_len < keep && keep < live_len {
                            counts.torn_writes += 1;
                        }
                        counts.lost_bytes += live_len - keep;
                        file.live.truncate(keep as usize);
                        file.durable = file.live.clone();
                    } else {
                        counts.lost_bytes += live_len.saturating_sub(durable_len);
                        file.live = file.durable.clone();
                    }
                    file.extends_durable = true;
                    file.open_handles = 0;
                }
            }
        }
        state.generation += 1;
        state.locked_dirs.clear();
        state.lock_epoch += 1;
        state.unlinked();
    }

    /// The process holding this disk's directory locks died (killed or restarted without a
    /// power loss): its locks are gone at once, as the kernel drops a dead process's flocks,
    /// whenever the simulator gets round to dropping that process's objects.
    pub fn release_locks(&self) {
        let mut state = self.lock();
        state.locked_dirs.clear();
        state.lock_epoch += 1;
    }

    /// The drive is replaced by an empty one, except for what `keep` accepts (a path and
    /// everything under it): every other file and directory leaves both the live and the
    /// durable tree. Handles opened before die (`EIO`). Returns how many files vanished.
    pub fn wipe(&self, keep: impl Fn(&Path) -> bool) -> usize {
        fn prune(
            state: &mut State,
            ino: Ino,
            path: &Path,
            keep: &dyn Fn(&Path) -> bool,
        ) -> (bool, usize) {
            if keep(path) {
                return (true, 0);
            }
            let Some(Node::Dir(dir)) = state.nodes.get(&ino) else {
                return (false, 1);
            };
            let mut children: BTreeMap<String, BTreeSet<Ino>> = BTreeMap::new();
            for (name, &child) in dir.live.iter().chain(dir.durable.iter()) {
                children.entry(name.clone()).or_default().insert(child);
            }
            let (mut kept_any, mut wiped) = (false, 0);
            for (name, inos) in children {
                for child in inos {
                    let (kept, n) = prune(state, child, &path.join(&name), keep);
                    wiped += n;
                    kept_any |= kept;
                    if !kept {
                        let dir = state.dir(ino);
                        dir.live.retain(|n, i| !(n == &name && *i == child));
                        dir.durable.retain(|n, i| !(n == &name && *i == child));
                    }
                }
            }
            (kept_any, wiped)
        }
        let mut state = self.lock();
        let (_, wiped) = prune(&mut state, ROOT, Path::new("/"), &keep);
        // The root itself always stays.
        state.generation += 1;
        state.locked_dirs.clear();
        state.lock_epoch += 1;
        for node in state.nodes.values_mut() {
            if let Node::File(file) = node {
                file.open_handles = 0;
            }
        }
        state.unlinked();
        wiped
    }

    /// The next append (on any file) fails with `EIO` after landing a random prefix.
    pub fn fail_next_write(&self) {
        self.lock().fail_next_writes += 1;
    }

    /// The next sync (on any file) fails with `EIO` and drops the unsynced bytes.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_syncs += 1;
    }

    /// Every append, sync and truncate through a handle opened at a path under `prefix` fails
    /// with `EIO` until [`FaultyDisk::heal_io_under`]. `/` fails the whole disk.
    pub fn fail_io_under(&self, prefix: impl Into<PathBuf>) {
        self.lock().failing_prefixes.insert(prefix.into());
    }

    /// Undoes [`FaultyDisk::fail_io_under`] for `prefix`.
    pub fn heal_io_under(&self, prefix: &Path) {
        self.lock().failing_prefixes.remove(prefix);
    }

    /// [`FaultyDisk::fail_io_under`] every directory named `dir_name`, wherever it sits (the
    /// metadata log's directory, on a drive of its own, whatever the data directory is).
    pub fn fail_io_in(&self, dir_name: &str) {
        self.lock().failing_dir_names.insert(dir_name.to_string());
    }

    /// Undoes [`FaultyDisk::fail_io_in`] for `dir_name`.
    pub fn heal_io_in(&self, dir_name: &str) {
        self.lock().failing_dir_names.remove(dir_name);
    }

    /// The bytes the disk holds now, as the capacity check counts them (every file by a live or
    /// durable name, or through an open handle). A nemesis fills the disk relative to this.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Changes the capacity at runtime; `None` is unlimited.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().config.capacity_bytes = capacity_bytes;
    }

    /// Replaces the fault configuration (for example with the default, to heal the disk).
    pub fn set_config(&self, config: FaultyDiskConfig) {
        self.lock().config = config;
    }

    pub fn config(&self) -> FaultyDiskConfig {
        self.lock().config.clone()
    }

    pub fn fault_counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Flips bit `bit` (0..8) of byte `byte_pos` of the file at `path`, in the content reads
    /// see and in the durable content, wherever the byte exists.
    pub fn flip_bit(&self, path: &Path, byte_pos: u64, bit: u8) -> io::Result<()> {
        assert!(bit < 8, "a byte has 8 bits");
        let mut state = self.lock();
        let ino = state.walk(&names_in(path)?, false)?;
        if state.is_dir(ino) {
            return Err(os_error(EISDIR));
        }
        let file = state.file(ino);
        let pos = usize::try_from(byte_pos).unwrap_or(usize::MAX);
        if pos >= file.live.len().max(file.durable.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bit flip beyond the end",
            ));
        }
        for content in [&mut file.live, &mut file.durable] {
            if let Some(byte) = content.get_mut(pos) {
                *byte ^= 1 << bit;
            }
        }
        file.extends_durable = false;
        state.counts.bit_flips += 1;
        Ok(())
    }

    /// Flips one random bit of one random byte among all the files reachable by name, chosen
    /// uniformly over their bytes. Returns where, or `None` when every file is empty.
    pub fn flip_random_bit(&self) -> Option<(PathBuf, u64, u8)> {
        self.flip_random_bit_matching(|_| true)
    }

    /// [`FaultyDisk::flip_random_bit`] over only the files whose path `filter` accepts (a
    /// nemesis aims at the log segments, say, and spares the metadata).
    pub fn flip_random_bit_matching(
        &self,
        filter: impl Fn(&Path) -> bool,
    ) -> Option<(PathBuf, u64, u8)> {
        let (path, pos, bit) = {
            let mut state = self.lock();
            let files: Vec<(PathBuf, u64)> = state
                .live_files()
                .into_iter()
                .filter(|(path, _)| filter(path))
                .map(|(path, ino)| (path, state.file(ino).live.len() as u64))
                .collect();
            let total: u64 = files.iter().map(|(_, len)| len).sum();
            if total == 0 {
                return None;
            }
            let mut pos = state.rng.below(total);
            let bit = state.rng.below(8) as u8;
            let (path, _) = files
                .into_iter()
                .find(|(_, len)| {
                    let here = pos < *len;
                    if !here {
                        pos -= len;
                    }
                    here
                })
                .expect("pos falls in some file");
            (path, pos, bit)
        };
        self.flip_bit(&path, pos, bit)
            .expect("the chosen byte exists");
        Some((path, pos, bit))
    }

    /// The durable length of the file a crash now would leave at `path` (torn tails aside).
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        self.durable_content(path)
            .map(|content| content.len() as u64)
    }

    /// The durable content of the file a crash now would leave at `path` (torn tails aside).
    pub fn durable_content(&self, path: &Path) -> Option<Vec<u8>> {
        let mut state = self.lock();
        let ino = state.walk(&names_in(path).ok()?, true).ok()?;
        if state.is_dir(ino) {
            return None;
        }
        Some(state.file(ino).durable.clone())
    }
}

impl fmt::Debug for FaultyDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FaultyDisk")
            .field("generation", &state.generation)
            .field("inodes", &state.nodes.len())
            .field("config", &state.config)
            .field("counts", &state.counts)
            .finish()
    }
}

/// A handle on one file of a [`FaultyDisk`].
struct FaultyFile {
    disk: FaultyDisk,
    ino: Ino,
    generation: u64,
    /// The path it was opened at, for [`FaultyDisk::fail_io_under`].
    path: PathBuf,
}

impl fmt::Debug for FaultyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyFile({}, inode {})", self.path.display(), self.ino)
    }
}

impl FaultyFile {
    /// The disk state, or `EIO` if a crash has killed this handle.
    fn lock_live(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.disk.lock();
        if state.generation != self.generation {
            return Err(os_error(EIO));
        }
        Ok(state)
    }
}

impl Drop for FaultyFile {
    fn drop(&mut self) {
        let mut state = self.disk.lock();
        if state.generation == self.generation {
            let file = state.file(self.ino);
            file.open_handles -= 1;
            if file.open_handles == 0 {
                state.collect_garbage();
            }
        }
    }
}

#[async_trait]
impl DiskFile for FaultyFile {
    async fn append(&self, buf: &[u8]) -> io::Result<u64> {
        self.disk.delay().await;
        self.disk.slow_write(&self.path).await;
        let mut state = self.lock_live()?;
        if let Some(capacity) = state.config.capacity_bytes {
            if state.used_bytes() + buf.len() as u64 > capacity {
                state.counts.enospcs += 1;
                return Err(os_error(ENOSPC));
            }
        }
        if state.write_fails(&self.path) {
            let landed = state.rng.below(buf.len() as u64 + 1) as usize;
            state.file(self.ino).live.extend_from_slice(&buf[..landed]);
            state.counts.write_eios += 1;
            return Err(os_error(EIO));
        }
        let file = state.file(self.ino);
        let pos = file.live.len() as u64;
        file.live.extend_from_slice(buf);
        Ok(pos)
    }

    // `drop_cached` is the trait's no-op: this disk has no page cache, and the hint changes
    // nothing a read, a sync or a crash sees (no delay either: it adds no simulated event).

    async fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.disk.delay().await;
        let mut state = self.lock_live()?;
        let live = &state.file(self.ino).live;
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(live.len());
        let n = buf.len().min(live.len() - start);
        buf[..n].copy_from_slice(&live[start..start + n]);
        Ok(n)
    }

    /// As `read_at` into a fresh buffer (the same one latency draw), but copies only the bytes
    /// there are: the default zero-fills `len` bytes first, and a fetch asks for up to a
    /// megabyte where a simulated segment holds kilobytes.
    async fn read_vec_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.disk.delay().await;
        let mut state = self.lock_live()?;
        let live = &state.file(self.ino).live;
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(live.len());
        let n = len.min(live.len() - start);
        Ok(live[start..start + n].to_vec())
    }

    async fn sync(&self) -> io::Result<()> {
        self.disk.delay().await;
        self.disk.slow_write(&self.path).await;
        let mut state = self.lock_live()?;
        if state.sync_fails(&self.path) {
            let file = state.file(self.ino);
            let lost = (file.live.len() as u64).saturating_sub(file.durable.len() as u64);
            file.live = file.durable.clone();
            file.extends_durable = true;
            state.counts.sync_eios += 1;
            state.counts.lost_bytes += lost;
            return Err(os_error(EIO));
        }
        let file = state.file(self.ino);
        if file.extends_durable || file.live.starts_with(&file.durable) {
            let synced = file.durable.len();
            file.durable.extend_from_slice(&file.live[synced..]);
        } else {
            file.durable = file.live.clone();
        }
        file.extends_durable = true;
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.disk.delay().await;
        let mut state = self.lock_live()?;
        if state.under_failing_prefix(&self.path) {
            return Err(os_error(EIO));
        }
        let file = state.file(self.ino);
        assert!(
            len <= file.live.len() as u64,
            "truncate beyond the end of the file"
        );
        file.live.truncate(len as usize);
        file.extends_durable = false;
        Ok(())
    }

    fn len(&self) -> u64 {
        match self.lock_live() {
            Ok(mut state) => state.file(self.ino).live.len() as u64,
            Err(_) => 0,
        }
    }
}

/// A held directory lock of the simulated disk; dropping it releases the directory unless a
/// crash already did (a later holder's lock is not this guard's to release).
struct HeldDir {
    disk: FaultyDisk,
    names: Vec<String>,
    lock_epoch: u64,
}

impl fmt::Debug for HeldDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeldDir(/{})", self.names.join("/"))
    }
}

impl Drop for HeldDir {
    fn drop(&mut self) {
        let mut state = self.disk.lock();
        if state.lock_epoch == self.lock_epoch {
            let released = state.locked_dirs.remove(&self.names);
            assert!(released, "a held directory lock was not registered");
        }
    }
}

#[async_trait]
impl Disk for FaultyDisk {
    async fn lock_dir(&self, dir: &Path) -> Result<DirLock, LockDirError> {
        let failed = |source: io::Error| LockDirError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        // No latency and no random draw: taking the lock leaves every seed's schedule as it was.
        let names = names_of(dir).map_err(failed)?;
        let mut state = self.lock();
        state.live_dir(dir).map_err(failed)?;
        if !state.locked_dirs.insert(names.clone()) {
            return Err(LockDirError::InUse {
                dir: dir.to_path_buf(),
                pid: None,
            });
        }
        let lock_epoch = state.lock_epoch;
        drop(state);
        Ok(DirLock::new(HeldDir {
            disk: self.clone(),
            names,
            lock_epoch,
        }))
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let generation = self.delay().await;
        let names = names_of(dir)?;
        let mut state = self.lock_since(generation)?;
        let mut ino = ROOT;
        for name in names {
            let existing = state.dir(ino).live.get(&name).copied();
            ino = match existing {
                Some(child) if state.is_dir(child) => child,
                Some(_) => return Err(os_error(EEXIST)),
                None => {
                    let child = state.new_node(Node::Dir(DirNode::default()));
                    let parent = state.dir(ino);
                    parent.live.insert(name.clone(), child);
                    // A durable name left by an unsynced removal now names the new directory.
                    if parent.durable.insert(name, child).is_some() {
                        state.maybe_garbage = true;
                    }
                    child
                }
            };
        }
        Ok(())
    }

    async fn create_dir(&self, dir: &Path) -> io::Result<()> {
        // A plain mkdir: live at once, durable only through a sync of the parent, like a
        // file's creation. Its entries have their own durability: a directory whose name a
        // crash keeps holds what its own syncs made durable.
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let (parent, name) = state.parent_and_name(dir)?;
        match state.dir(parent).live.get(&name).copied() {
            Some(ino) if state.is_dir(ino) => Ok(()),
            Some(_) => Err(os_error(EEXIST)),
            None => {
                let child = state.new_node(Node::Dir(DirNode::default()));
                state.dir(parent).live.insert(name, child);
                Ok(())
            }
        }
    }

    async fn create_dirs(&self, dir: &Path, names: &[String]) -> io::Result<()> {
        // One operation (one latency draw), as the real disk's mkdirs and single sync are.
        // Only the named entries become durable: the contract promises nothing of the others.
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let parent = state.live_dir(dir)?;
        for name in names {
            if name.contains('/') || name == ".." || name == "." || name.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("create_dirs takes plain names, not {name}"),
                ));
            }
            let child = match state.dir(parent).live.get(name).copied() {
                Some(child) if state.is_dir(child) => child,
                Some(_) => return Err(os_error(EEXIST)),
                None => {
                    let child = state.new_node(Node::Dir(DirNode::default()));
                    state.dir(parent).live.insert(name.clone(), child);
                    child
                }
            };
            state.dir(parent).durable.insert(name.clone(), child);
        }
        state.unlinked();
        Ok(())
    }

    async fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn DiskFile>> {
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let (parent, name) = state.parent_and_name(path)?;
        let ino = match state.dir(parent).live.get(&name).copied() {
            Some(ino) if state.is_dir(ino) => return Err(os_error(EISDIR)),
            Some(_) if mode == OpenMode::CreateNew => return Err(os_error(EEXIST)),
            Some(ino) => ino,
            None if mode == OpenMode::Existing => return Err(os_error(ENOENT)),
            None => {
                let file = FileNode {
                    live: Vec::new(),
                    durable: Vec::new(),
                    open_handles: 0,
                    extends_durable: true,
                };
                let ino = state.new_node(Node::File(file));
                state.dir(parent).live.insert(name, ino);
                ino
            }
        };
        state.file(ino).open_handles += 1;
        let generation = state.generation;
        drop(state);
        Ok(Arc::new(FaultyFile {
            disk: self.clone(),
            ino,
            generation,
            path: path.to_owned(),
        }))
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let ino = state.live_dir(dir)?;
        Ok(state.dir(ino).live.keys().cloned().collect())
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let (parent, name) = state.parent_and_name(path)?;
        match state.dir(parent).live.get(&name).copied() {
            None => return Err(os_error(ENOENT)),
            Some(ino) if state.is_dir(ino) => return Err(os_error(EISDIR)),
            Some(_) => state.dir(parent).live.remove(&name),
        };
        state.unlinked();
        Ok(())
    }

    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let (parent, name) = state.parent_and_name(dir)?;
        let ino = *state
            .dir(parent)
            .live
            .get(&name)
            .ok_or_else(|| os_error(ENOENT))?;
        if !state.is_dir(ino) {
            return Err(os_error(ENOTDIR));
        }
        state.dir(parent).live.remove(&name);
        state.unlinked();
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let (from_parent, from_name) = state.parent_and_name(from)?;
        let (to_parent, to_name) = state.parent_and_name(to)?;
        if from_parent != to_parent {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "FaultyDisk renames only within one directory",
            ));
        }
        let dir = state.dir(from_parent);
        let ino = *dir.live.get(&from_name).ok_or_else(|| os_error(ENOENT))?;
        let target = dir.live.get(&to_name).copied();
        if from_name == to_name {
            return Ok(());
        }
        match (state.is_dir(ino), target) {
            (_, None) => {}
            (false, Some(target)) if state.is_dir(target) => return Err(os_error(EISDIR)),
            (false, Some(_)) => {}
            (true, Some(target)) if !state.is_dir(target) => return Err(os_error(ENOTDIR)),
            (true, Some(target)) if !state.dir(target).live.is_empty() => {
                return Err(os_error(ENOTEMPTY))
            }
            (true, Some(_)) => {}
        }
        let dir = state.dir(from_parent);
        dir.live.remove(&from_name);
        dir.live.insert(to_name, ino);
        state.unlinked();
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let generation = self.delay().await;
        let mut state = self.lock_since(generation)?;
        let ino = state.live_dir(dir)?;
        let dir = state.dir(ino);
        dir.durable = dir.live.clone();
        state.unlinked();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> &Path {
        Path::new(p)
    }

    /// A disk with `/d` created and `/d/f` opened, its name made durable.
    async fn disk_with_file(config: FaultyDiskConfig) -> (FaultyDisk, Arc<dyn DiskFile>) {
        let disk = FaultyDisk::new(7, config);
        disk.create_dir_all(path("/d")).await.unwrap();
        let file = disk.open(path("/d/f"), OpenMode::CreateNew).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        (disk, file)
    }

    async fn content(disk: &FaultyDisk, p: &str) -> Vec<u8> {
        broker::disk::read_file(disk, path(p)).await.unwrap()
    }

    #[tokio::test]
    async fn a_crash_loses_unsynced_bytes_and_keeps_synced_ones() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(b"synced").await.unwrap();
        file.sync().await.unwrap();
        file.append(b"unsynced").await.unwrap();
        disk.crash();
        assert_eq!(content(&disk, "/d/f").await, b"synced");
        assert_eq!(disk.fault_counts().lost_bytes, 8);
    }

    /// A sync copies only the appended tail while the live content extends the durable one; a
    /// truncate below the synced end breaks that, and the sync after it must make the whole
    /// live content durable, not the old durable bytes with the new tail.
    #[tokio::test]
    async fn a_sync_after_a_truncate_makes_the_live_content_durable() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(b"abcdef").await.unwrap();
        file.sync().await.unwrap();
        file.truncate(2).await.unwrap();
        file.append(b"xyz").await.unwrap();
        file.append(b"w").await.unwrap();
        file.sync().await.unwrap();
        assert_eq!(disk.durable_content(path("/d/f")).unwrap(), b"abxyzw");
        file.append(b"12").await.unwrap();
        file.sync().await.unwrap();
        disk.crash();
        assert_eq!(content(&disk, "/d/f").await, b"abxyzw12");
    }

    #[tokio::test]
    async fn a_torn_write_keeps_a_sector_aligned_prefix_of_the_unsynced_tail() {
        let synced = vec![1u8; 700];
        let unsynced: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let mut kept = BTreeSet::new();
        for seed in 0..64 {
            let config = FaultyDiskConfig {
                torn_writes: true,
                ..Default::default()
            };
            let disk = FaultyDisk::new(seed, config);
            disk.create_dir_all(path("/d")).await.unwrap();
            let file = disk.open(path("/d/f"), OpenMode::CreateNew).await.unwrap();
            disk.sync_dir(path("/d")).await.unwrap();
            file.append(&synced).await.unwrap();
            file.sync().await.unwrap();
            file.append(&unsynced).await.unwrap();
            disk.crash();
            let after = content(&disk, "/d/f").await;
            let len = after.len();
            assert!(len == 700 || len == 2700 || (len > 700 && len < 2700 && len % 512 == 0));
            assert_eq!(after[..700], synced[..]);
            assert_eq!(after[700..], unsynced[..len - 700]);
            assert_eq!(disk.durable_len(path("/d/f")), Some(len as u64));
            kept.insert(len);
        }
        // Every candidate shows up: the synced end, 1024, 1536, 2048, 2560 and the live end.
        assert_eq!(
            kept.into_iter().collect::<Vec<_>>(),
            [700, 1024, 1536, 2048, 2560, 2700]
        );
    }

    #[tokio::test]
    async fn the_same_seed_tears_the_same_way() {
        let mut lens = Vec::new();
        for _ in 0..2 {
            let config = FaultyDiskConfig {
                torn_writes: true,
                ..Default::default()
            };
            let (disk, file) = disk_with_file(config).await;
            file.append(&[9u8; 5000]).await.unwrap();
            disk.crash();
            lens.push(disk.durable_len(path("/d/f")));
        }
        assert_eq!(lens[0], lens[1]);
    }

    #[tokio::test]
    async fn an_unsynced_creation_vanishes_in_a_crash() {
        let disk = FaultyDisk::new(1, FaultyDiskConfig::default());
        disk.create_dir_all(path("/d/e")).await.unwrap();
        let file = disk
            .open(path("/d/new"), OpenMode::CreateNew)
            .await
            .unwrap();
        file.append(b"data").await.unwrap();
        file.sync().await.unwrap();
        assert_eq!(disk.list(path("/d")).await.unwrap(), ["e", "new"]);
        disk.crash();
        // The directory made by create_dir_all is durable; the file's name was never synced.
        assert_eq!(disk.list(path("/d")).await.unwrap(), ["e"]);
    }

    #[tokio::test]
    async fn an_unsynced_rename_is_undone_by_a_crash_and_a_synced_one_kept() {
        let disk = FaultyDisk::new(1, FaultyDiskConfig::default());
        disk.create_dir_all(path("/d")).await.unwrap();
        broker::disk::write_file_atomic(&disk, path("/d/a"), b"old a")
            .await
            .unwrap();
        broker::disk::write_file_atomic(&disk, path("/d/b"), b"old b")
            .await
            .unwrap();
        disk.rename(path("/d/a"), path("/d/b")).await.unwrap();
        assert_eq!(content(&disk, "/d/b").await, b"old a");
        disk.crash();
        assert_eq!(content(&disk, "/d/a").await, b"old a");
        assert_eq!(content(&disk, "/d/b").await, b"old b");
        disk.rename(path("/d/a"), path("/d/b")).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        disk.crash();
        assert_eq!(disk.list(path("/d")).await.unwrap(), ["b"]);
        assert_eq!(content(&disk, "/d/b").await, b"old a");
    }

    #[tokio::test]
    async fn directories_made_at_once_survive_a_crash_and_other_unsynced_entries_do_not() {
        let disk = FaultyDisk::new(3, FaultyDiskConfig::default());
        disk.create_dir_all(path("/d")).await.unwrap();
        drop(disk.open(path("/d/f"), OpenMode::CreateNew).await.unwrap());
        disk.create_dirs(path("/d"), &["a".into(), "b".into()])
            .await
            .unwrap();
        disk.crash();
        assert_eq!(disk.list(path("/d")).await.unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_directory_made_filled_and_renamed_into_place_is_durable_only_once_its_parent_is_synced(
    ) {
        // A partition's first write: mkdir under a temporary name, its file synced, the new
        // directory synced, renamed into place, the parent synced. Each crash below strikes
        // after one more of those steps.
        let disk = FaultyDisk::new(4, FaultyDiskConfig::default());
        disk.create_dir_all(path("/d")).await.unwrap();
        disk.create_dir(path("/d/p.tmp")).await.unwrap();
        disk.create_dir(path("/d/p.tmp")).await.unwrap();
        let file = disk
            .open(path("/d/p.tmp/meta"), OpenMode::CreateNew)
            .await
            .unwrap();
        file.append(b"id").await.unwrap();
        file.sync().await.unwrap();
        drop(file);
        disk.crash();
        assert!(
            disk.list(path("/d")).await.unwrap().is_empty(),
            "mkdir unsynced"
        );

        disk.create_dir(path("/d/p.tmp")).await.unwrap();
        broker::disk::write_file_whole(&disk, path("/d/p.tmp/meta"), b"id")
            .await
            .unwrap();
        disk.rename(path("/d/p.tmp"), path("/d/p")).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        disk.crash();
        // The directory's name is durable, its entry never synced: an empty directory.
        assert_eq!(disk.list(path("/d")).await.unwrap(), ["p"]);
        assert!(disk.list(path("/d/p")).await.unwrap().is_empty());

        disk.create_dir(path("/d/q.tmp")).await.unwrap();
        broker::disk::write_file_whole(&disk, path("/d/q.tmp/meta"), b"id")
            .await
            .unwrap();
        disk.sync_dir(path("/d/q.tmp")).await.unwrap();
        disk.rename(path("/d/q.tmp"), path("/d/q")).await.unwrap();
        disk.crash();
        assert_eq!(
            disk.list(path("/d")).await.unwrap(),
            ["p"],
            "rename unsynced"
        );
        disk.create_dir(path("/d/q.tmp")).await.unwrap();
        broker::disk::write_file_whole(&disk, path("/d/q.tmp/meta"), b"id")
            .await
            .unwrap();
        disk.sync_dir(path("/d/q.tmp")).await.unwrap();
        disk.rename(path("/d/q.tmp"), path("/d/q")).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        disk.crash();
        assert_eq!(disk.list(path("/d")).await.unwrap(), ["p", "q"]);
        assert_eq!(content(&disk, "/d/q/meta").await, b"id");
        let err = disk.create_dir(path("/d/q/meta")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let err = disk.create_dir(path("/e/f")).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_removed_file_comes_back_after_a_crash_unless_its_directory_was_synced() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(b"kept").await.unwrap();
        file.sync().await.unwrap();
        drop(file);
        disk.remove(path("/d/f")).await.unwrap();
        disk.crash();
        assert_eq!(content(&disk, "/d/f").await, b"kept");
        disk.remove(path("/d/f")).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        disk.crash();
        assert!(disk.list(path("/d")).await.unwrap().is_empty());
        assert_eq!(disk.lock().nodes.len(), 2, "only the root and /d remain");
    }

    #[tokio::test]
    async fn a_removed_directory_comes_back_after_a_crash_unless_its_parent_was_synced() {
        let disk = FaultyDisk::new(1, FaultyDiskConfig::default());
        disk.create_dir_all(path("/d/t-0")).await.unwrap();
        broker::disk::write_file_atomic(&disk, path("/d/t-0/cp"), b"7")
            .await
            .unwrap();
        disk.remove_dir_all(path("/d/t-0")).await.unwrap();
        assert!(disk.list(path("/d")).await.unwrap().is_empty());
        disk.crash();
        assert_eq!(content(&disk, "/d/t-0/cp").await, b"7");
        disk.remove_dir_all(path("/d/t-0")).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        disk.crash();
        assert!(disk.list(path("/d")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn handles_opened_before_a_crash_return_eio() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(b"abc").await.unwrap();
        file.sync().await.unwrap();
        disk.crash();
        assert_eq!(
            file.append(b"x").await.unwrap_err().raw_os_error(),
            Some(EIO)
        );
        assert_eq!(
            file.read_at(0, &mut [0; 3])
                .await
                .unwrap_err()
                .raw_os_error(),
            Some(EIO)
        );
        assert_eq!(file.sync().await.unwrap_err().raw_os_error(), Some(EIO));
        assert_eq!(
            file.truncate(0).await.unwrap_err().raw_os_error(),
            Some(EIO)
        );
        assert_eq!(file.len(), 0);
        let reopened = disk.open(path("/d/f"), OpenMode::Existing).await.unwrap();
        assert_eq!(reopened.len(), 3);
        drop(file); // a dead handle's drop must not disturb the new generation
        assert_eq!(reopened.append(b"d").await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_failed_sync_drops_the_bytes_since_the_last_good_sync() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(b"good").await.unwrap();
        file.sync().await.unwrap();
        file.append(b"doomed").await.unwrap();
        disk.fail_next_sync();
        let err = file.sync().await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO));
        // fsyncgate: the retry succeeds, but the bytes are already gone.
        file.sync().await.unwrap();
        assert_eq!(file.len(), 4);
        assert_eq!(content(&disk, "/d/f").await, b"good");
        assert_eq!(disk.fault_counts().sync_eios, 1);
    }

    #[tokio::test]
    async fn a_failed_write_lands_at_most_a_prefix_of_the_buffer() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(b"head").await.unwrap();
        disk.fail_next_write();
        let err = file.append(b"0123456789").await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EIO));
        let after = content(&disk, "/d/f").await;
        assert!(after.len() >= 4 && b"head0123456789".starts_with(&after));
        assert_eq!(file.append(b"!").await.unwrap(), after.len() as u64);
    }

    #[tokio::test]
    async fn io_under_a_failing_prefix_fails_until_healed() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        disk.fail_io_under("/d");
        assert_eq!(file.sync().await.unwrap_err().raw_os_error(), Some(EIO));
        assert_eq!(
            file.truncate(0).await.unwrap_err().raw_os_error(),
            Some(EIO)
        );
        disk.heal_io_under(path("/d"));
        file.append(b"ok").await.unwrap();
        file.sync().await.unwrap();
    }

    #[tokio::test]
    async fn a_file_removed_and_renamed_over_while_open_frees_its_space_when_its_last_handle_closes(
    ) {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(&[1; 100]).await.unwrap();
        file.sync().await.unwrap();
        let reader = disk.open(path("/d/f"), OpenMode::Existing).await.unwrap();
        disk.remove(path("/d/f")).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        // Unnamed but open: its bytes still count, through both handles.
        drop(file);
        assert_eq!(disk.used_bytes(), 100);
        // Files opened and closed meanwhile collect nothing of their own ...
        let other = disk.open(path("/d/g"), OpenMode::CreateNew).await.unwrap();
        other.append(&[2; 10]).await.unwrap();
        drop(other);
        assert_eq!(disk.used_bytes(), 110);
        // ... and the last handle's close frees the unnamed file.
        drop(reader);
        assert_eq!(disk.used_bytes(), 10);
        // A file renamed over while open, likewise.
        let old = disk.open(path("/d/g"), OpenMode::Existing).await.unwrap();
        let new = disk.open(path("/d/h"), OpenMode::CreateNew).await.unwrap();
        new.append(&[3; 5]).await.unwrap();
        drop(new);
        disk.rename(path("/d/h"), path("/d/g")).await.unwrap();
        disk.sync_dir(path("/d")).await.unwrap();
        assert_eq!(disk.used_bytes(), 15);
        drop(old);
        assert_eq!(disk.used_bytes(), 5);
        assert_eq!(content(&disk, "/d/g").await, [3; 5]);
    }

    #[tokio::test]
    async fn an_append_beyond_capacity_fails_with_enospc_and_writes_nothing() {
        let config = FaultyDiskConfig {
            capacity_bytes: Some(10),
            ..Default::default()
        };
        let (disk, file) = disk_with_file(config).await;
        file.append(&[0; 8]).await.unwrap();
        let err = file.append(&[0; 3]).await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ENOSPC));
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(file.len(), 8);
        file.append(&[0; 2]).await.unwrap();
        disk.set_capacity(None);
        file.append(&[0; 100]).await.unwrap();
        assert_eq!(disk.fault_counts().enospcs, 1);
    }

    #[tokio::test]
    async fn a_flipped_bit_shows_in_reads_and_survives_a_crash() {
        let (disk, file) = disk_with_file(FaultyDiskConfig::default()).await;
        file.append(&[0u8; 16]).await.unwrap();
        file.sync().await.unwrap();
        disk.flip_bit(path("/d/f"), 3, 2).unwrap();
        let mut buf = [0u8; 16];
        file.read_at(0, &mut buf).await.unwrap();
        assert_eq!(buf[3], 4);
        let (at, pos, bit) = disk.flip_random_bit().unwrap();
        assert_eq!(at, path("/d/f"));
        disk.crash();
        let after = content(&disk, "/d/f").await;
        let flipped = after.iter().map(|b| b.count_ones()).sum::<u32>();
        assert!(flipped == 2 || (flipped == 0 && pos == 3 && bit == 2));
        assert_eq!(disk.fault_counts().bit_flips, 2);
    }

    #[tokio::test]
    async fn a_wipe_empties_the_disk_but_what_is_kept_and_kills_old_handles() {
        let disk = FaultyDisk::new(1, FaultyDiskConfig::default());
        disk.create_dir_all(path("/data/__meta-0")).await.unwrap();
        disk.create_dir_all(path("/data/t-0")).await.unwrap();
        broker::disk::write_file_atomic(&disk, path("/data/__meta-0/log"), b"votes")
            .await
            .unwrap();
        broker::disk::write_file_atomic(&disk, path("/data/t-0/0.log"), b"records")
            .await
            .unwrap();
        broker::disk::write_file_atomic(&disk, path("/data/epoch"), b"7")
            .await
            .unwrap();
        let open = disk
            .open(path("/data/t-0/0.log"), OpenMode::Existing)
            .await
            .unwrap();
        let wiped = disk.wipe(|p| p.ends_with("__meta-0"));
        assert_eq!(wiped, 2);
        assert_eq!(disk.list(path("/data")).await.unwrap(), ["__meta-0"]);
        assert_eq!(content(&disk, "/data/__meta-0/log").await, b"votes");
        assert!(open.append(b"x").await.is_err());
        disk.crash();
        assert_eq!(
            disk.list(path("/data")).await.unwrap(),
            ["__meta-0"],
            "gone durably too"
        );
    }

    #[tokio::test]
    async fn a_slow_disk_delays_every_append_and_sync_by_its_latency() {
        let (_disk, file) = disk_with_file(FaultyDiskConfig {
            write_latency: Some(Duration::from_millis(200)),
            ..Default::default()
        })
        .await;
        // Orders of events, not durations: a shorter sleep ends first, a read never waits.
        let append = file.append(b"slow");
        tokio::pin!(append);
        tokio::select! {
            biased;
            _ = &mut append => panic!("the append did not wait for the slow disk"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        append.await.unwrap();
        let sync = file.sync();
        tokio::pin!(sync);
        tokio::select! {
            biased;
            _ = &mut sync => panic!("the sync did not wait for the slow disk"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        sync.await.unwrap();
        let mut buf = [0; 4];
        let read = tokio::select! {
            biased;
            read = file.read_at(0, &mut buf) => read.unwrap(),
            () = std::future::ready(()) => panic!("a read waited for the slow disk"),
        };
        assert_eq!((read, &buf), (4, b"slow"));
    }

    #[tokio::test]
    async fn an_operation_in_flight_at_a_crash_fails_and_never_lands() {
        let latency = Some((Duration::from_millis(2), Duration::from_millis(2)));
        let (disk, file) = disk_with_file(FaultyDiskConfig {
            latency,
            ..Default::default()
        })
        .await;
        let rename = disk.rename(path("/d/f"), path("/d/g"));
        let append = file.append(b"late");
        let crash = async { disk.crash() };
        let (renamed, appended, ()) = tokio::join!(rename, append, crash);
        assert_eq!(renamed.unwrap_err().raw_os_error(), Some(EIO));
        assert_eq!(appended.unwrap_err().raw_os_error(), Some(EIO));
        assert_eq!(disk.list(path("/d")).await.unwrap(), ["f"]);
        assert_eq!(disk.durable_len(path("/d/f")), Some(0));
    }
}
