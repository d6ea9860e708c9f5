//! The `.avsc` files are the contract with agents in other languages. These tests prove
//! each file parses, that records written with the file's schema — by a generic Avro
//! writer that knows nothing of the Rust types — decode into the Rust types, and that
//! Rust-encoded records read back with the file's schema.

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::Schema;
use perfpilot::event::*;
use std::collections::HashMap;

const NAMES: [&str; 6] = [
    "MetricEvent",
    "Anomaly",
    "Forecast",
    "Recommendation",
    "Decision",
    "DeadLetter",
];

fn schema_file(name: &str) -> (String, Schema) {
    let path = format!("{}/schemas/{name}.avsc", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema = Schema::parse_str(&text).unwrap_or_else(|e| panic!("{path} does not parse: {e}"));
    (text, schema)
}

/// Single-object framing done by hand from the file, independent of the crate's codec.
fn frame(schema: &Schema, value: Value) -> Vec<u8> {
    let mut out = vec![0xC3, 0x01];
    out.extend_from_slice(&schema.fingerprint::<Rabin>().bytes);
    out.extend(apache_avro::to_avro_datum(schema, value).expect("value matches the schema file"));
    out
}

fn unframe(schema: &Schema, bytes: &[u8]) -> Value {
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(&bytes[2..10], &schema.fingerprint::<Rabin>().bytes[..]);
    apache_avro::from_avro_datum(schema, &mut &bytes[10..], None)
        .expect("decodes with the schema file")
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    match v {
        Value::Record(fields) => {
            &fields
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no field {name}"))
                .1
        }
        _ => panic!("not a record"),
    }
}

#[test]
fn every_schema_file_parses_documents_every_field_and_shares_one_namespace() {
    for name in NAMES {
        let (text, schema) = schema_file(name);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["namespace"], "io.perfpilot.v1", "{name}");
        assert_eq!(json["name"], name);
        assert!(
            json["doc"].as_str().is_some_and(|d| !d.is_empty()),
            "{name} has no doc"
        );
        for f in json["fields"].as_array().unwrap() {
            assert!(
                f["doc"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}.{} has no doc",
                f["name"]
            );
        }
        assert!(matches!(schema, Schema::Record(_)));
    }
}

#[test]
fn fingerprints_of_the_files_are_the_ones_the_codec_writes() {
    let codec = [
        MetricEvent::schema_info(),
        Anomaly::schema_info(),
        Forecast::schema_info(),
        Recommendation::schema_info(),
        Decision::schema_info(),
        DeadLetter::schema_info(),
    ];
    let mut seen = std::collections::HashSet::new();
    for (name, info) in NAMES.iter().zip(codec) {
        let (_, schema) = schema_file(name);
        assert_eq!(
            &schema.fingerprint::<Rabin>().bytes[..],
            &info.header[2..],
            "{name}"
        );
        assert!(
            seen.insert(info.fingerprint),
            "two schemas share a fingerprint"
        );
    }
}

