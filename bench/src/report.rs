//! Aggregation behind `bench-report` (and `scripts/bench.sh`): every repetition's JSON
//! line in, medians with min and max, ratios ibpoll/kernel, instructions per packet and
//! target status out.
//!
//! Input: a directory written by `scripts/bench.sh`:
//!
//! * `runs.jsonl`: one object per run, `{"bench", "case", "size", "burst", "rep",
//!   "result"}`, `result` being the last JSON line of the program; `size` is the IP
//!   packet (IPv4 + UDP headers included) for pktgen and for the kernel alike (the
//!   kernel's UDP payload is 28 bytes less). Kernel ping-pong runs carry `"cdf"`, the
//!   name of their `kernel-udp --cdf` file in the directory; callgrind runs carry
//!   `"callgrind"`, the prefix of their per-thread callgrind files in the directory.
//! * `meta.json` (optional): what the script knows (mode, repetitions, durations, times,
//!   rustc, perf support); copied into the report as it is.
//!
//! Runs group by `(bench, case, size, burst)`. Every number in a result (nested objects
//! flattened with dots, `drops` summed when it is an object of reasons, `loadavg[0]` as
//! `loadavg_1m`) is reported as `{median, min, max}` over the repetitions. A ratio pairs
//! repetition i of ibpoll with repetition i of the kernel (they ran next to each other)
//! and reports the median, min and max of the per-repetition ratios.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// A report could not be made.
#[derive(Debug)]
pub enum ReportError {
    /// A file could not be read or written.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of `runs.jsonl` (or another input) is not what the script writes.
    Input {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A plot could not be drawn.
    Plot { path: PathBuf, msg: String },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ReportError::Input { path, line, msg } => {
                write!(f, "{}:{line}: {msg}", path.display())
            }
            ReportError::Plot { path, msg } => write!(f, "plot {}: {msg}", path.display()),
        }
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReportError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// One run as `bench.sh` recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub bench: String,
    pub case: String,
    pub size: u64,
    pub burst: u64,
    pub rep: u64,
    pub result: Value,
    /// Kernel ping-pong: its `percentile,latency_ns` file.
    pub cdf: Option<String>,
    /// Callgrind runs: the prefix of the per-thread output files.
    pub callgrind: Option<String>,
}

/// Which runs are repetitions of one configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub bench: String,
    pub case: String,
    pub size: u64,
    pub burst: u64,
}

impl Run {
    pub fn key(&self) -> Key {
        Key {
            bench: self.bench.clone(),
            case: self.case.clone(),
            size: self.size,
            burst: self.burst,
        }
    }
}

/// Parses `runs.jsonl`; empty lines are skipped.
pub fn parse_runs(path: &Path, text: &str) -> Result<Vec<Run>, ReportError> {
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| ReportError::Input {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let s = |k: &str| {
            v[k].as_str()
                .map(String::from)
                .ok_or_else(|| bad(format!("`{k}` missing or not a string")))
        };
        let n = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| bad(format!("`{k}` missing or not a whole number")))
        };
        let (bench, case) = (s("bench")?, s("case")?);
        let (size, burst, rep) = (n("size")?, n("burst")?, n("rep")?);
        let result = v
            .get("result")
            .filter(|r| r.is_object())
            .cloned()
            .ok_or_else(|| bad(String::from("`result` missing or not an object")))?;
        runs.push(Run {
            bench,
            case,
            size,
            burst,
            rep,
            result,
            cdf: v["cdf"].as_str().map(String::from),
            callgrind: v["callgrind"].as_str().map(String::from),
        });
    }
    Ok(runs)
}

/// Median, min and max of some repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// `None` for no values; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let k = v.len();
        let median = if k % 2 == 1 {
            v[k / 2]
        } else {
            (v[k / 2 - 1] + v[k / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[k - 1],
            n: k,
        })
    }

    pub fn to_json(self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "n": self.n})
    }
}

/// The numbers of one result, flattened: `latency_ns.p50`, `drops` (a total when the
/// result gives an object of reasons, whose entries also appear as `drops.<reason>`),
/// `loadavg_1m`.
pub fn flatten(result: &Value) -> BTreeMap<String, f64> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
        match v {
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    out.insert(prefix.to_string(), x);
                }
            }
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk("", result, &mut out);
    if let Some(Value::Object(d)) = result.get("drops") {
        let total: f64 = d.values().filter_map(Value::as_f64).sum();
        out.insert(String::from("drops"), total);
    }
    if let Some(l) = result["loadavg"].get(0).and_then(Value::as_f64) {
        out.insert(String::from("loadavg_1m"), l);
    }
    out
}

