//! One measurement: the churn's disruptions ended, traffic paused, the hosts settled,
//! then RSS, buffers out, memberships at the SA and the ledger read at a quiet moment.

use std::time::{Duration, Instant};

use ibpoll_pmd_sim::SimFabric;
use ibpoll_testkit::alloc::{self, Heap};
use ibpoll_wire::Gid;
use serde_json::{json, Value};

use super::churn::ChurnCounts;
use super::hosts::{CtlView, Host};
use super::ledger::{HostCounts, Ledger};
use super::SoakError;

/// How long the counters must stay unchanged for the hosts to count as settled.
const QUIET: Duration = Duration::from_millis(200);
/// How often the settle looks.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds of traffic and churn so far (measurements not counted).
    pub t_s: f64,
    /// Seconds since the start, measurements included.
    pub wall_s: f64,
    /// The process's resident set (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// The heap's outstanding bytes and allocations, every thread (zero unless the
    /// program installed the counting allocator, as `ibpoll-soak` does).
    pub heap: Heap,
    /// Buffers out of every host's pool, summed.
    pub buffers_out: usize,
    /// Buffers out of each host's pool.
    pub buffers_by_host: Vec<usize>,
    /// Memberships the SA holds, every group and port.
    pub sa_memberships: usize,
    /// Memberships the controllers hold Joined (what the SA should hold).
    pub held: usize,
    /// Memberships at the SA of a port whose controller does not hold that group.
    pub stale: usize,
    /// Groups a controller holds Joined that the SA does not have for its port.
    pub lost: usize,
    /// Packets in, out and lost, hop by hop, since the start.
    pub ledger: Ledger,
    /// Churn events since the start.
    pub churn: ChurnCounts,
    /// Whether the hosts settled (links up, nothing in flight or queued, memberships
    /// agreeing, counters quiet) within the limit.
    pub settled: bool,
    /// What was still moving, when they did not.
    pub unsettled: Option<String>,
    /// Seconds the settle took.
    pub settle_s: f64,
    /// The machine's load averages (1, 5, 15 minutes) when measured.
    pub load: Option<[f64; 3]>,
}

/// Resident set size of this process in KiB (`VmRSS` in `/proc/self/status`), 0 where
/// it cannot be read.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// What the hosts and the SA say at one moment.
struct Look {
    views: Vec<CtlView>,
    /// Per host: the MGIDs the SA holds a membership of for its port, sorted.
    at_sa: Vec<Vec<Gid>>,
    /// Something that changes whenever a packet moves anywhere.
    activity: u64,
}

impl Look {
    fn take(hosts: &[Host], fabric: &SimFabric, groups: &[[u8; 4]]) -> Result<Look, SoakError> {
        let mut views = Vec::with_capacity(hosts.len());
        let mut activity = 0u64;
        for (i, h) in hosts.iter().enumerate() {
            let v = h.view(i, groups)?;
            let s = h.stack()?.total_stats();
            activity += s.rx_packets + s.app_tx + v.stats.tx_sent + h.app.read().received;
            views.push(v);
        }
        let f = fabric.stats();
        activity += f.sent + f.delivered;
        let at_sa = fabric.with_sa(|sa| {
            hosts
                .iter()
                .map(|h| {
                    let mut v: Vec<Gid> = sa.memberships_of(&h.gid).map(|(m, _)| m).collect();
                    v.sort();
                    v
                })
                .collect()
        });
        Ok(Look {
            views,
            at_sa,
            activity,
        })
    }

