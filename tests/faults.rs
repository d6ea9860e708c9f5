//! The fault-injection suite: one exactly-once run on the 3-node Apache Kafka cluster in
//! which a continuous producer (an agent that waits out outages) feeds two detector
//! instances while a schedule of faults is injected — a stage SIGKILLed and restarted, a
//! stage frozen past its session timeout, a broker SIGKILLed and restarted, a broker
//! frozen for longer than the delivery and transaction timeouts, and the whole cluster
//! frozen for minutes (an outage the size of a network partition) — with poison of
//! every kind and size, duplicate and out-of-order events mixed into the stream. At the
//! end every output is compared with an in-process reference (the same events through
//! the detector core): 0 lost, 0 duplicated, every bad record dead-lettered with its
//! reason, and no stage exited on its own. The table it prints is the README's.
//!
//! Needs `PERFPILOT_TEST_CLUSTER` (`.ci/run` sets it) and says SKIPPED otherwise; CI runs
//! it. It takes about five and a half minutes: `PERFPILOT_TEST_FAULTS=0` leaves it out of
//! a local `cargo test`. `PERFPILOT_FAULT_OUTAGE_SECS` sets the whole-cluster outage
//! (default 180).

mod common;

use common::cluster::*;
use common::{poison, read_all_raw};
use perfpilot::event::{decode, DeadLetter};
use perfpilot::runtime::now_ms;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Leaves the cluster whole however the test ends: every node thawed and running.
struct Heal;

impl Drop for Heal {
    fn drop(&mut self) {
        for n in 1..=3 {
            let _ = std::process::Command::new("bash")
                .arg(script())
                .args(["node-resume", &n.to_string()])
                .output();
        }
        let _ = std::process::Command::new("bash")
            .arg(script())
            .args(["node-start", "3"])
            .output();
    }
}

/// The faults, in order, each `at` seconds after the stages start.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL an instance and start it again with the same id.
    KillStage(usize),
    /// SIGSTOP an instance for this many seconds (its session times out after 6).
    FreezeStage(usize, u64),
    /// SIGKILL a broker, start it again on its data this many seconds later.
    KillBroker(u8, u64),
    /// SIGSTOP a broker for this many seconds.
    FreezeBroker(u8, u64),
    /// SIGSTOP every broker for this many seconds.
    FreezeCluster(u64),
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::KillStage(i) => format!("stage {i} SIGKILL, restarted"),
            Fault::FreezeStage(i, s) => {
                format!("stage {i} SIGSTOP {s} s (session timeout 6 s)")
            }
            Fault::KillBroker(n, s) => format!("broker {n} SIGKILL, restarted after {s} s"),
            Fault::FreezeBroker(n, s) => {
                format!("broker {n} SIGSTOP {s} s (delivery/transaction timeout 15 s)")
            }
            Fault::FreezeCluster(s) => format!("all 3 brokers SIGSTOP {s} s"),
        }
    }
}

/// The instances, and whether any exited by itself.
struct Fleet {
    c: Cluster,
    instances: Vec<Instance>,
    pids: Arc<Mutex<Vec<u32>>>,
    exits: Vec<String>,
}

impl Fleet {
    fn start(&mut self, i: usize) {
        let id = format!("i{i}");
        let instance = Instance::start(&self.c, &id, "exactly-once");
        self.pids.lock().unwrap().push(instance.child.id());
        if i < self.instances.len() {
            self.instances[i] = instance;
        } else {
            self.instances.push(instance);
        }
    }

    /// Notes every instance that exited by itself, with the end of its log.
    fn watch(&mut self) {
        for i in 0..self.instances.len() {
            if let Some(status) = self.instances[i].exited() {
                let log = self.instances[i].log(&self.c);
                let tail: String = log
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                self.exits
                    .push(format!("instance i{i} exited: {status}\n{tail}"));
                self.start(i);
            }
        }
    }