/// The repetitions of one configuration, in repetition order.
#[derive(Debug, Clone)]
pub struct Group {
    pub key: Key,
    pub runs: Vec<Run>,
}

impl Group {
    /// One metric per repetition, by repetition number.
    pub fn series(&self, metric: &str) -> BTreeMap<u64, f64> {
        self.runs
            .iter()
            .filter_map(|r| flatten(&r.result).get(metric).map(|&x| (r.rep, x)))
            .collect()
    }

    pub fn stat(&self, metric: &str) -> Option<Stat> {
        Stat::of(&self.series(metric).into_values().collect::<Vec<_>>())
    }

    /// Every metric's statistics.
    pub fn figures(&self) -> BTreeMap<String, Stat> {
        let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &self.runs {
            for (k, v) in flatten(&r.result) {
                all.entry(k).or_default().push(v);
            }
        }
        all.into_iter()
            .filter_map(|(k, v)| Stat::of(&v).map(|s| (k, s)))
            .collect()
    }
}

/// Runs grouped by configuration, in key order.
pub fn group(runs: &[Run]) -> BTreeMap<Key, Group> {
    let mut g: BTreeMap<Key, Group> = BTreeMap::new();
    for r in runs {
        g.entry(r.key())
            .or_insert_with(|| Group {
                key: r.key(),
                runs: Vec::new(),
            })
            .runs
            .push(r.clone());
    }
    for grp in g.values_mut() {
        grp.runs.sort_by_key(|r| r.rep);
    }
    g
}

/// `a / b` per repetition present in both (and with `b` non-zero).
pub fn paired_ratio(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Option<Stat> {
    let r: Vec<f64> = a
        .iter()
        .filter_map(|(rep, x)| b.get(rep).filter(|&&y| y != 0.0).map(|y| x / y))
        .collect();
    Stat::of(&r)
}

/// A ratio ibpoll/kernel of one metric for one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub what: String,
    pub ibpoll: Key,
    pub kernel: Key,
    pub metric: String,
    pub stat: Stat,
}

fn key(bench: &str, case: &str, size: u64, burst: u64) -> Key {
    Key {
        bench: bench.into(),
        case: case.into(),
        size,
        burst,
    }
}

/// Throughput: pktgen `direct` / `fwd` against kernel `mmsg` of the same size and burst
/// (batch), on `rx_pps`. Latency: pktgen `pingpong_<topology>` against kernel
/// `pingpong` of the same size, on each percentile.
pub fn ratios(groups: &BTreeMap<Key, Group>) -> Vec<Ratio> {
    let mut out = Vec::new();
    for (k, g) in groups {
        if k.bench != "pktgen" {
            continue;
        }
        let (kernel, metrics): (Key, &[&str]) = match k.case.as_str() {
            "direct" | "fwd" => (key("kernel", "mmsg", k.size, k.burst), &["rx_pps"]),
            c if c.starts_with("pingpong") => (
                key("kernel", "pingpong", k.size, 1),
                &[
                    "latency_ns.p50",
                    "latency_ns.p99",
                    "latency_ns.p999",
                    "latency_ns.max",
                ],
            ),
            _ => continue,
        };
        let Some(kg) = groups.get(&kernel) else {
            continue;
        };
        for m in metrics {
            if let Some(stat) = paired_ratio(&g.series(m), &kg.series(m)) {
                out.push(Ratio {
                    what: format!(
                        "pktgen {} {m} / kernel {} {m} (size {}, burst {})",
                        k.case, kernel.case, k.size, k.burst
                    ),
                    ibpoll: k.clone(),
                    kernel: kernel.clone(),
                    metric: m.to_string(),
                    stat,
                });
            }
        }
    }
    out
}

// ----- callgrind ------------------------------------------------------------------------

/// What a thread of a pktgen run did, recognised by the functions and source files its
/// callgrind output names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Thread 1: set-up, the status lines, shutdown.
    Main,
    /// The generator node's lcore: builds and sends packets; the simulated fabric
    /// delivers them inside its `tx_burst`, so the fabric's work is counted here.
    Generator,
    /// The forwarder node's lcore (ipoib-fwd's `fwd.rs` / `lpm.rs`).
    Forwarder,
    /// The sink node's lcore.
    Sink,
    Other,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Generator => "generator",
            Role::Forwarder => "forwarder",
            Role::Sink => "sink",
            Role::Other => "other",
        }
    }
}

