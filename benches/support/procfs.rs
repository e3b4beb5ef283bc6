//! A running process's CPU and memory, and how busy the machine is, read
//! from Linux's /proc while the process runs (wait4's rusage only tells at
//! the end).

/// User and system CPU seconds of a process so far (`/proc/PID/stat`
/// fields 14 and 15, in Linux's 100 ticks a second; 0 when it cannot tell).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count after its `)`.
    let rest = stat.rfind(')').map_or("", |at| &stat[at + 1..]);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// Busy and total jiffies of all the machine's cores (`/proc/stat`'s
/// `cpu` line: busy is all but idle and iowait; zeros when it cannot tell).
pub fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let times: Vec<f64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: f64 = times.iter().take(8).sum();
    let idle = times.get(3).unwrap_or(&0.0) + times.get(4).unwrap_or(&0.0);
    (total - idle, total)
}

/// VmRSS, RssAnon and VmHWM of a process, MiB (0 when /proc cannot tell).
pub fn rss(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("VmHWM:"))
}
