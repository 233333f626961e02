//! What the run costs the machine, read from Linux's `/proc`: resident
//! memory and CPU time of this process, of each of its threads (by name),
//! and of the embedded broker's process. Every reader returns `None` (or
//! zero) rather than fail where `/proc` is missing or a process is gone.

use std::collections::BTreeMap;

pub use vitalmesh_sim::report::MachineReport;

/// This machine: CPU model, cores, memory and kernel, for reports and
/// benchmark figures ("unknown" where `/proc` does not say).
pub fn machine() -> MachineReport {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    MachineReport {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |s| s.trim().to_owned()),
    }
}

/// Resident set size of a process (`"self"` or a pid), bytes.
pub fn rss_bytes(pid: &str) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Peak resident set size of a process (`"self"` or a pid), bytes.
pub fn peak_rss_bytes(pid: &str) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// A `kB` field of `/proc/{pid}/status`, in bytes; 0 if unreadable.
fn status_bytes(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Clock ticks per second, the unit of `/proc/*/stat` times.
fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// User + system CPU seconds from the text of a `stat` file.
fn cpu_seconds_in(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields are counted after its closing parenthesis, where field 3
    // (state) has index 0: utime is field 14, stime field 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / ticks_per_second())
}

/// CPU seconds (user + system) a process (`"self"` or a pid) has used, all
/// threads included.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    cpu_seconds_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds of this process's live threads, summed by thread name (the
/// tokio workers share one name). Threads that have exited are not listed.
pub fn thread_cpu_seconds() -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Some(seconds) = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| cpu_seconds_in(&s))
        else {
            continue;
        };
        *by_name.entry(name.trim().to_owned()).or_insert(0.0) += seconds;
    }
    by_name
}

/// CPU time of the embedded broker across restarts: each broker process's
/// last reading is kept when a new one replaces it.
#[derive(Debug, Default)]
pub struct BrokerCpu {
    finished: f64,
    current: Option<(u32, f64)>,
}

impl BrokerCpu {
    /// Takes a reading of the broker process `pid`, if there is one now.
    pub fn sample(&mut self, pid: Option<u32>) {
        let Some(pid) = pid else { return };
        let Some(seconds) = cpu_seconds(&pid.to_string()) else {
            return;
        };
        match self.current {
            Some((p, last)) if p != pid => self.finished += last,
            _ => {}
        }
        self.current = Some((pid, seconds));
    }

    /// Seconds over every broker process seen so far.
    pub fn total(&self) -> f64 {
        self.finished + self.current.map_or(0.0, |(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A thread name with spaces and a parenthesis, as the kernel allows.
        let stat = "4242 (tokio (w) 1) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9 0";
        let seconds = cpu_seconds_in(stat).unwrap();
        assert!(
            (seconds - 300.0 / ticks_per_second()).abs() < 1e-9,
            "{seconds}"
        );
        assert_eq!(cpu_seconds_in("garbage"), None);
        assert_eq!(cpu_seconds_in("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_and_its_threads_have_used_some_cpu() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let total = cpu_seconds("self").expect("/proc/self/stat is readable");
        assert!(total > 0.0);
        let threads = thread_cpu_seconds();
        assert!(!threads.is_empty());
        assert!(threads.values().sum::<f64>() <= total + 0.05);
        // Other tests allocate meanwhile: read the current size first, then
        // the high-water mark, which can only have grown since.
        let rss = rss_bytes("self");
        assert!(rss > 1 << 20, "{rss}");
        let peak = peak_rss_bytes("self");
        assert!(peak >= rss, "peak {peak} < rss {rss}");
    }

    #[test]
    fn broker_cpu_keeps_the_time_of_replaced_processes() {
        let me = std::process::id();
        let mut cpu = BrokerCpu::default();
        cpu.sample(None);
        assert_eq!(cpu.total(), 0.0);
        cpu.sample(Some(me));
        let first = cpu.total();
        // A "restart": a different pid (the parent, which surely exists).
        let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32);
        cpu.sample(Some(parent));
        assert!(cpu.total() >= first, "the first process's time is kept");
    }
}