#[test]
fn metric_event_written_by_a_generic_writer_decodes() {
    let (_, schema) = schema_file("MetricEvent");
    let value = Value::Record(vec![
        ("source".into(), Value::String("py-agent".into())),
        ("target".into(), Value::String("checkout".into())),
        (
            "pool".into(),
            Value::Union(1, Box::new(Value::String("shop".into()))),
        ),
        ("metric".into(), Value::String("cpu_utilization".into())),
        (
            "labels".into(),
            Value::Map(HashMap::from([(
                "zone".to_string(),
                Value::String("a".into()),
            )])),
        ),
        ("timestamp_ms".into(), Value::Long(1_700_000_000_000)),
        ("value".into(), Value::Double(0.75)),
        ("unit".into(), Value::String("ratio".into())),
    ]);
    let e: MetricEvent = decode(&frame(&schema, value)).unwrap();
    assert_eq!(e.pool.as_deref(), Some("shop"));
    assert_eq!(e.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!((e.timestamp_ms, e.value), (1_700_000_000_000, 0.75));

    let no_pool = Value::Record(vec![
        ("source".into(), Value::String("s".into())),
        ("target".into(), Value::String("t".into())),
        ("pool".into(), Value::Union(0, Box::new(Value::Null))),
        ("metric".into(), Value::String("m".into())),
        ("labels".into(), Value::Map(HashMap::new())),
        ("timestamp_ms".into(), Value::Long(1)),
        ("value".into(), Value::Double(1.0)),
        ("unit".into(), Value::String(String::new())),
    ]);
    let e: MetricEvent = decode(&frame(&schema, no_pool)).unwrap();
    assert_eq!((e.pool.as_deref(), e.pool_or_target()), (None, "t"));
}

#[test]
fn decision_written_by_a_generic_writer_decodes() {
    let (_, schema) = schema_file("Decision");
    let value = Value::Record(vec![
        ("id".into(), Value::String("dec-1".into())),
        ("recommendation_id".into(), Value::String("rec-1".into())),
        ("target".into(), Value::String("checkout".into())),
        ("pool".into(), Value::String("shop".into())),
        ("kind".into(), Value::Enum(1, "SCALE_IN".into())),
        ("resource".into(), Value::String("replicas".into())),
        ("verdict".into(), Value::Enum(2, "DEFERRED".into())),
        ("rule".into(), Value::String("budget".into())),
        ("reason".into(), Value::String("because".into())),
        ("current".into(), Value::Double(4.0)),
        ("proposed".into(), Value::Double(3.0)),
        (
            "final_value".into(),
            Value::Union(1, Box::new(Value::Double(3.0))),
        ),
        ("merged_into".into(), Value::Union(0, Box::new(Value::Null))),
        ("decided_ms".into(), Value::Long(5)),
        ("dry_run".into(), Value::Boolean(true)),
    ]);
    let d: Decision = decode(&frame(&schema, value)).unwrap();
    assert_eq!(
        (d.kind, d.verdict, d.final_value, d.merged_into, d.dry_run),
        (
            ActionKind::ScaleIn,
            Verdict::Deferred,
            Some(3.0),
            None,
            true
        )
    );
}

fn samples() -> (
    MetricEvent,
    Anomaly,
    Forecast,
    Recommendation,
    Decision,
    DeadLetter,
) {
    let labels: Labels = [("zone".to_string(), "b".to_string())].into();
    let event = MetricEvent {
        source: "a".into(),
        target: "t".into(),
        pool: None,
        metric: "m".into(),
        labels: labels.clone(),
        timestamp_ms: 42,
        value: -1.5,
        unit: "ms".into(),
    };
    let anomaly = Anomaly {
        id: "anom-1".into(),
        target: "t".into(),
        pool: "p".into(),
        metric: "m".into(),
        labels: labels.clone(),
        timestamp_ms: 42,
        value: 9.0,
        expected: 1.0,
        lower: 0.0,
        upper: 2.0,
        score: 0.97,
        severity: Severity::Critical,
        direction: Direction::Down,
        detectors: vec!["robust_zscore".into()],
        reason: "why".into(),
    };
    let forecast = Forecast {
        id: "fc-1".into(),
        target: "t".into(),
        pool: "p".into(),
        metric: "m".into(),
        labels,
        generated_at_ms: 42,
        last_value: 1.0,
        model: "holt".into(),
        step_ms: 1000,
        interval_level: 0.9,
        points: vec![ForecastPoint {
            timestamp_ms: 43,
            value: 1.0,
            lower: 0.5,
            upper: 1.5,
        }],
        warning: Some(EarlyWarning {
            threshold: 0.9,
            eta_ms: 43,
            probability: 0.7,
        }),
    };
    let rec = Recommendation {
        id: "rec-1".into(),
        target: "t".into(),
        pool: "p".into(),
        kind: ActionKind::Raise,
        resource: "cpu_millicores".into(),
        unit: "millicores".into(),
        current: 500.0,
        proposed: 750.0,
        recommender: "usage_histogram".into(),
        confidence: 0.8,
        priority: 70,
        reason: "r".into(),
        expected_effect: "e".into(),
        expected_benefit: 6.0,
        cost_delta_per_hour: 0.25,
        evidence: vec![Evidence {
            kind: "forecast".into(),
            ref_id: "fc-1".into(),
            metric: "m".into(),
            value: 0.9,
            detail: "d".into(),
        }],
        created_ms: 42,
        expires_ms: 99,
    };
    let decision = Decision {
        id: "dec-1".into(),
        recommendation_id: "rec-1".into(),
        target: "t".into(),
        pool: "p".into(),
        kind: ActionKind::Tune,
        resource: "batch_size".into(),
        verdict: Verdict::Merged,
        rule: "merge".into(),
        reason: "r".into(),
        current: 2.0,
        proposed: 3.0,
        final_value: None,
        merged_into: Some("rec-0".into()),
        decided_ms: 50,
        dry_run: false,
    };
    let dead = DeadLetter {
        stage: "detector".into(),
        reason: "bad_marker".into(),
        detail: "d".into(),
        source_topic: "perfpilot.metrics".into(),
        source_partition: 3,
        source_offset: 77,
        key: Some(b"k".to_vec()),
        payload: Some(vec![0, 1, 2, 255]),
        dead_lettered_ms: 60,
        original_size: Some(1_000_000),
        original_hash: Some("00112233aabbccdd".into()),
    };
    (event, anomaly, forecast, rec, decision, dead)
}

#[test]
fn every_type_round_trips_and_reads_back_with_the_file_schema() {
    let (e, a, f, r, d, dl) = samples();
    assert_eq!(decode::<MetricEvent>(&encode(&e).unwrap()).unwrap(), e);
    assert_eq!(decode::<Anomaly>(&encode(&a).unwrap()).unwrap(), a);
    assert_eq!(decode::<Forecast>(&encode(&f).unwrap()).unwrap(), f);
    assert_eq!(decode::<Recommendation>(&encode(&r).unwrap()).unwrap(), r);
    assert_eq!(decode::<Decision>(&encode(&d).unwrap()).unwrap(), d);
    assert_eq!(decode::<DeadLetter>(&encode(&dl).unwrap()).unwrap(), dl);

    // Read back generically with the files: the field names and values a Python or
    // Java consumer sees.
    let (_, s) = schema_file("Anomaly");
    let v = unframe(&s, &encode(&a).unwrap());
    assert_eq!(field(&v, "severity"), &Value::Enum(2, "CRITICAL".into()));
    assert_eq!(field(&v, "direction"), &Value::Enum(1, "DOWN".into()));
    let (_, s) = schema_file("DeadLetter");
    let v = unframe(&s, &encode(&dl).unwrap());
    assert_eq!(
        field(&v, "payload"),
        &Value::Union(1, Box::new(Value::Bytes(vec![0, 1, 2, 255])))
    );
    let (_, s) = schema_file("Forecast");
    let v = unframe(&s, &encode(&f).unwrap());
    match field(&v, "points") {
        Value::Array(items) => assert_eq!(field(&items[0], "upper"), &Value::Double(1.5)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rust_types_have_exactly_the_fields_of_the_files() {
    // Serialising a sample to JSON lists the Rust fields; the file lists the contract's.
    let (e, a, f, r, d, dl) = samples();
    let rust: [(&str, serde_json::Value); 6] = [
        ("MetricEvent", serde_json::to_value(&e).unwrap()),
        ("Anomaly", serde_json::to_value(&a).unwrap()),
        ("Forecast", serde_json::to_value(&f).unwrap()),
        ("Recommendation", serde_json::to_value(&r).unwrap()),
        ("Decision", serde_json::to_value(&d).unwrap()),
        ("DeadLetter", serde_json::to_value(&dl).unwrap()),
    ];
    for (name, json) in rust {
        let (text, _) = schema_file(name);
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut in_file: Vec<&str> = file["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let mut in_rust: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        in_file.sort();
        in_rust.sort();
        assert_eq!(in_rust, in_file, "{name}: Rust type and schema file differ");
    }
}