/// One thread's callgrind output.
#[derive(Debug, Clone, PartialEq)]
pub struct CgThread {
    pub file: String,
    pub thread: u64,
    pub ir: u64,
    pub role: Role,
}

/// Reads `summary:` / `totals:` and the `thread:` line of one callgrind file, and
/// recognises the thread's role (pktgen's generator or sink first: they may use
/// ipoib-fwd's helpers; then ipoib-fwd's data path).
pub fn parse_callgrind(file: &str, text: &str) -> Option<CgThread> {
    let mut thread = 1;
    let mut ir = None;
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("thread:") {
            thread = t.trim().parse().ok()?;
        } else if let Some(t) = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
        {
            ir = t.split_whitespace().next()?.parse().ok();
        }
    }
    let role = if thread == 1 {
        Role::Main
    } else if text.contains("pktgen::traffic::Generator") {
        Role::Generator
    } else if text.contains("pktgen::traffic::Sink") {
        Role::Sink
    } else if text.contains("apps/ipoib-fwd/src/fwd.rs")
        || text.contains("apps/ipoib-fwd/src/lpm.rs")
    {
        Role::Forwarder
    } else {
        Role::Other
    };
    Some(CgThread {
        file: file.to_string(),
        thread,
        ir: ir?,
        role,
    })
}

/// The instruction counts of one callgrind run: every per-thread file in `dir` whose
/// name starts with `prefix`.
///
/// * `ir_per_tx_packet`: every thread's Ir (set-up, idle polls and control work
///   included) / packets sent; `ir_per_rx_packet`: the same / packets received.
/// * `tx_ir_per_packet`: the generator lcore's Ir / packets sent (TX and the simulated
///   fabric); `rx_ir_per_packet`: the sink lcore's / packets received;
///   `fwd_core_ir_per_packet`: the forwarder lcore's / packets received by the sink
///   (every one crossed the forwarder: the run sends unicast only; packets it forwarded
///   that the fabric then dropped are not in the divisor, so this errs high);
///   `path_ir_per_packet`: their sum, the cost of one packet end to end.
pub fn instructions(dir: &Path, run: &Run, prefix: &str) -> Result<Value, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut threads = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = read(&e.path())?;
        if let Some(t) = parse_callgrind(&name, &text) {
            threads.push(t);
        }
    }
    threads.sort_by_key(|t| t.thread);
    let f = flatten(&run.result);
    let tx = f.get("tx_packets").copied().unwrap_or(0.0);
    let rx = f.get("rx_packets").copied().unwrap_or(0.0);
    let total: u64 = threads.iter().map(|t| t.ir).sum();
    let of = |role: Role| -> Option<u64> {
        let v: Vec<u64> = threads
            .iter()
            .filter(|t| t.role == role)
            .map(|t| t.ir)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    let per = |ir: Option<u64>, n: f64| ir.filter(|_| n > 0.0).map(|ir| ir as f64 / n);
    let tx_pp = per(of(Role::Generator), tx);
    let rx_pp = per(of(Role::Sink), rx);
    let fwd_pp = per(of(Role::Forwarder), rx);
    let path = match (tx_pp, rx_pp, run.case.as_str()) {
        (Some(t), Some(r), "fwd") => fwd_pp.map(|f| t + f + r),
        (Some(t), Some(r), _) => Some(t + r),
        _ => None,
    };
    let mut out = json!({
        "case": run.case,
        "size": run.size,
        "burst": run.burst,
        "duration_s": run.result["duration_s"],
        "tx_packets": tx,
        "rx_packets": rx,
        "ir_total": total,
        "ir_per_tx_packet": per(Some(total), tx),
        "ir_per_rx_packet": per(Some(total), rx),
        "tx_ir_per_packet": tx_pp,
        "rx_ir_per_packet": rx_pp,
        "path_ir_per_packet": path,
        "threads": threads.iter().map(|t| json!({
            "thread": t.thread, "role": t.role.name(), "ir": t.ir,
        })).collect::<Vec<_>>(),
    });
    if run.case == "fwd" {
        out["fwd_core_threads"] =
            json!(threads.iter().filter(|t| t.role == Role::Forwarder).count());
        out["fwd_core_ir"] = json!(of(Role::Forwarder));
        out["fwd_core_ir_per_packet"] = json!(fwd_pp);
    }
    Ok(out)
}

