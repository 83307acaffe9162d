//! Fault planning: the scripted faults of the file and the swarm's, drawn from the seed before
//! the run starts (TigerBeetle's `options_swarm`), and resolved to concrete faults when they
//! strike (a `leader:` target names whoever leads then).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chaos::nemesis::{Fault, FaultKind, HeldRequests, Node};
use madsim::rand::Rng;

use crate::cluster::Cluster;
use crate::random::Stream;
use crate::scenario::{Scenario, ScriptedFault, TargetSpec};

/// The fault schedule of a run and the options the seed chose for it.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Sorted by time (from the start of the fault window).
    pub faults: Vec<Planned>,
    /// Every option drawn, by name (for the banner and the report).
    pub options: BTreeMap<String, String>,
}

/// A fault of the schedule, its target still symbolic (roles are resolved when it strikes).
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub at_ms: u64,
    pub kind: FaultKind,
    pub target: Option<TargetSpec>,
    pub to: Option<TargetSpec>,
    /// `split`: one side.
    pub group: Vec<TargetSpec>,
    pub for_ms: Option<u64>,
    pub params: Params,
}

/// The parameters of a planned fault (those of its kind are set).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    pub rate: f64,
    pub latency_ms: (u64, u64),
    pub write_rate: f64,
    pub sync_rate: f64,
    pub on: bool,
    pub headroom_bytes: u64,
    /// `clock-skew`: how far the node's clock is moved from true time.
    pub offset_ms: i64,
    /// `slow-disk`: how much longer each append and sync takes.
    pub disk_latency_ms: u64,
    /// `hold`: the API, transactional produce only, and at most how many requests.
    pub api: String,
    pub transactional: bool,
    pub count: Option<u32>,
}

/// The APIs a swarm's `hold` draws from: the requests whose late arrival Kafka's protocols
/// must fence or tolerate.
const SWARM_HELD_APIS: [&str; 6] = [
    "Produce",
    "EndTxn",
    "AddPartitionsToTxn",
    "TxnOffsetCommit",
    "OffsetCommit",
    "Fetch",
];

impl std::fmt::Display for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {}ms {}", self.at_ms, self.kind)?;
        if let Some(t) = &self.target {
            write!(f, " {t}")?;
        }
        if let Some(t) = &self.to {
            write!(f, " -> {t}")?;
        }
        if !self.group.is_empty() {
            let names: Vec<String> = self.group.iter().map(|t| t.to_string()).collect();
            write!(f, " {{{}}}", names.join(", "))?;
        }
        let p = &self.params;
        match self.kind {
            FaultKind::PacketLoss => write!(f, " rate={:.3}", p.rate)?,
            FaultKind::Latency => write!(f, " {}..{}ms", p.latency_ms.0, p.latency_ms.1)?,
            FaultKind::DiskEio => write!(f, " write={:.3} sync={:.3}", p.write_rate, p.sync_rate)?,
            FaultKind::DiskTorn => write!(f, " on={}", p.on)?,
            FaultKind::DiskFull => write!(f, " headroom={}B", p.headroom_bytes)?,
            FaultKind::ClockSkew => write!(f, " offset={}ms", p.offset_ms)?,
            FaultKind::SlowDisk => write!(f, " +{}ms per write", p.disk_latency_ms)?,
            FaultKind::Hold => {
                write!(f, " api={}", p.api)?;
                if p.transactional {
                    f.write_str(" transactional")?;
                }
                if let Some(n) = p.count {
                    write!(f, " count={n}")?;
                }
            }
            _ => {}
        }
        if let Some(d) = self.for_ms {
            write!(f, " for {d}ms")?;
        }
        Ok(())
    }
}

