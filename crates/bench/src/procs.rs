//! CPU time and peak memory of the processes under test, read from `/proc` (Linux): each
//! service, the gateway simulator, nats-server, every postgres process, and the generator.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;

/// The programs watched, by executable name.
pub const PROGRAMS: [&str; 8] = [
    "order-service",
    "inventory-service",
    "payment-service",
    "fulfillment-service",
    "notification-service",
    "gateway-simulator",
    "nats-server",
    "postgres",
];

/// What the generator itself is called in the tables.
pub const GENERATOR: &str = "generator (this bench)";

/// One process as last read: its cumulative CPU time and its resident memory.
#[derive(Debug, Clone, Copy)]
struct Reading {
    cpu: Duration,
    rss_bytes: u64,
}

/// The CPU time used and the peak resident memory of one program between two marks.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub program: String,
    pub processes: usize,
    pub cpu_s: f64,
    /// CPU time over wall time: 1.0 is one core busy all the time.
    pub cores: f64,
    /// Highest sum of the resident memory of its processes at any sample. For postgres it
    /// counts shared buffers once per process that touched them, so it overstates.
    pub peak_rss_mib: f64,
}

#[derive(Default)]
struct Samples {
    /// Peak summed RSS per program since the last mark.
    peaks: HashMap<String, u64>,
}

/// Samples `/proc` twice a second for peaks, and reads CPU times at marks.
pub struct Sampler {
    samples: Arc<Mutex<Samples>>,
    task: JoinHandle<()>,
}

/// Cumulative CPU per process (pid → program, cpu) at a mark.
#[derive(Debug, Clone)]
pub struct Mark {
    at: tokio::time::Instant,
    cpu: HashMap<u32, (String, Duration)>,
}

impl Sampler {
    pub fn start() -> Sampler {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let shared = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            loop {
                let mut totals: HashMap<String, u64> = HashMap::new();
                for (_, (program, reading)) in read_all() {
                    *totals.entry(program).or_insert(0) += reading.rss_bytes;
                }
                {
                    let mut samples = shared.lock().unwrap_or_else(|e| e.into_inner());
                    for (program, rss) in totals {
                        let peak = samples.peaks.entry(program).or_insert(0);
                        *peak = (*peak).max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Sampler { samples, task }
    }

    /// Reads every process's CPU time now and starts a new peak-memory window.
    pub fn mark(&self) -> Mark {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peaks
            .clear();
        self.mark_without_reset()
    }

    /// What each program used since `since`, sorted by program.
    pub fn usage_since(&self, since: &Mark) -> Vec<Usage> {
        let now = self.mark_without_reset();
        let wall = now
            .at
            .saturating_duration_since(since.at)
            .as_secs_f64()
            .max(0.001);
        let peaks = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peaks
            .clone();
        let mut per_program: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
        for (pid, (program, cpu)) in &now.cpu {
            // A process started after the mark counts from zero.
            let before = since
                .cpu
                .get(pid)
                .filter(|(was, _)| was == program)
                .map_or(Duration::ZERO, |(_, cpu)| *cpu);
            let entry = per_program.entry(program.clone()).or_default();
            entry.0 += 1;
            entry.1 += cpu.saturating_sub(before);
        }
        per_program
            .into_iter()
            .map(|(program, (processes, cpu))| Usage {
                peak_rss_mib: peaks.get(&program).copied().unwrap_or(0) as f64 / 1_048_576.0,
                cores: cpu.as_secs_f64() / wall,
                cpu_s: cpu.as_secs_f64(),
                processes,
                program,
            })
            .collect()
    }

    fn mark_without_reset(&self) -> Mark {
        Mark {
            at: tokio::time::Instant::now(),
            cpu: read_all()
                .into_iter()
                .map(|(pid, (program, reading))| (pid, (program, reading.cpu)))
                .collect(),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every watched process, and this one as [`GENERATOR`].
fn read_all() -> HashMap<u32, (String, Reading)> {
    let mut found = HashMap::new();
    let own = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let program = if pid == own {
            GENERATOR.to_owned()
        } else {
            match program_of(pid) {
                Some(program) => program,
                None => continue,
            }
        };
        // A process may exit between listing and reading: skip it.
        if let Some(reading) = read(pid) {
            found.insert(pid, (program, reading));
        }
    }
    found
}

/// The watched program a process runs, by the file name of its first argument.
fn program_of(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).next()?;
    let first = String::from_utf8_lossy(first);
    // Postgres backends rewrite their arguments to e.g. `postgres: 15/main: postgres db ...`.
    let path = first.split_whitespace().next()?;
    let name = path.rsplit('/').next()?.trim_end_matches(':').to_owned();
    PROGRAMS.contains(&name.as_str()).then_some(name)
}

fn read(pid: u32) -> Option<Reading> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command; rss
    // (pages) is field 24, 22 after it.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(Reading {
        cpu: Duration::from_secs_f64(ticks as f64 / per_second as f64),
        rss_bytes: rss_pages * rustix::param::page_size() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_as_the_generator() {
        let all = read_all();
        let (program, reading) = &all[&std::process::id()];
        assert_eq!(program, GENERATOR);
        assert!(reading.rss_bytes > 0);
    }
}
