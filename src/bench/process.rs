//! What a process uses, read from `/proc` (Linux): resident memory and CPU time, of this
//! process or of another one (a stage or a peer the bench started).

/// Resident set size in bytes, if readable.
pub fn rss_bytes() -> Option<u64> {
    status_kib("self", "VmRSS:")
}

/// Peak resident set size (`VmHWM`) of process `pid` in bytes, if readable.
pub fn peak_rss_bytes_of(pid: u32) -> Option<u64> {
    status_kib(&pid.to_string(), "VmHWM:")
}

fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU time of the process in seconds, if readable.
pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of_path("/proc/self/stat")
}

/// User + system CPU time of process `pid` (all its threads) in seconds, if readable.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    cpu_seconds_of_path(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_of_path(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 of `rest`.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ).
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_cpu_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let rss = rss_bytes().unwrap();
        assert!(rss > 1_000_000, "{rss}");
        // Spin for 300 ms of wall time: the CPU clock (10 ms ticks) must move with it.
        let before = cpu_seconds().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let spent = cpu_seconds().unwrap() - before;
        assert!(spent >= 0.1, "{spent} CPU seconds in 300 ms of spinning");
        let me = std::process::id();
        assert!(cpu_seconds_of(me).unwrap() >= spent);
        assert!(peak_rss_bytes_of(me).unwrap() >= rss);
    }
}