/// The fault schedule: the scripted faults (repeats expanded, `any-*` targets drawn) and the
/// swarm's, sorted by time, with the options the seed chose. Draws only from the seed's
/// `faults` stream, so the workload never changes it.
pub fn plan(scenario: &Scenario, seed: u64) -> FaultPlan {
    let mut rng = Stream::new(seed, "faults");
    let mut options = BTreeMap::new();
    let brokers = scenario.cluster.brokers;
    let clients = scenario.cluster.clients;
    let end = scenario.duration_ms;
    let mut plan = Vec::new();
    let draw = |t: &Option<TargetSpec>, rng: &mut Stream| match t {
        Some(TargetSpec::AnyBroker) => Some(TargetSpec::Broker(rng.gen_range(1..=brokers))),
        Some(TargetSpec::AnyClient) => Some(TargetSpec::Client(rng.gen_range(1..=clients))),
        other => other.clone(),
    };
    for spanned in &scenario.faults {
        let f: &ScriptedFault = spanned.get_ref();
        let until = f.until_ms.unwrap_or(end);
        let mut at = f.at_ms;
        loop {
            plan.push(Planned {
                at_ms: at,
                kind: f.fault.0,
                target: draw(&f.target, &mut rng),
                to: draw(&f.to, &mut rng),
                group: f
                    .group
                    .iter()
                    .flatten()
                    .map(|t| draw(&Some(t.clone()), &mut rng).expect("a target"))
                    .collect(),
                for_ms: f.for_ms,
                params: Params {
                    rate: f.rate.unwrap_or(0.0),
                    latency_ms: (f.min_ms.unwrap_or(0), f.max_ms.unwrap_or(0)),
                    write_rate: f.write_rate.unwrap_or(0.0),
                    sync_rate: f.sync_rate.unwrap_or(0.0),
                    on: f.on.unwrap_or(true),
                    headroom_bytes: f.headroom_bytes.unwrap_or(0),
                    offset_ms: f.offset_ms.unwrap_or(0),
                    disk_latency_ms: f.latency_ms.unwrap_or(0),
                    api: f.api.clone().unwrap_or_default(),
                    transactional: f.transactional.unwrap_or(false),
                    count: f.count,
                },
            });
            match f.every_ms {
                Some(every) if at + every < until => at += every,
                _ => break,
            }
        }
    }
    if let Some(swarm) = &scenario.swarm {
        let mut kinds: Vec<FaultKind> = swarm
            .kinds
            .iter()
            .map(|k| k.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        if kinds.is_empty() {
            let all: Vec<FaultKind> = swarm.kinds.iter().map(|k| k.0).collect();
            kinds.push(all[rng.gen_range(0..all.len())]);
        }
        let interval = (swarm.mean_interval_ms as f64 * rng.gen_range(0.5..2.0)) as u64;
        let interval = interval.max(1);
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        options.insert("swarm.kinds".into(), names.join(","));
        options.insert("swarm.interval_ms".into(), interval.to_string());
        let swarm_end = swarm.end_ms.unwrap_or(end).min(end);
        let mut at = swarm.start_ms;
        loop {
            at += rng.gen_range(1..=2 * interval);
            if at >= swarm_end {
                break;
            }
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let mut broker = TargetSpec::Broker(rng.gen_range(1..=brokers));
            // In a cluster, a third of the faults strike whoever is the active controller then.
            // (Drawn only with more than one broker: a single broker's plans stay as they were.)
            if brokers > 1 && rng.gen_bool(1.0 / 3.0) {
                broker = TargetSpec::Controller;
            }
            let client = TargetSpec::Client(rng.gen_range(1..=clients));
            let for_ms = Some(rng.gen_range(20..=swarm.max_fault_ms.max(21)));
            let mut p = Planned {
                at_ms: at,
                kind,
                target: Some(broker.clone()),
                to: None,
                group: Vec::new(),
                for_ms,
                params: Params::default(),
            };
            match kind {
                // A wiped broker comes back like a crashed one. (No shipped swarm lists it or
                // slow-disk: adding a kind to a file's list would change its seeds' plans.)
                FaultKind::Crash | FaultKind::DiskWipe => p.for_ms = Some(rng.gen_range(1..=500)),
                FaultKind::SlowDisk => p.params.disk_latency_ms = rng.gen_range(10..=500),
                FaultKind::MetadataDiskEio => {}
                FaultKind::Hold => {
                    p.target = Some(client.clone());
                    p.params.api = SWARM_HELD_APIS[rng.gen_range(0..SWARM_HELD_APIS.len())].into();
                    p.params.count = Some(1);
                }
                FaultKind::Restart | FaultKind::BitFlip | FaultKind::Heal => {
                    p.for_ms = None;
                    if kind == FaultKind::Heal {
                        p.target = None;
                    }
                }
                FaultKind::Resume => continue, // every pause is resumed after its duration
                FaultKind::Pause | FaultKind::Isolate => {
                    if rng.gen_bool(0.3) {
                        p.target = Some(client.clone());
                    }
                }
                FaultKind::Split => {
                    // The broker keeps one client; the other clients are cut off.
                    p.target = None;
                    p.group = vec![broker.clone(), client.clone()];
                }
                FaultKind::CutLink => {
                    if rng.gen_bool(0.5) {
                        p.target = Some(client.clone());
                        p.to = Some(broker.clone());
                    } else {
                        p.to = Some(client.clone());
                    }
                }
                FaultKind::PacketLoss => {
                    p.target = None;
                    p.params.rate = rng.gen_range(0.01..0.3);
                }
                FaultKind::Latency => {
                    p.target = None;
                    let min = rng.gen_range(1..20u64);
                    p.params.latency_ms = (min, min + rng.gen_range(1..100u64));
                }
                FaultKind::DiskEio => {
                    p.params.write_rate = rng.gen_range(0.0..0.05);
                    p.params.sync_rate = rng.gen_range(0.0..0.1);
                }
                FaultKind::DiskTorn => p.params.on = rng.gen_bool(0.5),
                FaultKind::DiskFull => p.params.headroom_bytes = rng.gen_range(0..64 * 1024),
                // Up to a minute either way: far beyond NTP's drift, within what a broken
                // time source or a VM resumed from a snapshot does.
                FaultKind::ClockSkew => p.params.offset_ms = rng.gen_range(-60_000..=60_000),
            }
            plan.push(p);
        }
    }
    plan.sort_by_key(|p| p.at_ms);
    options.insert("faults.planned".into(), plan.len().to_string());
    FaultPlan {
        faults: plan,
        options,
    }
}

/// The seeds of the brokers' faulty disks, from the seed's `disks` stream.
pub fn disk_seeds(scenario: &Scenario, seed: u64) -> Vec<u64> {
    let mut rng = Stream::new(seed, "disks");
    (0..scenario.cluster.brokers).map(|_| rng.gen()).collect()
}

/// The concrete faults a planned one is now (one per node of a `voters` target), and what a
/// role target resolved to (for the trace), or why it cannot strike.
pub(super) fn resolve(p: &Planned, cluster: &Cluster) -> Result<(Vec<Fault>, String), String> {
    let mut resolved = Vec::new();
    let mut nodes = |t: &Option<TargetSpec>| -> Result<Vec<Node>, String> {
        match t {
            Some(TargetSpec::Broker(id)) => Ok(vec![Node::Broker(*id)]),
            Some(TargetSpec::Client(n)) => Ok(vec![Node::Client(*n)]),
            Some(TargetSpec::Leader { topic, partition }) => {
                let leader = cluster
                    .leader_of(topic, *partition)
                    .ok_or_else(|| format!("no leader of {topic}/{partition} is up"))?;
                resolved.push(format!("leader:{topic}/{partition} is broker-{leader}"));
                Ok(vec![Node::Broker(leader)])
            }
            Some(TargetSpec::Controller) => {
                let (id, term) = cluster
                    .active_controller()
                    .ok_or_else(|| "no active controller is up".to_string())?;
                resolved.push(format!("controller is broker-{id} (term {term})"));
                Ok(vec![Node::Broker(id)])
            }
            Some(TargetSpec::FollowerVoter) => {
                let leader = cluster.active_controller().map(|(id, _)| id);
                let id = cluster
                    .voters()
                    .iter()
                    .copied()
                    .find(|&v| Some(v) != leader && cluster.planes().iter().any(|p| p.id == v))
                    .ok_or_else(|| "no voter but the controller is up".to_string())?;
                resolved.push(format!("follower-voter is broker-{id}"));
                Ok(vec![Node::Broker(id)])
            }
            Some(TargetSpec::Voters) => Ok(cluster
                .voters()
                .iter()
                .map(|&id| Node::Broker(id))
                .collect()),
            Some(TargetSpec::AnyBroker | TargetSpec::AnyClient) => {
                unreachable!("drawn when planned")
            }
            None => Err("no target".into()),
        }
    };
    let ms = Duration::from_millis;
    let faults: Vec<Fault> = match p.kind {
        FaultKind::Heal => vec![Fault::Heal],
        FaultKind::Hold => {
            let client = match &p.target {
                None => None,
                target => Some(nodes(target)?[0]),
            };
            vec![Fault::Hold(HeldRequests {
                client,
                api: p.params.api.clone(),
                transactional: p.params.transactional,
                count: p.params.count,
                held_for: p.for_ms.map(ms),
            })]
        }
        FaultKind::PacketLoss => vec![Fault::PacketLoss {
            rate: p.params.rate,
        }],
        FaultKind::Latency => vec![Fault::Latency {
            range: Some((ms(p.params.latency_ms.0), ms(p.params.latency_ms.1))),
        }],
        FaultKind::Split => {
            let mut side = Vec::new();
            for t in &p.group {
                side.extend(nodes(&Some(t.clone()))?);
            }
            vec![Fault::Split { side }]
        }
        FaultKind::CutLink => {
            let from = nodes(&p.target)?;
            let to = nodes(&p.to)?;
            from.iter()
                .flat_map(|&from| to.iter().map(move |&to| Fault::CutLink { from, to }))
                .collect()
        }
        kind => nodes(&p.target)?
            .into_iter()
            .map(|node| match kind {
                FaultKind::Crash => Fault::Crash(node),
                FaultKind::Restart => Fault::Restart(node),
                FaultKind::Pause => Fault::Pause(node),
                FaultKind::Resume => Fault::Resume(node),
                FaultKind::Isolate => Fault::Isolate(node),
                FaultKind::DiskEio => Fault::DiskEio {
                    node,
                    write_rate: p.params.write_rate,
                    sync_rate: p.params.sync_rate,
                },
                FaultKind::DiskTorn => Fault::DiskTorn {
                    node,
                    on: p.params.on,
                },
                FaultKind::BitFlip => Fault::BitFlip(node),
                FaultKind::DiskFull => Fault::DiskFull {
                    node,
                    headroom_bytes: Some(p.params.headroom_bytes),
                },
                FaultKind::ClockSkew => Fault::ClockSkew {
                    node,
                    offset_ms: p.params.offset_ms,
                },
                FaultKind::DiskWipe => Fault::DiskWipe(node),
                FaultKind::SlowDisk => Fault::SlowDisk {
                    node,
                    latency: Some(ms(p.params.disk_latency_ms)),
                },
                FaultKind::MetadataDiskEio => Fault::MetadataDiskEio { node, on: true },
                FaultKind::Heal
                | FaultKind::PacketLoss
                | FaultKind::Latency
                | FaultKind::Split
                | FaultKind::CutLink
                | FaultKind::Hold => unreachable!("matched above"),
            })
            .collect(),
    };
    Ok((faults, resolved.join(", ")))
}
