//! Criterion benches of the pure cores and the codec: ns per event.
//!   cargo bench --bench cores
//!
//! `model/*` is the per-series analytics update alone (the series already found);
//! `per_event/*` is the stage core: series lookup, the update, and building its outputs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use perfpilot::agent::synthetic::SyntheticFleet;
use perfpilot::analytics::detect::SeriesDetector;
use perfpilot::analytics::forecast::SeriesForecaster;
use perfpilot::config::Config;
use perfpilot::event::{decode, encode, MetricEvent};
use perfpilot::stage::coordinator::Coordinator;
use perfpilot::stage::detector::{Detector, DetectorConfig};
use perfpilot::stage::forecaster::{Forecaster, ForecasterConfig};
use perfpilot::stage::{RecordMeta, Stage};
use std::hint::black_box;

/// 1000 series × 200 ticks of the synthetic background fleet.
fn events() -> Vec<MetricEvent> {
    let mut demo = SyntheticFleet::demo(0, 60_000, 200, 1000, 1);
    (0..200).flat_map(|_| demo.next_tick()).collect()
}

/// The same events as (series index, timestamp, value), series in first-seen order.
fn indexed(evs: &[MetricEvent]) -> (usize, Vec<(usize, i64, f64)>) {
    let mut ids = std::collections::HashMap::new();
    let points = evs
        .iter()
        .map(|e| {
            let key = perfpilot::stage::series_key(&e.target, &e.metric, &e.labels);
            let n = ids.len();
            (*ids.entry(key).or_insert(n), e.timestamp_ms, e.value)
        })
        .collect();
    (ids.len(), points)
}

fn models(c: &mut Criterion) {
    let evs = events();
    let (series, points) = indexed(&evs);
    let dp = DetectorConfig::default().params();
    let fp = ForecasterConfig::default().params();
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.bench_function("detector", |b| {
        b.iter(|| {
            let mut d = vec![SeriesDetector::default(); series];
            for &(i, ts, v) in &points {
                black_box(d[i].observe(ts, v, &dp));
            }
        })
    });
    g.bench_function("forecaster", |b| {
        b.iter(|| {
            let mut f = vec![SeriesForecaster::default(); series];
            for &(i, ts, v) in &points {
                f[i].observe(ts, v, &fp);
            }
            black_box(f.len())
        })
    });
    g.finish();
    // Hourly points: every event completes an hour, so the slot models score their
    // past forecasts (16 lags × 8 models) on every event — the slot tier's full cost.
    let hourly: Vec<(usize, i64, f64)> = (0..400i64)
        .flat_map(|t| {
            (0..100usize).map(move |i| {
                let day = (t % 24) as f64 / 24.0 * std::f64::consts::TAU;
                (
                    i,
                    t * 3_600_000,
                    50.0 + 10.0 * day.sin() + ((t * 31 + i as i64) % 7) as f64,
                )
            })
        })
        .collect();
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Elements(hourly.len() as u64));
    g.bench_function("forecaster_hourly", |b| {
        b.iter(|| {
            let mut f = vec![SeriesForecaster::default(); 100];
            for &(i, ts, v) in &hourly {
                f[i].observe(ts, v, &fp);
            }
            black_box(f.len())
        })
    });
    g.finish();
    let mut g = c.benchmark_group("model");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.bench_function("detector+forecaster", |b| {
        b.iter(|| {
            let mut d = vec![SeriesDetector::default(); series];
            let mut f = vec![SeriesForecaster::default(); series];
            for &(i, ts, v) in &points {
                black_box(d[i].observe(ts, v, &dp));
                f[i].observe(ts, v, &fp);
            }
            black_box(f.len())
        })
    });
    g.finish();
}

