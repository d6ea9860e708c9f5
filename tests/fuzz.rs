//! Fuzzing at high case counts (proptest): every decoder a stage runs on input it does
//! not control — the Avro records of each type, each stage's input check, the state
//! snapshots restored from a changelog, `produce`'s line parser, Prometheus remote-write
//! bodies and scraped text with the label rules — and the configuration parser. None may panic, and none may allocate much more than its input: a global
//! allocator in this test binary records the largest single allocation while each
//! decode runs (per thread).
//!
//! Inputs are real records (the four cores run over the demo fleet and their outputs
//! are kept), the shipped `deploy/perfpilot.toml`, and valid `produce` lines, mutated
//! (bit flips, cut short, bytes overwritten or inserted, Avro lengths made huge or
//! negative), plus bytes that are random after a valid header. `PERFPILOT_FUZZ_CASES`
//! sets the cases per property (default 20 000); each test prints how many inputs it
//! tried.

use perfpilot::agent::synthetic::SyntheticFleet;
use perfpilot::cli::produce::parse_line;
use perfpilot::config::Config;
use perfpilot::event::{
    decode, encode, Anomaly, AnyRecord, DeadLetter, Decision, Forecast, MetricEvent, Recommendation,
};
use perfpilot::ingest::mapping::{Mapping, MappingConfig, PromSample};
use perfpilot::ingest::{exposition, remote_write};
use perfpilot::stage::coordinator::Coordinator;
use perfpilot::stage::detector::Detector;
use perfpilot::stage::forecaster::Forecaster;
use perfpilot::stage::recommender::Recommender;
use perfpilot::stage::{InputLimits, Insight, RecordMeta, Stage, StageInput};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the record is a
// const-initialised thread-local `Cell`, which itself never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|c| c.set(c.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.with(|c| c.set(c.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f` and returns the largest single allocation it made.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|c| c.set(0));
    f();
    LARGEST.with(Cell::get)
}

/// The most a decode may allocate at once: sized by its input. An item of an array or a
/// map takes at least one byte of input and some 50–80 bytes decoded (apache-avro's
/// `Value`), so 100 times the input, and 64 KiB for the decoders' fixed tables.
fn allocation_bound(input: usize) -> usize {
    100 * input + 64 * 1024
}