// ----- CDFs -----------------------------------------------------------------------------

/// A `percentile,latency_ns` file (header line optional).
pub fn parse_cdf(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let (p, v) = l.split_once(',')?;
            Some((p.trim().parse().ok()?, v.trim().parse().ok()?))
        })
        .collect()
}

/// The per-percentile median of several CDFs with the same percentiles.
pub fn median_cdf(cdfs: &[Vec<(f64, f64)>]) -> Vec<(f64, f64)> {
    let Some(first) = cdfs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .filter_map(|(i, &(p, _))| {
            let vals: Vec<f64> = cdfs
                .iter()
                .filter_map(|c| c.get(i).filter(|(q, _)| *q == p).map(|&(_, v)| v))
                .collect();
            Stat::of(&vals).map(|s| (p, s.median))
        })
        .collect()
}

/// What pktgen's JSON gives of a latency distribution: its `latency_cdf`
/// (`[[percentile, ns], ...]`) when it has one, else p50 / p99 / p99.9 / max.
pub fn pktgen_cdf(result: &Value) -> Vec<(f64, f64)> {
    if let Some(a) = result["latency_cdf"].as_array() {
        return a
            .iter()
            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
            .collect();
    }
    let l = &result["latency_ns"];
    [("p50", 50.0), ("p99", 99.0), ("p999", 99.9), ("max", 100.0)]
        .iter()
        .filter_map(|(k, p)| l[*k].as_f64().map(|v| (*p, v)))
        .collect()
}

// ----- snapshot reads (criterion) -----------------------------------------------------

/// The snapshot-read figures of `crates/rcu`'s `read` bench from criterion's saved
/// estimates under `dir` (target/criterion): ns per read, median estimate.
pub fn snapshot_read(dir: &Path) -> Value {
    let est = |id: &str| -> Option<(f64, Option<String>)> {
        let p = dir.join(id).join("new").join("estimates.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
        let ns = v["median"]["point_estimate"].as_f64()?;
        let at = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .ok()
            .map(utc_text);
        Some((ns, at))
    };
    let Some((qget, at)) = est("qsbr/quiescent+get") else {
        return Value::Null;
    };
    json!({
        "source": "criterion estimates of crates/rcu benches/read.rs (median)",
        "measured_at": at,
        "quiescent_get_ns": qget,
        "get_ns": est("qsbr/get").map(|e| e.0),
        "burst32_per_read_ns": est("qsbr/burst32").map(|e| e.0 / 32.0),
    })
}

/// `2026-11-27T23:13:00Z`.
pub fn utc_text(t: std::time::SystemTime) -> String {
    let s = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (s / 86_400, s % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ----- machine --------------------------------------------------------------------------

/// CPU model, cores, kernel, hugepages and load of the machine running the report.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let logical = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    json!({
        "cpu_model": field("model name"),
        "virtual_machine": field("flags").map(|f| f.split_whitespace().any(|x| x == "hypervisor")),
        "cpus_online": logical,
        "cpus_usable": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "threads_per_core": match (field("siblings"), field("cpu cores")) {
            (Some(s), Some(c)) => s.parse::<f64>().ok().zip(c.parse::<f64>().ok()).map(|(s, c)| s / c),
            _ => None,
        },
        "kernel": kernel,
        "hugepages": {
            "total": mem("HugePages_Total"),
            "free": mem("HugePages_Free"),
            "size_kib": mem("Hugepagesize"),
        },
        "loadavg_at_report": crate::loadavg_json(),
    })
}

// ----- targets --------------------------------------------------------------------------

/// One target of DESIGN.md against what was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub target: &'static str,
    pub metric: String,
    /// `>=` or `<=`.
    pub cmp: &'static str,
    pub threshold: f64,
    pub unit: &'static str,
    pub measured: Option<f64>,
    pub note: String,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        let m = self.measured?;
        Some(match self.cmp {
            ">=" => m >= self.threshold,
            _ => m <= self.threshold,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "metric": self.metric,
            "cmp": self.cmp,
            "threshold": self.threshold,
            "unit": self.unit,
            "measured": self.measured,
            "met": self.met(),
            "note": self.note,
        })
    }
}