    /// Why the hosts have not settled yet, if they have not.
    fn unsettled(&self, hosts: &[Host]) -> Option<String> {
        let mut why = Vec::new();
        for ((h, v), sa) in hosts.iter().zip(&self.views).zip(&self.at_sa) {
            if !v.link_up {
                why.push(format!("{}: link down", h.name));
            }
            if v.busy {
                why.push(format!(
                    "{}: flush, QP move or SA transaction running",
                    h.name
                ));
            }
            if v.queued > 0 {
                why.push(format!("{}: {} packets queued", h.name, v.queued));
            }
            if *sa != v.joined {
                why.push(format!(
                    "{}: {} memberships at the SA, {} groups Joined",
                    h.name,
                    sa.len(),
                    v.joined.len()
                ));
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// (stale, lost) memberships: at the SA but not held, held but not at the SA.
    fn disagreement(&self) -> (usize, usize) {
        let mut stale = 0;
        let mut lost = 0;
        for (v, sa) in self.views.iter().zip(&self.at_sa) {
            stale += sa.iter().filter(|m| !v.joined.contains(m)).count();
            lost += v.joined.iter().filter(|m| !sa.contains(m)).count();
        }
        (stale, lost)
    }
}

/// Waits (at most `max`) until the hosts settle, with traffic paused by the caller,
/// and measures (the caller sets the times).
pub fn measure(
    hosts: &[Host],
    fabric: &SimFabric,
    groups: &[[u8; 4]],
    churn: ChurnCounts,
    max: Duration,
) -> Result<Sample, SoakError> {
    let start = Instant::now();
    let mut last: Option<u64> = None;
    let mut quiet_since = Instant::now();
    let (look, unsettled) = loop {
        let look = Look::take(hosts, fabric, groups)?;
        let why = look.unsettled(hosts);
        if why.is_some() || last != Some(look.activity) {
            quiet_since = Instant::now();
        }
        last = Some(look.activity);
        if why.is_none() && quiet_since.elapsed() >= QUIET {
            break (look, None);
        }
        if start.elapsed() > max {
            let why = why.unwrap_or_else(|| String::from("packets still moving"));
            break (look, Some(why));
        }
        std::thread::sleep(LOOK_EVERY);
    };
    let settle_s = start.elapsed().as_secs_f64();
    let mut counts: Vec<HostCounts> = Vec::with_capacity(hosts.len());
    let mut buffers_by_host = Vec::with_capacity(hosts.len());
    for (h, v) in hosts.iter().zip(&look.views) {
        counts.push(h.counts(v)?);
        buffers_by_host.push(h.buffers_out()?);
    }
    let ledger = Ledger::new(&counts, &fabric.stats());
    let (stale, lost) = look.disagreement();
    Ok(Sample {
        t_s: 0.0,
        wall_s: 0.0,
        rss_kib: rss_kib(),
        heap: alloc::heap(),
        buffers_out: buffers_by_host.iter().sum(),
        buffers_by_host,
        sa_memberships: total_memberships(fabric),
        held: look.views.iter().map(|v| v.joined.len()).sum(),
        stale,
        lost,
        ledger,
        churn,
        settled: unsettled.is_none(),
        unsettled,
        settle_s,
        load: crate::loadavg(),
    })
}

/// Every membership the SA holds, of every group and port.
pub fn total_memberships(fabric: &SimFabric) -> usize {
    fabric.with_sa(|sa| sa.groups().map(|g| g.members().count()).sum())
}

impl Sample {
    /// The sample's line of the report.
    pub fn line(&self) -> String {
        let load = match self.load {
            Some([a, b, c]) => format!("{a:.2} {b:.2} {c:.2}"),
            None => String::from("unknown"),
        };
        let mut s = format!(
            "[{:>6.1} s of traffic, {:>6.1} s wall] rss {} kB | heap {} kB in {} blocks | buffers out {} | SA memberships {} (held {}, stale {}, lost {}) | sent {} received {} dropped {} | unaccounted {} | churn {} ({}) | settled in {:.2} s | load {}",
            self.t_s,
            self.wall_s,
            self.rss_kib,
            self.heap.bytes / 1024,
            self.heap.allocs,
            self.buffers_out,
            self.sa_memberships,
            self.held,
            self.stale,
            self.lost,
            self.ledger.sent,
            self.ledger.received,
            self.ledger.dropped,
            self.ledger.unaccounted(),
            self.churn.total(),
            self.churn.text(),
            self.settle_s,
            load,
        );
        if let Some(why) = &self.unsettled {
            s.push_str(&format!(" | NOT SETTLED: {why}"));
        }
        let leaks = self.ledger.leaks();
        if !leaks.is_empty() {
            s.push_str(&format!(" | unaccounted at {}", leaks.join(" ")));
        }
        s
    }

    /// The sample as a JSON object.
    pub fn json(&self) -> Value {
        json!({
            "t_s": self.t_s,
            "wall_s": self.wall_s,
            "rss_kib": self.rss_kib,
            "heap_bytes": self.heap.bytes,
            "heap_allocs": self.heap.allocs,
            "buffers_out": self.buffers_out,
            "buffers_by_host": self.buffers_by_host,
            "sa_memberships": self.sa_memberships,
            "memberships_held": self.held,
            "memberships_stale": self.stale,
            "memberships_lost": self.lost,
            "ledger": self.ledger.json(),
            "churn": self.churn.json(),
            "settled": self.settled,
            "unsettled": self.unsettled,
            "settle_s": self.settle_s,
            "load": self.load,
        })
    }
}