    /// Waits `secs` seconds, watching.
    async fn wait(&mut self, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            self.watch();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Runs `scripts/kafka.sh action node` off the async workers.
async fn kafka_sh(action: &'static str, node: u8) {
    tokio::task::spawn_blocking(move || broker(action, node))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_repeat_nothing_and_stop_no_stage() {
    if std::env::var("PERFPILOT_TEST_FAULTS").as_deref() == Ok("0") {
        eprintln!(
            "NOT RUN faults_lose_nothing_repeat_nothing_and_stop_no_stage: left out with \
             PERFPILOT_TEST_FAULTS=0"
        );
        return;
    }
    let Some(c) = cluster("faults").await else {
        return;
    };
    let outage: u64 = std::env::var("PERFPILOT_FAULT_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let _heal = Heal;

    // The standard stream, with every 997th event sent twice and every 1 009th a point
    // late (swapped with its series' next point, 48 events on).
    let mut events = stream(48, 420);
    let (mut duplicates, mut reordered) = (0, 0);
    let mut i = 1009;
    while i + 48 < events.len() {
        events.swap(i, i + 48);
        reordered += 1;
        i += 1009;
    }
    let mut with_duplicates = Vec::with_capacity(events.len() + events.len() / 997 + 1);
    for (i, e) in events.into_iter().enumerate() {
        if i % 997 == 996 {
            with_duplicates.push(e.clone());
            duplicates += 1;
        }
        with_duplicates.push(e);
    }
    let poison = poison(now_ms());
    let expected_reasons: BTreeMap<&str, usize> =
        poison.iter().fold(BTreeMap::new(), |mut m, (r, _)| {
            *m.entry(*r).or_default() += 1;
            m
        });
    // The agent waits out outages rather than drop events after 30 s.
    let agent = c.kafka.clone().with("message.timeout.ms", "0");
    let Run {
        reference,
        total,
        acked,
        producer,
    } = start_run_of(
        &c,
        agent,
        with_duplicates,
        poison.iter().map(|(_, b)| b.clone()).collect(),
        100.0,
    );

    let pids = Arc::new(Mutex::new(Vec::new()));
    let max_rss = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (pids, max_rss) = (pids.clone(), max_rss.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let pids = pids.lock().unwrap().clone();
                let peak = pids.iter().filter_map(|p| rss_of(*p)).max().unwrap_or(0);
                let mut m = max_rss.lock().unwrap();
                *m = (*m).max(peak);
            }
        })
    };
    let mut fleet = Fleet {
        c,
        instances: Vec::new(),
        pids,
        exits: Vec::new(),
    };
    fleet.start(0);
    fleet.start(1);

    let schedule = [
        (10, Fault::KillStage(0)),
        (25, Fault::FreezeStage(1, 12)),
        (50, Fault::KillBroker(3, 15)),
        (80, Fault::FreezeBroker(2, 25)),
        (120, Fault::FreezeCluster(outage)),
    ];
    let started = Instant::now();
    let mut injected = Vec::new();
    for (at, fault) in schedule {
        let due = started + Duration::from_secs(at);
        fleet
            .wait(due.saturating_duration_since(Instant::now()).as_secs())
            .await;
        eprintln!(
            "faults: t={:>4.0} s  {}",
            started.elapsed().as_secs_f64(),
            fault.describe()
        );
        match fault {
            Fault::KillStage(i) => {
                fleet.instances.remove(i).kill();
                let restarted = Instance::start(&fleet.c, &format!("i{i}"), "exactly-once");
                fleet.pids.lock().unwrap().push(restarted.child.id());
                fleet.instances.insert(i, restarted);
            }
            Fault::FreezeStage(i, secs) => {
                fleet.instances[i].signal("STOP");
                tokio::time::sleep(Duration::from_secs(secs)).await;
                fleet.instances[i].signal("CONT");
            }
            Fault::KillBroker(n, secs) => {
                kafka_sh("node-kill", n).await;
                fleet.wait(secs).await;
                kafka_sh("node-start", n).await;
            }
            Fault::FreezeBroker(n, secs) => {
                kafka_sh("node-pause", n).await;
                fleet.wait(secs).await;
                kafka_sh("node-resume", n).await;
            }
            Fault::FreezeCluster(secs) => {
                kafka_sh("cluster-pause", 0).await;
                fleet.wait(secs).await;
                kafka_sh("cluster-resume", 0).await;
            }
        }
        injected.push(fault);
    }
    while !producer.is_finished() {
        fleet.wait(1).await;
    }
    producer.await.unwrap();
    let records_in = acked.load(Ordering::Relaxed);
    assert_eq!(
        records_in, total,
        "the agent's records were all acknowledged"
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while lag(
        &fleet.c.kafka,
        &format!("{}detector", fleet.c.topics.prefix),
        &fleet.c.topics.metrics(),
    ) != Some(0)
    {
        if Instant::now() >= deadline {
            let dumps: Vec<String> = fleet
                .instances
                .iter()
                .map(|i| format!("instance {}:\n{}", i.id, i.stacks()))
                .collect();
            let path = std::env::temp_dir().join(format!("{}-stacks.txt", fleet.c.name));
            let _ = std::fs::write(&path, dumps.join("\n\n"));
            panic!("the group did not catch up; the instances' stacks are in {path:?}");
        }
        fleet.wait(1).await;
    }
    fleet.watch();
    sampler.abort();
    let exits = std::mem::take(&mut fleet.exits);
    let c = &fleet.c;
    for i in fleet.instances.drain(..) {
        i.stop();
    }

    let got = outputs(c).await;
    let v = compare(&reference, &got);
    let dead = read_all_raw(&c.kafka, &c.topics.deadletter(), Duration::from_secs(3)).await;
    let mut by_reason: BTreeMap<String, BTreeMap<i64, ()>> = BTreeMap::new();
    for (_, _, _, bytes) in &dead {
        let d: DeadLetter = decode(bytes).expect("dead letters decode");
        by_reason
            .entry(d.reason)
            .or_default()
            .insert(d.source_offset, ());
    }
    let dead_counts: BTreeMap<String, usize> = by_reason
        .iter()
        .map(|(r, o)| (r.clone(), o.len()))
        .collect();
    let peak = *max_rss.lock().unwrap();
    eprintln!("\n| faults injected | records in | outputs | lost | duplicated | dead-lettered by reason | max RSS |");
    eprintln!("|---|---|---|---|---|---|---|");
    eprintln!(
        "| {} ({}) | {records_in} ({duplicates} duplicates, {reordered} out of order, {} poison) | {} | {} | {} | {} | {:.0} MB |",
        injected.len(),
        injected.iter().map(Fault::describe).collect::<Vec<_>>().join("; "),
        poison.len(),
        got.values().map(|(_, n)| n).sum::<usize>(),
        v.lost.len(),
        v.duplicated,
        dead_counts
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        peak as f64 / 1e6
    );
    assert!(
        exits.is_empty(),
        "stages exited by themselves:\n{}",
        exits.join("\n\n")
    );
    v.assert_exact();
    let expected: BTreeMap<String, usize> = expected_reasons
        .iter()
        .map(|(r, n)| (r.to_string(), *n))
        .collect();
    assert_eq!(
        dead_counts, expected,
        "every poison record dead-lettered once, with its reason"
    );
}
