//! perfpilot's detector beside the job a team writes today with Kafka Streams
//! (`bench/peer-kafka-streams`: a per-series EWMA z-score in a RocksDB store with its
//! changelog), each in a process of its own over the same events on the same broker.
//!
//! Both commit at the same interval (`--commit-interval`), so how far each has read
//! shows in its group's committed offsets. The clock and the CPU counter start when the
//! application's consumer group is first stable with a member (the process's start-up
//! and the group join are not counted; what follows the assignment, such as opening
//! state stores, is) and stop when every event is committed, so the commit interval is
//! also the resolution of the measure. CPU is the process's, all threads (`/proc/<pid>/stat`);
//! memory is its peak resident set (`VmHWM`).

use super::process::{cpu_seconds_of, peak_rss_bytes_of};
use super::throughput::BenchError;
use crate::runtime::KafkaOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often the committed offsets are read.
const POLL: Duration = Duration::from_millis(50);

/// What one application achieved over the events.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRun {
    /// `perfpilot detector` or `Kafka Streams peer`.
    pub app: &'static str,
    /// Events timed.
    pub events: u64,
    /// Seconds from the group's first stable assignment to the last event committed.
    pub seconds: f64,
    /// CPU seconds of the process over that time.
    pub cpu_seconds: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss: u64,
}

impl AppRun {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// Events per CPU second.
    pub fn per_cpu_second(&self) -> f64 {
        self.events as f64 / self.cpu_seconds.max(1e-9)
    }
}

/// One application to start: its command, the consumer group it commits as, and where
/// its log goes.
pub struct App {
    /// Name in the table.
    pub name: &'static str,
    /// The command, ready to spawn.
    pub command: Command,
    /// Its consumer group (Kafka Streams: the application id).
    pub group: String,
    /// Its stderr.
    pub log: PathBuf,
}

/// Starts `app`, waits until its group has committed all `expected` events of `topic`
/// (`partitions` partitions), measures it, and stops it (SIGTERM, then SIGKILL after
/// 30 s). Blocking: call from `spawn_blocking`.
pub fn time_app(
    app: App,
    kafka: &KafkaOptions,
    topic: &str,
    partitions: i32,
    expected: u64,
    timeout: Duration,
) -> Result<AppRun, BenchError> {
    let App {
        name,
        mut command,
        group,
        log,
    } = app;
    let offsets: BaseConsumer = kafka
        .consumer_config(&group)
        .create()
        .map_err(|e| BenchError::Kafka(e.to_string()))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let stderr = std::fs::File::create(&log).map_err(|e| BenchError::Kafka(e.to_string()))?;
    let mut child = command
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| BenchError::Kafka(format!("cannot start {name}: {e}")))?;
    let watch = Watch {
        offsets: &offsets,
        group: &group,
        tpl: &tpl,
    };
    let result = measure(name, &mut child, &watch, expected, timeout, &log);
    stop(&mut child);
    result
}

/// Where an application's progress shows: its group and the partitions it reads.
struct Watch<'a> {
    offsets: &'a BaseConsumer,
    group: &'a str,
    tpl: &'a TopicPartitionList,
}

fn measure(
    name: &'static str,
    child: &mut Child,
    watch: &Watch<'_>,
    expected: u64,
    timeout: Duration,
    log: &std::path::Path,
) -> Result<AppRun, BenchError> {
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, f64)> = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(20).collect::<Vec<_>>().join("\n");
            return Err(BenchError::Kafka(format!(
                "{name} exited ({status}) before reading everything; its log ({}) ends:\n{tail}",
                log.display()
            )));
        }
        if first.is_none() && assigned(watch.offsets, watch.group) {
            first = Some((Instant::now(), cpu_seconds_of(pid).unwrap_or(0.0)));
        }
        let committed = committed_sum(watch.offsets, watch.tpl);
        if committed >= expected {
            let end = (Instant::now(), cpu_seconds_of(pid).unwrap_or(0.0));
            let peak_rss = peak_rss_bytes_of(pid).unwrap_or(0);
            let (t0, c0) = first.unwrap_or(end);
            return Ok(AppRun {
                app: name,
                events: expected,
                seconds: (end.0 - t0).as_secs_f64(),
                cpu_seconds: end.1 - c0,
                peak_rss,
            });
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                stage: name,
                read: committed,
                expected,
                timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Whether `group` is stable with at least one member (its partitions assigned).
fn assigned(offsets: &BaseConsumer, group: &str) -> bool {
    offsets
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .is_ok_and(|list| {
            list.groups()
                .iter()
                .any(|g| g.state() == "Stable" && !g.members().is_empty())
        })
}

/// Events committed by the group over the partitions of `tpl`.
fn committed_sum(offsets: &BaseConsumer, tpl: &TopicPartitionList) -> u64 {
    let Ok(committed) = offsets.committed_offsets(tpl.clone(), Duration::from_secs(5)) else {
        return 0;
    };
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) if o > 0 => o as u64,
            _ => 0,
        })
        .sum()
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_wall_and_per_cpu_second() {
        let r = AppRun {
            app: "x",
            events: 1_000_000,
            seconds: 4.0,
            cpu_seconds: 2.0,
            peak_rss: 1,
        };
        assert_eq!(r.rate(), 250_000.0);
        assert_eq!(r.per_cpu_second(), 500_000.0);
    }
}