/// The burst the targets are read at: 32 (pktgen's default and the kernel's mmsg
/// batch) when it was run, else the largest.
fn target_burst(groups: &BTreeMap<Key, Group>, case: &str) -> u64 {
    let bursts: Vec<u64> = groups
        .keys()
        .filter(|k| k.bench == "pktgen" && k.case == case && k.size == 64)
        .map(|k| k.burst)
        .collect();
    if bursts.contains(&32) {
        32
    } else {
        bursts.into_iter().max().unwrap_or(32)
    }
}

/// pktgen's data lcores per node (generator, forwarder, sink) for `--cores n`, as
/// `Placement::new` in apps/pktgen/src/run.rs splits them (not ping-pong).
pub fn lcores(n: usize, fwd: bool) -> (usize, usize, usize) {
    let n = n.max(1);
    if fwd {
        let third = (n / 3).max(1);
        (third, n.saturating_sub(2 * third).max(1), third)
    } else {
        let half = (n / 2).max(1);
        (half, 0, (n - half).max(1))
    }
}

fn placement_note(cores: usize, (g, f, s): (usize, usize, usize)) -> String {
    let shared = if g + f + s > cores.max(1) {
        "; the lcores outnumber the CPUs, so they share them (idle lcores yield the CPU)"
    } else {
        "; one CPU per lcore, pinned"
    };
    format!(
        "pktgen --cores {cores}: data lcores generator {g}, forwarder {f}, sink {s}{shared}; control work runs on data lcore 0 of each node"
    )
}

/// Every target, measured or not (`measured: None` when the run did not include it).
pub fn targets(
    groups: &BTreeMap<Key, Group>,
    ratios: &[Ratio],
    ipp: &BTreeMap<String, Value>,
    snapshot: &Value,
) -> Vec<Target> {
    let med = |k: &Key, m: &str| groups.get(k).and_then(|g| g.stat(m)).map(|s| s.median);
    let ratio = |k: &Key, m: &str| {
        ratios
            .iter()
            .find(|r| &r.ibpoll == k && r.metric == m)
            .map(|r| r.stat.median)
    };
    let bd = target_burst(groups, "direct");
    let bf = target_burst(groups, "fwd");
    let direct = key("pktgen", "direct", 64, bd);
    let fwd = key("pktgen", "fwd", 64, bf);
    let pp = key("pktgen", "pingpong_direct", 64, 1);
    let cores = |k: &Key| {
        groups
            .get(k)
            .and_then(|g| g.stat("cores"))
            .map_or(0, |s| s.median as usize)
    };
    let (dc, fc) = (cores(&direct), cores(&fwd));
    let (d_lcores, f_lcores) = (lcores(dc, false), lcores(fc, true));
    let per_core = |k: &Key, n: usize| med(k, "rx_pps").map(|x| x / n.max(1) as f64);
    let rejoin = key("rejoin", "10k", 0, 0);
    let inv = |x: Option<f64>| x.filter(|&r| r > 0.0).map(|r| 1.0 / r);
    vec![
        Target {
            target: "64-byte direct >= 20 Mpps on one data core",
            metric: format!(
                "pktgen direct size 64 burst {bd}: rx_pps (median) / the sink's data lcores"
            ),
            cmp: ">=",
            threshold: 20e6,
            unit: "pps",
            measured: per_core(&direct, d_lcores.2),
            note: placement_note(dc, d_lcores),
        },
        Target {
            target: "64-byte direct >= 10x kernel mmsg",
            metric: format!("pktgen direct / kernel mmsg, size 64 burst {bd}: rx_pps ratio, median"),
            cmp: ">=",
            threshold: 10.0,
            unit: "x",
            measured: ratio(&direct, "rx_pps"),
            note: String::new(),
        },
        Target {
            target: "forwarder >= 15 Mpps per forwarding core",
            metric: format!(
                "pktgen fwd size 64 burst {bf}: rx_pps at the sink (median) / the forwarder's data lcores"
            ),
            cmp: ">=",
            threshold: 15e6,
            unit: "pps",
            measured: per_core(&fwd, f_lcores.1),
            note: placement_note(fc, f_lcores),
        },
        Target {
            target: "forwarder <= 150 instructions per packet",
            metric: String::from("callgrind Ir of the forwarder's lcore thread(s) / packets received by the sink"),
            cmp: "<=",
            threshold: 150.0,
            unit: "Ir/packet",
            measured: ipp.get("fwd").and_then(|v| v["fwd_core_ir_per_packet"].as_f64()),
            note: String::from("includes the forwarder lcore's idle polls and its share of control work"),
        },
        Target {
            target: "ping-pong p50 <= 1 us",
            metric: String::from("pktgen --pingpong direct size 64: latency_ns.p50, median"),
            cmp: "<=",
            threshold: 1000.0,
            unit: "ns",
            measured: med(&pp, "latency_ns.p50"),
            note: String::new(),
        },
        Target {
            target: "ping-pong p99 <= 2 us",
            metric: String::from("pktgen --pingpong direct size 64: latency_ns.p99, median"),
            cmp: "<=",
            threshold: 2000.0,
            unit: "ns",
            measured: med(&pp, "latency_ns.p99"),
            note: String::new(),
        },
        Target {
            target: "ping-pong >= 10x better than kernel (p50)",
            metric: String::from("kernel p50 / pktgen p50 (inverse of the ratio), median"),
            cmp: ">=",
            threshold: 10.0,
            unit: "x",
            measured: inv(ratio(&pp, "latency_ns.p50")),
            note: String::new(),
        },
        Target {
            target: "ping-pong >= 10x better than kernel (p99)",
            metric: String::from("kernel p99 / pktgen p99 (inverse of the ratio), median"),
            cmp: ">=",
            threshold: 10.0,
            unit: "x",
            measured: inv(ratio(&pp, "latency_ns.p99")),
            note: String::new(),
        },
        Target {
            target: "snapshot read <= 5 ns",
            metric: String::from("criterion qsbr/quiescent+get (a quiescent point and a read), median"),
            cmp: "<=",
            threshold: 5.0,
            unit: "ns",
            measured: snapshot["quiescent_get_ns"].as_f64(),
            note: String::new(),
        },
        Target {
            target: "10,000-group rejoin <= 100 ms",
            metric: String::from("rejoin --groups 10000: rejoin_ms, median"),
            cmp: "<=",
            threshold: 100.0,
            unit: "ms",
            measured: med(&rejoin, "rejoin_ms"),
            note: String::from("single thread, simulated SA included (see bench/README.md)"),
        },
        Target {
            target: "rejoin with <= 64 SA transactions in flight",
            metric: String::from("rejoin --groups 10000: sa_in_flight_peak, max"),
            cmp: "<=",
            threshold: 64.0,
            unit: "SA transactions",
            measured: groups
                .get(&rejoin)
                .and_then(|g| g.stat("sa_in_flight_peak"))
                .map(|s| s.max),
            note: String::new(),
        },
    ]
}