fn cases() -> u32 {
    std::env::var("PERFPILOT_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

fn config() -> Config {
    Config::parse(
        include_str!("../deploy/perfpilot.toml"),
        "deploy/perfpilot.toml",
    )
    .expect("the shipped configuration parses")
}

/// What the four cores make of the demo fleet: records of every type, and their state.
struct Learnt {
    records: Vec<Vec<u8>>,
    snapshots: Vec<(usize, String, Vec<u8>)>,
}

/// Real records of every type: the demo fleet through the four cores.
fn records() -> &'static Vec<Vec<u8>> {
    &learnt().records
}

fn learnt() -> &'static Learnt {
    static LEARNT: OnceLock<Learnt> = OnceLock::new();
    LEARNT.get_or_init(|| {
        let cfg = config();
        let mut detector = Detector::new(cfg.detector.clone()).unwrap();
        let mut forecaster = Forecaster::new(cfg.forecaster.clone()).unwrap();
        let mut recommender = Recommender::new(cfg.policies.clone());
        let mut coordinator =
            Coordinator::new(cfg.coordinator.clone(), cfg.policies.clone()).unwrap();
        let mut fleet = SyntheticFleet::demo(0, 60_000, 400, 20, 7);
        let mut records: Vec<Vec<u8>> = Vec::new();
        // Up to 40 metric events, then 20 records of each output type.
        let mut typed: [Vec<Vec<u8>>; 4] = Default::default();
        for offset in 0..400 {
            for e in fleet.next_tick() {
                let meta = RecordMeta {
                    partition: 0,
                    offset,
                    now_ms: e.timestamp_ms,
                };
                if records.len() < 40 {
                    records.push(encode(&e).unwrap());
                }
                let (mut a, mut f, mut r, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                detector.process(e.clone(), &meta, &mut a);
                forecaster.process(e, &meta, &mut f);
                for x in &a {
                    recommender.process(Insight::Anomaly(x.clone()), &meta, &mut r);
                }
                for x in &f {
                    recommender.process(Insight::Forecast(x.clone()), &meta, &mut r);
                }
                for x in &r {
                    coordinator.process(x.clone(), &meta, &mut d);
                }
                typed[0].extend(a.iter().map(|x: &Anomaly| encode(x).unwrap()));
                typed[1].extend(f.iter().map(|x: &Forecast| encode(x).unwrap()));
                typed[2].extend(r.iter().map(|x: &Recommendation| encode(x).unwrap()));
                typed[3].extend(d.iter().map(|x: &Decision| encode(x).unwrap()));
                for t in &mut typed {
                    t.truncate(20);
                }
            }
        }
        for t in typed {
            assert!(!t.is_empty(), "the demo fleet yields every record type");
            records.extend(t);
        }
        let dead_letter = DeadLetter {
            stage: "detector".into(),
            reason: "bad_body".into(),
            detail: "a detail".into(),
            source_topic: "perfpilot.metrics".into(),
            source_partition: 3,
            source_offset: 77,
            key: Some(b"checkout".to_vec()),
            payload: Some(records[0].clone()),
            dead_lettered_ms: 1,
            original_size: Some(1_000_000),
            original_hash: Some("0123456789abcdef".into()),
        };
        records.push(encode(&dead_letter).unwrap());

        let mut snapshots = Vec::new();
        let mut changes = Vec::new();
        for core in 0..4 {
            match core {
                0 => detector.state().unwrap().take_changes(&mut changes),
                1 => forecaster.state().unwrap().take_changes(&mut changes),
                2 => recommender.state().unwrap().take_changes(&mut changes),
                _ => coordinator.state().unwrap().take_changes(&mut changes),
            }
            .expect("every core's state encodes");
            let n = snapshots.len();
            snapshots.extend(
                changes
                    .drain(..)
                    .filter_map(|c| c.bytes.map(|b| (core, c.key, b)))
                    .take(10),
            );
            assert!(snapshots.len() > n, "core {core} has state to restore");
        }
        Learnt { records, snapshots }
    })
}

/// One way of damaging bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of byte `at`.
    Flip { at: usize, bit: u8 },
    /// Keep only the first `len` bytes.
    Cut { len: usize },
    /// Overwrite bytes from `at` with `with`.
    Overwrite { at: usize, with: Vec<u8> },
    /// Insert `bytes` at `at`.
    Insert { at: usize, bytes: Vec<u8> },
    /// Put a huge or negative Avro long (a length, a count) at `at`.
    Length { at: usize, value: i64 },
}

fn zigzag(v: i64) -> Vec<u8> {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|len| Mutation::Cut { len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, with)| Mutation::Overwrite { at, with }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (
            any::<usize>(),
            prop_oneof![
                Just(i64::MAX),
                Just(i64::MIN),
                Just(-1i64),
                Just(1i64 << 20),
                Just(1i64 << 31),
                Just(1i64 << 40),
                any::<i64>()
            ]
        )
            .prop_map(|(at, value)| Mutation::Length { at, value }),
    ]
}