fn cores(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("detector", |b| {
        b.iter(|| {
            let mut d = Detector::new(DetectorConfig::default()).unwrap();
            for e in &evs {
                black_box(d.observe(e, 0));
            }
        })
    });
    g.bench_function("forecaster", |b| {
        b.iter(|| {
            let mut f = Forecaster::new(ForecasterConfig::default()).unwrap();
            for e in &evs {
                black_box(f.observe(e, 0));
            }
        })
    });
    g.bench_function("detector+forecaster", |b| {
        b.iter(|| {
            let mut d = Detector::new(DetectorConfig::default()).unwrap();
            let mut f = Forecaster::new(ForecasterConfig::default()).unwrap();
            for e in &evs {
                black_box(d.observe(e, 0));
                black_box(f.observe(e, 0));
            }
        })
    });
    g.bench_function("avro_decode_metric_event", |b| {
        let bytes: Vec<Vec<u8>> = evs.iter().map(|e| encode(e).unwrap()).collect();
        b.iter(|| {
            for x in &bytes {
                black_box(decode::<MetricEvent>(x).unwrap());
            }
        })
    });
    g.bench_function("confluent_to_single_object_metric_event", |b| {
        use perfpilot::event::confluent::{to_confluent, WriterSchema, CONFLUENT_HEADER_LEN};
        use perfpilot::event::AvroRecord;
        let writer = WriterSchema::parse(1, MetricEvent::SCHEMA_JSON, None).unwrap();
        let framed: Vec<Vec<u8>> = evs
            .iter()
            .map(|e| to_confluent(&encode(e).unwrap(), 1))
            .collect();
        b.iter(|| {
            for x in &framed {
                let single = writer.to_single_object(&x[CONFLUENT_HEADER_LEN..]).unwrap();
                black_box(decode::<MetricEvent>(&single).unwrap());
            }
        })
    });
    // A writer schema of the team's own (another namespace): resolved to ours.
    g.bench_function("confluent_evolved_metric_event", |b| {
        use perfpilot::event::confluent::{to_confluent, WriterSchema, CONFLUENT_HEADER_LEN};
        use perfpilot::event::AvroRecord;
        let text = MetricEvent::SCHEMA_JSON.replace("io.perfpilot.v1", "com.acme.metrics");
        let writer = WriterSchema::parse(2, &text, None).unwrap();
        let framed: Vec<Vec<u8>> = evs
            .iter()
            .map(|e| to_confluent(&encode(e).unwrap(), 2))
            .collect();
        b.iter(|| {
            for x in &framed {
                let single = writer.to_single_object(&x[CONFLUENT_HEADER_LEN..]).unwrap();
                black_box(decode::<MetricEvent>(&single).unwrap());
            }
        })
    });
    g.bench_function("avro_encode_metric_event", |b| {
        b.iter(|| {
            for e in &evs {
                black_box(encode(e).unwrap());
            }
        })
    });
    g.finish();

    // A checkpoint: every series' state encoded for the changelog (per series).
    let mut d = Detector::new(DetectorConfig::default()).unwrap();
    let mut f = Forecaster::new(ForecasterConfig::default()).unwrap();
    for e in &evs {
        d.observe(e, 0);
        f.observe(e, 0);
    }
    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Elements(
        d.state().unwrap().snapshot(0).len() as u64
    ));
    g.bench_function("detector", |b| {
        b.iter(|| black_box(d.state().unwrap().snapshot(0).len()))
    });
    g.throughput(Throughput::Elements(
        f.state().unwrap().snapshot(0).len() as u64
    ));
    g.bench_function("forecaster", |b| {
        b.iter(|| black_box(f.state().unwrap().snapshot(0).len()))
    });
    g.finish();

    let recs: Vec<_> = {
        let cfg = Config::default();
        let mut r = perfpilot::stage::recommender::Recommender::new(cfg.policies.clone());
        let mut fc = Forecaster::new(ForecasterConfig::default()).unwrap();
        let mut demo = SyntheticFleet::demo(0, 60_000, 2000, 0, 3);
        let mut out = Vec::new();
        for _ in 0..2000 {
            for e in demo.next_tick() {
                if let Some(f) = fc.observe(&e, 0) {
                    out.extend(r.observe(&perfpilot::stage::Insight::Forecast(f), 0));
                }
            }
        }
        out
    };
    let mut g = c.benchmark_group("coordinator");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("decide", |b| {
        b.iter(|| {
            let cfg = Config::default();
            let mut c = Coordinator::new(cfg.coordinator, cfg.policies).unwrap();
            let mut out = Vec::new();
            for (i, r) in recs.iter().enumerate() {
                let meta = RecordMeta {
                    partition: 0,
                    offset: i as i64,
                    now_ms: i as i64,
                };
                c.process(r.clone(), &meta, &mut out);
            }
            c.tick(i64::MAX / 2, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// The ingest paths per sample: a remote-write request of 1 000 series × 10 samples
/// (decompress, decode, map with counters as rates), and a scraped body of 1 000 lines
/// (parse and map).
fn ingest(c: &mut Criterion) {
    use perfpilot::ingest::exposition;
    use perfpilot::ingest::mapping::{Mapping, MappingConfig, MetricKind, PromSample};
    use perfpilot::ingest::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
    let t0 = 1_800_000_000_000i64;
    let label = |n: &str, v: String| Label {
        name: n.into(),
        value: v,
    };
    let request = |round: i64| WriteRequest {
        timeseries: (0..1000)
            .map(|i| TimeSeries {
                labels: vec![
                    label(
                        "__name__",
                        if i % 2 == 0 {
                            "http_requests_total"
                        } else {
                            "node_load1"
                        }
                        .into(),
                    ),
                    label("namespace", "shop".into()),
                    label("deployment", format!("web-{}", i / 10)),
                    label("pod", format!("web-{}-{}", i / 10, i % 10)),
                    label("instance", format!("10.0.{}.{}:8080", i / 250, i % 250)),
                ],
                samples: (0..10)
                    .map(|k| Sample {
                        value: (round * 10 + k) as f64 * 3.0,
                        timestamp: t0 + (round * 10 + k) * 15_000,
                    })
                    .collect(),
            })
            .collect(),
        metadata: vec![],
    };
    let bodies: Vec<Vec<u8>> = (0..50).map(|r| remote_write::encode(&request(r))).collect();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("remote_write_per_sample", |b| {
        let mut mapping = Mapping::new(MappingConfig::default(), "bench").unwrap();
        let mut round = 0;
        b.iter(|| {
            // Each pass over the bodies starts from fresh counters, so every counter
            // sample is a rate, not out of order.
            if round % bodies.len() == 0 {
                mapping = Mapping::new(MappingConfig::default(), "bench").unwrap();
            }
            let req = remote_write::decode(&bodies[round % bodies.len()]).unwrap();
            round += 1;
            for ts in &req.timeseries {
                let name = ts.labels[0].value.as_str();
                let labels: Vec<(String, String)> = ts.labels[1..]
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                for s in &ts.samples {
                    let sample = PromSample {
                        name,
                        labels: &labels,
                        value: s.value,
                        timestamp_ms: s.timestamp,
                        kind: MetricKind::Unknown,
                    };
                    let _ = black_box(mapping.map(&sample, t0));
                }
            }
        })
    });
    let body: String = (0..1000)
        .map(|i| {
            format!(
                "node_cpu_seconds_total{{cpu=\"{}\",mode=\"{}\"}} {}.25\n",
                i / 8,
                ["idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"][i % 8],
                1000 + i
            )
        })
        .collect();
    let body = format!("# TYPE node_cpu_seconds_total counter\n{body}");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("scrape_per_sample", |b| {
        let mut mapping = Mapping::new(MappingConfig::default(), "bench").unwrap();
        let instance = ("instance".to_string(), "h:9100".to_string());
        let mut now = t0;
        b.iter(|| {
            now += 15_000;
            let (samples, _) = exposition::parse(&body, false);
            for s in &samples {
                let mut labels = s.labels.clone();
                labels.push(instance.clone());
                let sample = PromSample {
                    name: &s.name,
                    labels: &labels,
                    value: s.value + (now / 1000) as f64,
                    timestamp_ms: now,
                    kind: s.kind,
                };
                let _ = black_box(mapping.map(&sample, now));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, models, cores, ingest);
criterion_main!(benches);