// ----- the report -----------------------------------------------------------------------

/// Everything `bench-report` computes from an input directory.
#[derive(Debug)]
pub struct Report {
    pub groups: BTreeMap<Key, Group>,
    pub ratios: Vec<Ratio>,
    /// By callgrind case (`direct`, `fwd`).
    pub instructions: BTreeMap<String, Value>,
    pub snapshot: Value,
    pub targets: Vec<Target>,
    /// Kernel ping-pong CDF (per-percentile median over the repetitions).
    pub kernel_cdf: Vec<(f64, f64)>,
    pub meta: Value,
}

/// Reads `dir` (see the module docs); `criterion` is where criterion saved its
/// estimates (`target/criterion`), if anywhere.
pub fn build(dir: &Path, criterion: Option<&Path>) -> Result<Report, ReportError> {
    let path = dir.join("runs.jsonl");
    let runs = parse_runs(&path, &read(&path)?)?;
    let meta_path = dir.join("meta.json");
    let meta = if meta_path.exists() {
        serde_json::from_str(&read(&meta_path)?).map_err(|e| ReportError::Input {
            path: meta_path.clone(),
            line: 1,
            msg: format!("not JSON: {e}"),
        })?
    } else {
        Value::Null
    };
    let (cg_runs, runs): (Vec<Run>, Vec<Run>) =
        runs.into_iter().partition(|r| r.bench == "callgrind");
    let groups = group(&runs);
    let ratios = ratios(&groups);
    let mut instructions = BTreeMap::new();
    for r in &cg_runs {
        if let Some(prefix) = &r.callgrind {
            instructions.insert(r.case.clone(), self::instructions(dir, r, prefix)?);
        }
    }
    let snapshot = criterion.map_or(Value::Null, snapshot_read);
    let mut cdfs = Vec::new();
    for r in runs
        .iter()
        .filter(|r| r.bench == "kernel" && r.case == "pingpong")
    {
        if let Some(f) = &r.cdf {
            cdfs.push(parse_cdf(&read(&dir.join(f))?));
        }
    }
    let kernel_cdf = median_cdf(&cdfs);
    let targets = targets(&groups, &ratios, &instructions, &snapshot);
    Ok(Report {
        groups,
        ratios,
        instructions,
        snapshot,
        targets,
        kernel_cdf,
        meta,
    })
}