fn apply(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in mutations {
        let n = b.len().max(1);
        match m {
            Mutation::Flip { at, bit } => {
                if !b.is_empty() {
                    b[at % n] ^= 1 << bit;
                }
            }
            Mutation::Cut { len } => b.truncate(len % (n + 1)),
            Mutation::Overwrite { at, with } => {
                for (i, x) in with.iter().enumerate() {
                    if let Some(slot) = b.get_mut(at % n + i) {
                        *slot = *x;
                    }
                }
            }
            Mutation::Insert { at, bytes } => {
                let at = at % (b.len() + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Length { at, value } => {
                let at = at % (b.len() + 1);
                b.splice(at..at, zigzag(*value));
            }
        }
    }
    b
}

/// A real record damaged, or random bytes after a real record's 10-byte header.
fn damaged_record() -> impl Strategy<Value = Vec<u8>> {
    let n = records().len();
    prop_oneof![
        4 => (0..n, prop::collection::vec(mutation(), 1..4))
            .prop_map(|(i, m)| apply(&records()[i], &m)),
        1 => (0..n, prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(i, body)| {
            let mut b = records()[i][..10].to_vec();
            b.extend(body);
            b
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Every decoder of input records, on `bytes`; the largest single allocation.
fn decode_everything(bytes: &[u8]) -> usize {
    let limits = InputLimits::default();
    largest_allocation(|| {
        let _ = decode::<MetricEvent>(bytes);
        let _ = decode::<Anomaly>(bytes);
        let _ = decode::<Forecast>(bytes);
        let _ = decode::<Recommendation>(bytes);
        let _ = decode::<Decision>(bytes);
        let _ = decode::<DeadLetter>(bytes);
        let _ = AnyRecord::decode(bytes);
        let _ = MetricEvent::from_bytes(bytes, 1_800_000_000_000, &limits);
        let _ = Recommendation::from_bytes(bytes, 1_800_000_000_000, &limits);
        let _ = Insight::from_bytes(bytes, 1_800_000_000_000, &limits);
    })
}

#[test]
fn damaged_records_never_panic_nor_allocate_much() {
    // The real records decode, so the damage is what is being tested.
    for r in records() {
        assert!(AnyRecord::decode(r).is_ok());
    }
    let largest = Cell::new(0);
    runner()
        .run(&damaged_record(), |bytes| {
            let a = decode_everything(&bytes);
            largest.set(largest.get().max(a));
            prop_assert!(
                a <= allocation_bound(bytes.len()),
                "{} bytes of input allocated {a} bytes at once",
                bytes.len()
            );
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz: {} damaged or random records through 10 decoders, no panic; largest single allocation {} bytes",
        cases(),
        largest.get()
    );
}

/// Learnt states of the four cores, as their changelogs hold them: (core, key, bytes).
fn snapshots() -> &'static Vec<(usize, String, Vec<u8>)> {
    &learnt().snapshots
}

#[test]
fn damaged_state_of_every_core_never_panics_nor_allocates_much() {
    let cfg = config();
    let cores = std::cell::RefCell::new((
        Detector::new(cfg.detector.clone()).unwrap(),
        Forecaster::new(cfg.forecaster.clone()).unwrap(),
        Recommender::new(cfg.policies.clone()),
        Coordinator::new(cfg.coordinator.clone(), cfg.policies.clone()).unwrap(),
    ));
    let n = snapshots().len();
    let largest = Cell::new(0);
    let strategy = (0..n, prop::collection::vec(mutation(), 1..4));
    runner()
        .run(&strategy, |(i, m)| {
            let (detector, forecaster, recommender, coordinator) = &mut *cores.borrow_mut();
            let (stage, key, bytes) = &snapshots()[i];
            let bytes = apply(bytes, &m);
            let a = largest_allocation(|| {
                let _ = match stage {
                    0 => detector.state().unwrap().restore(0, key, &bytes),
                    1 => forecaster.state().unwrap().restore(0, key, &bytes),
                    2 => recommender.state().unwrap().restore(0, key, &bytes),
                    _ => coordinator.state().unwrap().restore(0, key, &bytes),
                };
            });
            largest.set(largest.get().max(a));
            // A restored state is sized by its input, with a core's fixed tables.
            prop_assert!(
                a <= allocation_bound(bytes.len()),
                "{} bytes of state allocated {a} bytes at once",
                bytes.len()
            );
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz: {} damaged states restored into the four cores, no panic; largest single allocation {} bytes",
        cases(),
        largest.get()
    );
}

#[test]
fn damaged_configuration_never_panics() {
    let seed = include_str!("../deploy/perfpilot.toml");
    let lines: Vec<&str> = seed.lines().collect();
    let values = prop_oneof![
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1e308".to_string()),
        Just("-1e308".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("9223372036854775807".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        "[ -~]{0,12}",
    ];
    // A line's value replaced, a line dropped or repeated, or characters changed.
    let edit = prop_oneof![
        (0..lines.len(), values).prop_map(|(l, v)| (l, 0u8, v)),
        (0..lines.len()).prop_map(|l| (l, 1u8, String::new())),
        (0..lines.len()).prop_map(|l| (l, 2u8, String::new())),
        (0..lines.len(), "[ -~\\n]{1,8}").prop_map(|(l, s)| (l, 3u8, s)),
    ];
    let (ok, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner()
        .run(&prop::collection::vec(edit, 1..6), |edits| {
            let mut doc: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            for (l, kind, v) in edits {
                let l = l % doc.len().max(1);
                match kind {
                    0 => {
                        if let Some((key, _)) = doc[l].split_once('=') {
                            doc[l] = format!("{key}= {v}");
                        }
                    }
                    1 => {
                        doc.remove(l);
                    }
                    2 => {
                        let line = doc[l].clone();
                        doc.insert(l, line);
                    }
                    _ => {
                        let line = &mut doc[l];
                        let at = line
                            .char_indices()
                            .map(|(i, _)| i)
                            .nth(v.len() % (line.chars().count() + 1))
                            .unwrap_or(line.len());
                        line.insert_str(at, &v);
                    }
                }
                if doc.is_empty() {
                    doc.push(String::new());
                }
            }
            match Config::parse(&doc.join("\n"), "fuzz") {
                Ok(_) => ok.set(ok.get() + 1),
                Err(e) => {
                    // A refusal says what is wrong.
                    prop_assert!(!e.to_string().is_empty());
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(
            &proptest::string::string_regex("\\PC{0,200}").unwrap(),
            |text| {
                let _ = Config::parse(&text, "fuzz");
                Ok(())
            },
        )
        .unwrap();
    eprintln!(
        "fuzz: {} damaged configurations ({} accepted, {} refused with a reason) and {} random texts, no panic",
        cases(),
        ok.get(),
        refused.get(),
        cases()
    );
}

#[test]
fn damaged_produce_lines_never_panic() {
    let seeds = [
        r#"{"target":"checkout","metric":"latency_p99_ms","value":120.5}"#,
        r#"{"source":"agent-1","target":"checkout","pool":"shop","metric":"cpu_utilization","value":0.61,"timestamp_ms":1767225600000,"unit":"ratio","labels":{"az":"a","pod":"checkout-1"}}"#,
    ];
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 1..4));
    let (ok, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner()
        .run(&strategy, |(i, m)| {
            let bytes = apply(seeds[i].as_bytes(), &m);
            // produce hands the parser lines that are UTF-8 (others are reported).
            let line = String::from_utf8_lossy(&bytes);
            match parse_line(&line, "fuzz", 1_800_000_000_000) {
                Ok(_) => ok.set(ok.get() + 1),
                Err(e) => {
                    prop_assert!(!e.is_empty());
                    refused.set(refused.get() + 1);
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz: {} damaged produce lines ({} accepted, {} refused with a reason), no panic",
        cases(),
        ok.get(),
        refused.get()
    );
}

/// A remote-write body as Prometheus sends it: series with labels, samples and metadata.
fn remote_write_body() -> Vec<u8> {
    use remote_write::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let timeseries = (0..6)
        .map(|i| TimeSeries {
            labels: vec![
                label(
                    "__name__",
                    if i % 2 == 0 {
                        "http_requests_total"
                    } else {
                        "node_load1"
                    },
                ),
                label("namespace", "shop"),
                label("deployment", &format!("web-{i}")),
                label("instance", "10.0.0.1:8080"),
            ],
            samples: (0..3)
                .map(|t| Sample {
                    value: (i * t) as f64,
                    timestamp: 1_800_000_000_000 + t * 15_000,
                })
                .collect(),
        })
        .collect();
    remote_write::encode(&WriteRequest {
        timeseries,
        metadata: vec![MetricMetadata {
            r#type: 1,
            metric_family_name: "http_requests".into(),
        }],
    })
}

#[test]
fn damaged_remote_write_bodies_never_panic_nor_allocate_much() {
    let body = remote_write_body();
    assert!(remote_write::decode(&body).is_ok());
    let strategy = prop_oneof![
        4 => prop::collection::vec(mutation(), 1..4).prop_map(move |m| apply(&body, &m)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ];
    let (ok, refused, largest) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0));
    runner()
        .run(&strategy, |bytes| {
            let mut mapping = Mapping::new(MappingConfig::default(), "fuzz").unwrap();
            let a = largest_allocation(|| match remote_write::decode(&bytes) {
                Ok(request) => {
                    ok.set(ok.get() + 1);
                    for ts in &request.timeseries {
                        let labels: Vec<(String, String)> = ts
                            .labels
                            .iter()
                            .map(|l| (l.name.clone(), l.value.clone()))
                            .collect();
                        for s in &ts.samples {
                            let _ = mapping.map(
                                &PromSample {
                                    name: "x_total",
                                    labels: &labels,
                                    value: s.value,
                                    timestamp_ms: s.timestamp,
                                    kind: perfpilot::ingest::mapping::MetricKind::Unknown,
                                },
                                1_800_000_000_000,
                            );
                        }
                    }
                }
                Err(_) => refused.set(refused.get() + 1),
            });
            largest.set(largest.get().max(a));
            prop_assert!(
                a <= allocation_bound(bytes.len()),
                "{} bytes of remote-write allocated {a} bytes at once",
                bytes.len()
            );
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz: {} damaged remote-write bodies ({} decoded and mapped, {} refused), no panic; largest single allocation {} bytes",
        cases(),
        ok.get(),
        refused.get(),
        largest.get()
    );
}

#[test]
fn damaged_scraped_text_never_panics() {
    let seed = "# HELP node_cpu_seconds_total Seconds.\n# TYPE node_cpu_seconds_total counter\n\
                node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 3.67e+06\n\
                # TYPE node_load1 gauge\nnode_load1 0.42 1800000000000\n\
                # TYPE rpc histogram\nrpc_bucket{le=\"+Inf\",path=\"/a \\\"b\\\"\"} 5\nrpc_sum 0.9\n\
                requests_total{code=\"200\"} 17 1800000000.5 # {trace_id=\"x\"} 1\n# EOF\n";
    let strategy = (prop::collection::vec(mutation(), 1..6), any::<bool>());
    let (samples, bad) = (Cell::new(0usize), Cell::new(0usize));
    runner()
        .run(&strategy, |(m, openmetrics)| {
            let text = String::from_utf8_lossy(&apply(seed.as_bytes(), &m)).into_owned();
            let (parsed, bad_lines) = exposition::parse(&text, openmetrics);
            let mut mapping = Mapping::new(MappingConfig::default(), "fuzz").unwrap();
            let instance = [("instance".to_string(), "h:9100".to_string())];
            for s in &parsed {
                let labels: Vec<(String, String)> =
                    s.labels.iter().cloned().chain(instance.clone()).collect();
                let _ = mapping.map(
                    &PromSample {
                        name: &s.name,
                        labels: &labels,
                        value: s.value,
                        timestamp_ms: s.timestamp_ms.unwrap_or(1_800_000_000_000),
                        kind: s.kind,
                    },
                    1_800_000_000_000,
                );
            }
            for b in &bad_lines {
                prop_assert!(b.line >= 1 && !b.problem.is_empty());
            }
            samples.set(samples.get() + parsed.len());
            bad.set(bad.get() + bad_lines.len());
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz: {} damaged scrapes ({} samples read and mapped, {} bad lines reported), no panic",
        cases(),
        samples.get(),
        bad.get()
    );
}