impl Report {
    /// `latest.json`.
    pub fn to_json(&self) -> Value {
        let results: Vec<Value> = self
            .groups
            .values()
            .map(|g| {
                let figures: Map<String, Value> = g
                    .figures()
                    .into_iter()
                    .map(|(k, s)| (k, s.to_json()))
                    .collect();
                json!({
                    "bench": g.key.bench,
                    "case": g.key.case,
                    "size": g.key.size,
                    "burst": g.key.burst,
                    "repetitions": g.runs.len(),
                    "figures": figures,
                })
            })
            .collect();
        let ratios: Vec<Value> = self
            .ratios
            .iter()
            .map(|r| {
                json!({
                    "what": r.what,
                    "ibpoll": {"case": r.ibpoll.case, "size": r.ibpoll.size, "burst": r.ibpoll.burst},
                    "kernel": {"case": r.kernel.case, "size": r.kernel.size, "burst": r.kernel.burst},
                    "metric": r.metric,
                    "ratio": r.stat.to_json(),
                })
            })
            .collect();
        let rejoin = self
            .groups
            .get(&key("rejoin", "10k", 0, 0))
            .map_or(Value::Null, |g| {
                json!({
                    "groups": g.stat("groups").map(|s| s.median),
                    "window": g.stat("window").map(|s| s.median),
                    "rejoin_ms": g.stat("rejoin_ms").map(Stat::to_json),
                    "join_ms": g.stat("join_ms").map(Stat::to_json),
                    "sa_in_flight_peak": g.stat("sa_in_flight_peak").map(Stat::to_json),
                })
            });
        json!({
            "schema": 1,
            "generated_at": utc_text(std::time::SystemTime::now()),
            "run": self.meta,
            "machine": machine(),
            "notes": [
                "size is the IP packet (IPv4 + UDP headers included) for pktgen and the kernel alike; kernel-udp ran with a UDP payload of size - 28",
                "figures are {median, min, max, n} over the repetitions; ratios are ibpoll/kernel per repetition (each pair ran back to back), then median/min/max",
                "kernel mmsg ran with --batch equal to pktgen's --burst",
                "latency ratios below 1 mean ibpoll is faster",
            ],
            "results": results,
            "ratios": ratios,
            "instructions_per_packet": self.instructions,
            "rejoin": rejoin,
            "snapshot_read": self.snapshot,
            "targets": self.targets.iter().map(Target::to_json).collect::<Vec<_>>(),
        })
    }
}

// ----- Markdown summary -----------------------------------------------------------------

fn fmt_pps(x: Option<Stat>) -> String {
    x.map_or(String::from("-"), |s| {
        format!(
            "{:.3} ({:.3}-{:.3})",
            s.median / 1e6,
            s.min / 1e6,
            s.max / 1e6
        )
    })
}

fn fmt_ratio(x: Option<Stat>) -> String {
    x.map_or(String::from("-"), |s| {
        format!("{:.3} ({:.3}-{:.3})", s.median, s.min, s.max)
    })
}

fn fmt_us(x: Option<Stat>) -> String {
    x.map_or(String::from("-"), |s| format!("{:.1}", s.median / 1e3))
}

fn fmt_num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.abs() >= 1e6 => format!("{:.3} M", v / 1e6),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
        None => String::from("-"),
    }
}

impl Report {
    /// The headline figures as Markdown tables (`summary.md`), for bench/README.md.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let m = machine();
        let meta = &self.meta;
        let _ = writeln!(
            s,
            "Run: {} mode, {} repetition(s), {} to {}; machine: `{}`{}, {} CPUs, kernel `{}`, hugepages {} x {} KiB ({} free), {}; load average at the end {}.\n",
            meta["mode"].as_str().unwrap_or("?"),
            meta["repetitions"],
            meta["started_at"].as_str().unwrap_or("?"),
            meta["finished_at"].as_str().unwrap_or("?"),
            m["cpu_model"].as_str().unwrap_or("?"),
            if m["virtual_machine"] == true { " (virtual machine)" } else { "" },
            m["cpus_online"],
            m["kernel"].as_str().unwrap_or("?"),
            m["hugepages"]["total"],
            m["hugepages"]["size_kib"],
            m["hugepages"]["free"],
            meta["rustc"].as_str().unwrap_or("?"),
            meta["loadavg_at_end"].as_str().unwrap_or("?"),
        );
        let stat = |b: &str, c: &str, size: u64, burst: u64, metric: &str| {
            self.groups
                .get(&key(b, c, size, burst))
                .and_then(|g| g.stat(metric))
        };
        let ratio = |c: &str, size: u64, burst: u64, metric: &str| {
            self.ratios
                .iter()
                .find(|r| r.ibpoll == key("pktgen", c, size, burst) && r.metric == metric)
                .map(|r| r.stat)
        };
        let mut sizes: Vec<u64> = self
            .groups
            .keys()
            .filter(|k| k.case == "direct" || k.case == "mmsg")
            .map(|k| k.size)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut bursts: Vec<u64> = self
            .groups
            .keys()
            .filter(|k| k.case == "direct" || k.case == "mmsg")
            .map(|k| k.burst)
            .collect();
        bursts.sort_unstable();
        bursts.dedup();
        s.push_str("Received Mpps, median (min-max); ratios ibpoll/kernel per repetition, median (min-max):\n\n");
        s.push_str("| size | burst | ibpoll direct | ibpoll fwd | kernel mmsg | direct / kernel | fwd / kernel |\n");
        s.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for &size in &sizes {
            for &b in &bursts {
                let _ = writeln!(
                    s,
                    "| {size} | {b} | {} | {} | {} | {} | {} |",
                    fmt_pps(stat("pktgen", "direct", size, b, "rx_pps")),
                    fmt_pps(stat("pktgen", "fwd", size, b, "rx_pps")),
                    fmt_pps(stat("kernel", "mmsg", size, b, "rx_pps")),
                    fmt_ratio(ratio("direct", size, b, "rx_pps")),
                    fmt_ratio(ratio("fwd", size, b, "rx_pps")),
                );
            }
        }
        s.push_str(
            "\nPing-pong, 64-byte IP packets, round trip in us (medians over the repetitions):\n\n",
        );
        s.push_str("| | p50 | p99 | p99.9 | max | p50 ibpoll/kernel | p99 ibpoll/kernel |\n");
        s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (b, c, label) in [
            ("pktgen", "pingpong_direct", "ibpoll direct"),
            ("pktgen", "pingpong_fwd", "ibpoll fwd"),
            ("kernel", "pingpong", "kernel UDP"),
        ] {
            let l = |p: &str| fmt_us(stat(b, c, 64, 1, &format!("latency_ns.{p}")));
            let (r50, r99) = if b == "pktgen" {
                (
                    fmt_ratio(ratio(c, 64, 1, "latency_ns.p50")),
                    fmt_ratio(ratio(c, 64, 1, "latency_ns.p99")),
                )
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} | {r50} | {r99} |",
                l("p50"),
                l("p99"),
                l("p999"),
                l("max")
            );
        }
        if !self.instructions.is_empty() {
            s.push_str("\nInstructions per packet (callgrind Ir, 64-byte packets, burst 32, `--cores 1`):\n\n");
            s.push_str("| case | packets sent / received | TX + fabric per sent packet | forwarder lcore | sink lcore (RX) | end to end | all threads per sent packet |\n");
            s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            for (case, v) in &self.instructions {
                let f = |k: &str| fmt_num(v[k].as_f64());
                let _ = writeln!(
                    s,
                    "| {case} | {} / {} | {} | {} | {} | {} | {} |",
                    f("tx_packets"),
                    f("rx_packets"),
                    f("tx_ir_per_packet"),
                    f("fwd_core_ir_per_packet"),
                    f("rx_ir_per_packet"),
                    f("path_ir_per_packet"),
                    f("ir_per_tx_packet"),
                );
            }
        }
        s.push_str("\nTargets (DESIGN.md):\n\n| target | measured | met |\n| --- | ---: | --- |\n");
        for t in &self.targets {
            let met = match t.met() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "not measured",
            };
            let _ = writeln!(
                s,
                "| {} | {} {} | {met} |",
                t.target,
                fmt_num(t.measured),
                t.unit
            );
        }
        s
    }
}
