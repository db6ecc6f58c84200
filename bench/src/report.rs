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
//!   `"callgrind"`, the prefix of their per-thread callgrind files in the directory
//!   (`<prefix>-01`, `<prefix>-02`, ...). Two callgrind runs of one case with different
//!   pktgen `--count`s give marginal instructions per packet ([`marginal`]).
//! * `meta.json` (optional): what the script knows (mode, repetitions, durations, times,
//!   rustc, perf support); copied into the report as it is.
//!
//! Runs group by `(bench, case, size, burst)`. Every number in a result (nested objects
//! flattened with dots, `drops` summed when it is an object of reasons, `loadavg[0]` as
//! `loadavg_1m`) is reported as `{median, min, max}` over the repetitions. A ratio pairs
//! repetition i of ibpoll with repetition i of the kernel (they ran next to each other)
//! and reports the median, min and max of the per-repetition ratios.
//!
//! Instructions per packet come from callgrind's per-thread files: each thread's
//! `summary:` Ir, its role (generator, forwarder, sink) from the functions it names, and
//! the inclusive Ir of the simulated NIC and of the controller from the `calls=` lines
//! ([`call_costs`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::peers::figures as peers;

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
        // + 0.0: the sum of no values is -0.0.
        let total = d.values().filter_map(Value::as_f64).sum::<f64>() + 0.0;
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

/// The simulated NIC's burst functions: receiving from the simulated fabric, and sending
/// (which on the simulated fabric also delivers into the receiver's queue). A real HCA
/// does this work in hardware.
pub const NIC_FNS: [&str; 2] = [
    "<ibpoll_pmd_sim::rx::SimRxQueue as ibpoll_dev::queue::RxQueue>::rx_burst",
    "<ibpoll_pmd_sim::tx::SimTxQueue as ibpoll_dev::queue::TxQueue>::tx_burst",
];

/// The controller polled on a node's data lcore 0 (its own sends included).
pub const CTL_FN: &str = "ibpoll::lcore::CtlHost::poll";

/// Whether `caller` is the controller's code, whose NIC calls (its own sends) count as
/// the controller's, not the data path's.
fn is_controller(caller: &str) -> bool {
    caller.trim_start_matches('<').starts_with("ibpoll_ctrl::") || caller.starts_with(CTL_FN)
}

/// Calls from one function to another: how many, and their inclusive Ir.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    pub count: u64,
    pub ir: u64,
}

/// The calls in one callgrind file, summed by `(caller, callee)`: the count of each
/// `calls=` line and the inclusive Ir on the line after it, with callgrind's name
/// compression (`fn=(id) name`, later `fn=(id)`) resolved.
pub fn call_costs(text: &str) -> BTreeMap<(String, String), Calls> {
    fn name(spec: &str, names: &mut BTreeMap<String, String>) -> String {
        let spec = spec.trim();
        match spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
            Some((id, rest)) => {
                let rest = rest.trim();
                if rest.is_empty() {
                    names.get(id).cloned().unwrap_or_else(|| format!("({id})"))
                } else {
                    names.insert(id.to_string(), rest.to_string());
                    rest.to_string()
                }
            }
            None => spec.to_string(),
        }
    }
    let mut names = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut positions = 1;
    let mut ir_at = 0;
    let mut caller = String::new();
    let mut callee = String::new();
    let mut calls: Option<u64> = None;
    for line in text.lines() {
        if let Some(count) = calls.take() {
            let ir = line
                .split_whitespace()
                .nth(positions + ir_at)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            let c: &mut Calls = out.entry((caller.clone(), callee.clone())).or_default();
            c.count += count;
            c.ir += ir;
        } else if let Some(p) = line.strip_prefix("positions:") {
            positions = p.split_whitespace().count().max(1);
        } else if let Some(e) = line.strip_prefix("events:") {
            ir_at = e.split_whitespace().position(|e| e == "Ir").unwrap_or(0);
        } else if let Some(f) = line.strip_prefix("fn=") {
            caller = name(f, &mut names);
        } else if let Some(f) = line.strip_prefix("cfn=") {
            callee = name(f, &mut names);
        } else if let Some(c) = line.strip_prefix("calls=") {
            calls = Some(
                c.split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            );
        }
    }
    out
}

/// One thread's callgrind output.
#[derive(Debug, Clone, PartialEq)]
pub struct CgThread {
    pub file: String,
    pub thread: u64,
    pub ir: u64,
    pub role: Role,
    /// Inclusive Ir of the simulated NIC ([`NIC_FNS`]) called outside the controller.
    pub nic_ir: u64,
    /// Inclusive Ir of the controller polled on this thread ([`CTL_FN`]).
    pub ctl_ir: u64,
    /// Calls of the controller: the iterations of the lcore loop that polls it (data
    /// lcore 0 of a node), idle ones included.
    pub ctl_calls: u64,
}

/// Reads `summary:` / `totals:` and the `thread:` line of one callgrind file, the
/// inclusive costs of the simulated NIC and of the controller, and recognises the
/// thread's role (pktgen's generator or sink first: they may use ipoib-fwd's helpers;
/// then ipoib-fwd's data path).
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
    let (mut nic_ir, mut ctl_ir, mut ctl_calls) = (0, 0, 0);
    for ((caller, callee), c) in call_costs(text) {
        let nic = |f: &str| NIC_FNS.contains(&f);
        if nic(&callee) && !nic(&caller) && !is_controller(&caller) {
            nic_ir += c.ir;
        } else if callee == CTL_FN && caller != CTL_FN {
            ctl_ir += c.ir;
            ctl_calls += c.count;
        }
    }
    Some(CgThread {
        file: file.to_string(),
        thread,
        ir: ir?,
        role,
        nic_ir,
        ctl_ir,
        ctl_calls,
    })
}

/// Whether `name` is a per-thread file of the callgrind output `prefix`: the prefix
/// itself or `<prefix>-<thread number>`.
fn is_cg_file(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        rest.is_empty()
            || rest
                .strip_prefix('-')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Every per-thread callgrind file of output `prefix` in `dir`, by thread.
pub fn cg_threads(dir: &Path, prefix: &str) -> Result<Vec<CgThread>, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut threads = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_cg_file(&name, prefix) {
            continue;
        }
        let text = read(&e.path())?;
        if let Some(t) = parse_callgrind(&name, &text) {
            threads.push(t);
        }
    }
    threads.sort_by_key(|t| t.thread);
    Ok(threads)
}

/// The Ir of one role's threads: all, the simulated NIC's part, the controller's part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleIr {
    pub ir: u64,
    pub nic: u64,
    pub ctl: u64,
    /// Lcore loop iterations (calls of the controller).
    pub iterations: u64,
    pub threads: usize,
}

impl RoleIr {
    pub fn of(threads: &[CgThread], role: Role) -> Option<RoleIr> {
        let mut r = RoleIr::default();
        for t in threads.iter().filter(|t| t.role == role) {
            r.ir += t.ir;
            r.nic += t.nic_ir;
            r.ctl += t.ctl_ir;
            r.iterations += t.ctl_calls;
            r.threads += 1;
        }
        (r.threads > 0).then_some(r)
    }

    /// The rest: the stack and the application (neither the NIC nor the controller).
    pub fn rest(self) -> u64 {
        self.ir.saturating_sub(self.nic + self.ctl)
    }
}

/// One callgrind run: its threads and its packets.
#[derive(Debug, Clone)]
pub struct CgRun {
    pub run: Run,
    pub threads: Vec<CgThread>,
    /// Packets sent (priming included) and received at the sink.
    pub tx: f64,
    pub rx: f64,
    pub drops: f64,
}

impl CgRun {
    pub fn new(run: &Run, threads: Vec<CgThread>) -> CgRun {
        let f = flatten(&run.result);
        let g = |k: &str| f.get(k).copied().unwrap_or(0.0);
        CgRun {
            run: run.clone(),
            threads,
            tx: g("tx_packets"),
            rx: g("rx_packets"),
            drops: g("drops"),
        }
    }

    pub fn role(&self, role: Role) -> Option<RoleIr> {
        RoleIr::of(&self.threads, role)
    }

    pub fn total(&self) -> u64 {
        self.threads.iter().map(|t| t.ir).sum()
    }

    /// pktgen's `--count`, if the run had one.
    pub fn count(&self) -> Option<u64> {
        self.run.result["count"].as_u64()
    }

    /// False only when the run had a `--count` it did not reach.
    pub fn count_reached(&self) -> bool {
        self.run.result["count_reached"].as_bool() != Some(false)
    }

    fn is_fwd(&self) -> bool {
        self.run.case == "fwd"
    }
}

fn per(ir: Option<u64>, n: f64) -> Option<f64> {
    ir.filter(|_| n > 0.0).map(|ir| ir as f64 / n)
}

/// The instruction counts of one callgrind run (its per-thread files are in `dir`,
/// named after `prefix`); see [`single_run`].
pub fn instructions(dir: &Path, run: &Run, prefix: &str) -> Result<Value, ReportError> {
    Ok(single_run(&CgRun::new(run, cg_threads(dir, prefix)?)))
}

/// The figures of one run, set-up and shutdown included:
///
/// * `ir_per_tx_packet`: every thread's Ir (set-up, idle polls and control work
///   included) / packets sent; `ir_per_rx_packet`: the same / packets received.
/// * `tx_ir_per_packet`: the generator lcore's Ir / packets sent (TX and the simulated
///   fabric); `rx_ir_per_packet`: the sink lcore's / packets received;
///   `fwd_core_ir_per_packet`: the forwarder lcore's / packets received by the sink
///   (every one crossed the forwarder: the run sends unicast only; packets it forwarded
///   that the fabric then dropped are not in the divisor, so this errs high);
///   `path_ir_per_packet`: their sum, the cost of one packet end to end.
/// * `..._excl_nic`: the same without the simulated NIC's inclusive Ir ([`NIC_FNS`]);
///   the forwarder's Ir is also split into `fwd_core_nic_ir`, `fwd_core_ctl_ir` (the
///   controller polled on that lcore, [`CTL_FN`]) and `fwd_core_rest_ir` (the stack and
///   ipoib-fwd).
pub fn single_run(r: &CgRun) -> Value {
    let (tx, rx) = (r.tx, r.rx);
    let total = r.total();
    let gen = r.role(Role::Generator);
    let sink = r.role(Role::Sink);
    let fwd = r.role(Role::Forwarder);
    let tx_pp = per(gen.map(|g| g.ir), tx);
    let rx_pp = per(sink.map(|s| s.ir), rx);
    let fwd_pp = per(fwd.map(|f| f.ir), rx);
    let path = match (tx_pp, rx_pp, r.is_fwd()) {
        (Some(t), Some(s), true) => fwd_pp.map(|f| t + f + s),
        (Some(t), Some(s), false) => Some(t + s),
        _ => None,
    };
    let mut out = json!({
        "case": r.run.case,
        "size": r.run.size,
        "burst": r.run.burst,
        "duration_s": r.run.result["duration_s"],
        "count": r.run.result["count"],
        "count_reached": r.run.result["count_reached"],
        "tx_packets": tx,
        "rx_packets": rx,
        "drops": r.drops,
        "ir_total": total,
        "ir_per_tx_packet": per(Some(total), tx),
        "ir_per_rx_packet": per(Some(total), rx),
        "tx_ir_per_packet": tx_pp,
        "tx_ir_per_packet_excl_nic": per(gen.map(|g| g.ir.saturating_sub(g.nic)), tx),
        "rx_ir_per_packet": rx_pp,
        "rx_ir_per_packet_excl_nic": per(sink.map(|s| s.ir.saturating_sub(s.nic)), rx),
        "path_ir_per_packet": path,
        "threads": r.threads.iter().map(|t| json!({
            "thread": t.thread, "role": t.role.name(), "ir": t.ir,
            "nic_ir": t.nic_ir, "ctl_ir": t.ctl_ir, "loop_iterations": t.ctl_calls,
        })).collect::<Vec<_>>(),
    });
    if r.is_fwd() {
        out["fwd_core_threads"] = json!(fwd.map_or(0, |f| f.threads));
        out["fwd_core_ir"] = json!(fwd.map(|f| f.ir));
        out["fwd_core_nic_ir"] = json!(fwd.map(|f| f.nic));
        out["fwd_core_ctl_ir"] = json!(fwd.map(|f| f.ctl));
        out["fwd_core_rest_ir"] = json!(fwd.map(RoleIr::rest));
        out["fwd_core_ir_per_packet"] = json!(fwd_pp);
        out["fwd_core_ir_per_packet_excl_nic"] =
            json!(per(fwd.map(|f| f.ir.saturating_sub(f.nic)), rx));
    }
    out
}

/// Marginal instructions per packet from two runs of the same configuration with
/// different `--count`s: per role, `(Ir(b) - Ir(a)) / (packets(b) - packets(a))`, which
/// removes set-up and shutdown exactly (both runs do the same of those); what is left
/// is the per-packet work and what the lcores do per unit of time while the run lasts
/// (idle polls, the controller's polls), which the packet rate sets.
///
/// Divisors as in [`single_run`]: packets sent for the generator (TX and the simulated
/// fabric) and for all threads, packets received at the sink for the forwarder and the
/// sink. The forwarder's figure is split into the simulated NIC, the controller and the
/// rest (the stack and ipoib-fwd); `fwd_core_ir_per_packet_excl_nic` is what a real HCA
/// would leave to the core. `valid` is false (and the figures null) when a run did not
/// reach its count or the packets did not grow.
pub fn marginal(a: &CgRun, b: &CgRun) -> Value {
    let (a, b) = if a.tx <= b.tx { (a, b) } else { (b, a) };
    let (dtx, drx) = (b.tx - a.tx, b.rx - a.rx);
    let note = if !a.count_reached() || !b.count_reached() {
        Some("a run did not reach its --count within its --duration limit")
    } else if dtx <= 0.0 || drx <= 0.0 {
        Some("the second run sent or received no more packets than the first")
    } else {
        None
    };
    let valid = note.is_none();
    let d = |x: u64, y: u64| y as f64 - x as f64;
    let dper = |x: f64, n: f64| (valid && n > 0.0).then(|| x / n);
    let role = |r: Role| a.role(r).zip(b.role(r));
    let mut out = json!({
        "counts": [a.count(), b.count()],
        "tx_packets": [a.tx, b.tx],
        "rx_packets": [a.rx, b.rx],
        "drops": [a.drops, b.drops],
        "ir_total": [a.total(), b.total()],
        "valid": valid,
        "note": note,
        "ir_per_tx_packet": dper(d(a.total(), b.total()), dtx),
    });
    let mut path = Some(0.0);
    for (r, key, n) in [
        (Role::Generator, "tx", dtx),
        (Role::Sink, "rx", drx),
        (Role::Forwarder, "fwd_core", drx),
    ] {
        if r == Role::Forwarder && !a.is_fwd() {
            continue;
        }
        let Some((x, y)) = role(r) else {
            out[format!("{key}_ir_per_packet")] = Value::Null;
            path = None;
            continue;
        };
        let full = dper(d(x.ir, y.ir), n);
        out[format!("{key}_ir")] = json!([x.ir, y.ir]);
        out[format!("{key}_ir_per_packet")] = json!(full);
        out[format!("{key}_nic_ir_per_packet")] = json!(dper(d(x.nic, y.nic), n));
        out[format!("{key}_ctl_ir_per_packet")] = json!(dper(d(x.ctl, y.ctl), n));
        out[format!("{key}_rest_ir_per_packet")] = json!(dper(d(x.rest(), y.rest()), n));
        out[format!("{key}_ir_per_packet_excl_nic")] = json!(dper(
            d(x.ir.saturating_sub(x.nic), y.ir.saturating_sub(y.nic)),
            n
        ));
        out[format!("{key}_loop_iterations_per_packet")] =
            json!(dper(d(x.iterations, y.iterations), n));
        path = path.zip(full).map(|(p, f)| p + f);
    }
    out["path_ir_per_packet"] = json!(path);
    out
}

/// The instruction figures of one case (`direct`, `fwd`) from its callgrind runs: the
/// single-run figures of the run with the most packets at the top level, every run's
/// under `runs` (fewest packets first), and, with two runs or more, the marginal
/// figures between the first and the last under `marginal` (else null).
pub fn case_instructions(runs: &[CgRun]) -> Value {
    let mut sorted: Vec<&CgRun> = runs.iter().collect();
    sorted.sort_by(|x, y| x.tx.total_cmp(&y.tx));
    let Some(last) = sorted.last() else {
        return Value::Null;
    };
    let mut out = single_run(last);
    out["runs"] = json!(sorted.iter().map(|r| single_run(r)).collect::<Vec<_>>());
    out["marginal"] = match (sorted.first(), sorted.len()) {
        (Some(first), 2..) => marginal(first, last),
        _ => Value::Null,
    };
    out
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

/// The marginal figures of the forwarder core, in the order the summaries print them:
/// the whole core, its simulated NIC, its controller, the stack and ipoib-fwd, the core
/// without the NIC, and loop iterations per packet.
pub const FWD_CORE_SPLIT: [&str; 6] = [
    "fwd_core_ir_per_packet",
    "fwd_core_nic_ir_per_packet",
    "fwd_core_ctl_ir_per_packet",
    "fwd_core_rest_ir_per_packet",
    "fwd_core_ir_per_packet_excl_nic",
    "fwd_core_loop_iterations_per_packet",
];

/// The data lcore's classify + resolve, without the NIC (`datapath-ir` under callgrind,
/// `datapath_ir.jsonl` in `dir`: one `{"case","bursts","packets","ir"}` line per case;
/// and criterion's `classify_resolve/<case>` estimates under `criterion`, ns per burst
/// of 32). Null when neither is there.
pub fn datapath(dir: &Path, criterion: Option<&Path>) -> Value {
    let mut cases = Map::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("datapath_ir.jsonl")) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(case), Some(ir), Some(packets)) = (
                v["case"].as_str(),
                v["ir"].as_f64(),
                v["packets"].as_f64().filter(|&p| p > 0.0),
            ) else {
                continue;
            };
            cases.insert(
                case.to_string(),
                json!({"ir_per_packet": ir / packets, "packets": packets}),
            );
        }
    }
    if let Some(dir) = criterion {
        for (case, entry) in cases.iter_mut() {
            let p = dir
                .join("classify_resolve")
                .join(case)
                .join("new")
                .join("estimates.json");
            let ns = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| v["median"]["point_estimate"].as_f64());
            if let Some(ns) = ns {
                entry["ns_per_packet"] = json!(ns / 32.0);
            }
        }
    }
    if cases.is_empty() {
        return Value::Null;
    }
    json!({
        "what": "a data lcore's classify + strip + resolve per packet against a real snapshot (10,000 groups, 8 neighbours), no NIC and no loop (bench/src/datapath.rs)",
        "ir_source": "callgrind of datapath-ir --bursts 1000, only Fixture::run_bursts counted",
        "ns_source": "criterion classify_resolve/<case> (median per burst of 32, divided by 32); a full run re-measures it",
        "cases": cases,
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
    // Physical cores: distinct (physical id, core id) pairs; the logical CPUs where
    // cpuinfo does not say (some VMs).
    let mut pairs = std::collections::BTreeSet::new();
    let (mut phys, mut core) = (None, None);
    for l in cpuinfo.lines() {
        match l.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("physical id", v)) => phys = Some(v.to_string()),
            Some(("core id", v)) => core = Some(v.to_string()),
            _ if l.trim().is_empty() => {
                if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                    pairs.insert((p, c));
                }
            }
            _ => {}
        }
    }
    if let (Some(p), Some(c)) = (phys, core) {
        pairs.insert((p, c));
    }
    let cores = if pairs.is_empty() {
        logical
    } else {
        pairs.len()
    };
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
        "cores": cores,
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
    // The marginal figure of two runs when there is one, else the single run's.
    let fwd_marginal = ipp
        .get("fwd")
        .map(|v| &v["marginal"])
        .filter(|m| m["valid"] == true);
    let fwd_ipp = |k: &str| match fwd_marginal {
        Some(m) => m[k].as_f64(),
        None => ipp.get("fwd").and_then(|v| v[k].as_f64()),
    };
    let fwd_ipp_metric = match fwd_marginal {
        Some(m) => format!(
            "callgrind, pktgen fwd --count {} and {}: marginal Ir of the forwarder's lcore thread(s) / marginal packets received by the sink",
            m["counts"][0], m["counts"][1]
        ),
        None => String::from(
            "callgrind Ir of the forwarder's lcore thread(s) / packets received by the sink (one run, set-up and shutdown included)",
        ),
    };
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
            metric: fwd_ipp_metric.clone(),
            cmp: "<=",
            threshold: 150.0,
            unit: "Ir/packet",
            measured: fwd_ipp("fwd_core_ir_per_packet"),
            note: String::from(
                "the forwarding core's whole Ir: the simulated NIC (whose send also delivers into the next receive queue), the controller polled on that lcore, idle polls, the stack and ipoib-fwd",
            ),
        },
        Target {
            target: "forwarder <= 150 instructions per packet, simulated NIC excluded",
            metric: format!("{fwd_ipp_metric}, less the inclusive Ir of the simulated NIC's rx_burst and tx_burst"),
            cmp: "<=",
            threshold: 150.0,
            unit: "Ir/packet",
            measured: fwd_ipp("fwd_core_ir_per_packet_excl_nic"),
            note: String::from(
                "what the core would do with a real HCA, which moves the packets in hardware; the controller's polls and idle polls are still in",
            ),
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
    /// Classify + resolve per packet ([`datapath`]).
    pub datapath: Value,
    pub targets: Vec<Target>,
    /// `scripts/fwd-ir.sh`'s figures (`fwd_ir.json`), or null.
    pub fwd_ir: Value,
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
    let mut by_case: BTreeMap<String, Vec<CgRun>> = BTreeMap::new();
    for r in &cg_runs {
        if let Some(prefix) = &r.callgrind {
            by_case
                .entry(r.case.clone())
                .or_default()
                .push(CgRun::new(r, cg_threads(dir, prefix)?));
        }
    }
    let instructions: BTreeMap<String, Value> = by_case
        .into_iter()
        .map(|(case, runs)| (case, case_instructions(&runs)))
        .collect();
    let snapshot = criterion.map_or(Value::Null, snapshot_read);
    let datapath = self::datapath(dir, criterion);
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
    let fwd_ir = peers::read_fwd_ir(dir).map_err(|msg| ReportError::Input {
        path: dir.join("fwd_ir.json"),
        line: 1,
        msg,
    })?;
    let mut targets = targets(&groups, &ratios, &instructions, &snapshot);
    targets.extend(peers::targets(&groups, &fwd_ir));
    Ok(Report {
        groups,
        ratios,
        instructions,
        snapshot,
        datapath,
        targets,
        fwd_ir,
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
        let vs_kernel: Vec<Value> = self
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
        let mut ratios = Map::new();
        ratios.insert(String::from("vs_kernel"), Value::Array(vs_kernel));
        peers::add_ratios(&self.groups, &mut ratios);
        json!({
            "schema": 2,
            "generated_at": utc_text(std::time::SystemTime::now()),
            "run": self.meta,
            "machine": machine(),
            "notes": [
                "size is the IP packet (IPv4 + UDP headers included) for pktgen and the kernel alike; kernel-udp ran with a UDP payload of size - 28",
                "figures are {median, min, max, n} over the repetitions; ratios are ibpoll/kernel per repetition (each pair ran back to back), then median/min/max",
                "kernel mmsg ran with --batch equal to pktgen's --burst",
                "latency ratios below 1 mean ibpoll is faster",
                "schema 2: `ratios` is an object: `vs_kernel` holds schema 1's array of ibpoll/kernel ratios; the ratios against the DPDK peers of the same run are numbers (medians of the per-repetition ratios) under their names, with {median, min, max, n} under `vs_peers`",
                "peers, ipoib_fwd_1lcore and direct_ring: rx_pps and tx_pps are medians over the repetitions (null when the program could not run; `unavailable` says why)",
            ],
            "results": results,
            "ratios": ratios,
            "peers": peers::peers_json(&self.groups),
            "ipoib_fwd_1lcore": peers::entry(&self.groups, peers::IPOIB_FWD),
            "direct_ring": peers::entry(&self.groups, peers::DIRECT_RING),
            "pingpong_ring": peers::pingpong_json(&self.groups),
            "forwarder_ir_per_packet": peers::forwarder_ir(&self.fwd_ir),
            "forwarder_ir_detail": self.fwd_ir,
            "instructions_per_packet": self.instructions,
            "rejoin": rejoin,
            "snapshot_read": self.snapshot,
            "classify_resolve": self.datapath,
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
            "Run: {} mode{}, {} repetition(s), {} to {}; machine: `{}`{}, {} CPUs ({} cores), kernel `{}`, hugepages {} x {} KiB ({} free), {}; load average at the start {}, at the end {}.\n",
            meta["mode"].as_str().unwrap_or("?"),
            if meta["quick"] == true { " (--quick)" } else { "" },
            meta["repetitions"],
            meta["started_at"].as_str().unwrap_or("?"),
            meta["finished_at"].as_str().unwrap_or("?"),
            m["cpu_model"].as_str().unwrap_or("?"),
            if m["virtual_machine"] == true { " (virtual machine)" } else { "" },
            m["cpus_online"],
            m["cores"],
            m["kernel"].as_str().unwrap_or("?"),
            m["hugepages"]["total"],
            m["hugepages"]["size_kib"],
            m["hugepages"]["free"],
            meta["rustc"].as_str().unwrap_or("?"),
            meta["loadavg_at_start"].as_str().unwrap_or("?"),
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
            ("pktgen", "pingpong_direct_ring", "ibpoll direct, ring PMD"),
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
        let marginals: Vec<(&String, &Value)> = self
            .instructions
            .iter()
            .map(|(case, v)| (case, &v["marginal"]))
            .filter(|(_, m)| m.is_object())
            .collect();
        if !marginals.is_empty() {
            s.push_str("\nMarginal instructions per packet (callgrind Ir of two runs, `--count N` and `2N`: (Ir(2N) - Ir(N)) / (packets(2N) - packets(N)) per thread role; set-up and shutdown cancel out):\n\n");
            s.push_str("| case | counts | TX + fabric per sent packet | forwarder core | forwarder: simulated NIC | forwarder: controller | forwarder: stack + ipoib-fwd | forwarder core, NIC excluded | forwarder loop iterations per packet | sink (RX) | end to end |\n");
            s.push_str(
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            );
            for (case, m) in marginals {
                let f = |k: &str| fmt_num(m[k].as_f64());
                let counts = match m["note"].as_str() {
                    Some(why) => format!("{} / {} ({why})", m["counts"][0], m["counts"][1]),
                    None => format!("{} / {}", m["counts"][0], m["counts"][1]),
                };
                let fwd = FWD_CORE_SPLIT.map(f).join(" | ");
                let _ = writeln!(
                    s,
                    "| {case} | {counts} | {} | {fwd} | {} | {} |",
                    f("tx_ir_per_packet"),
                    f("rx_ir_per_packet"),
                    f("path_ir_per_packet"),
                );
            }
        }
        if !self.instructions.is_empty() {
            s.push_str("\nInstructions per packet of single runs (callgrind Ir, 64-byte packets, burst 32, `--cores 1`; set-up and shutdown included):\n\n");
            s.push_str("| case | count | packets sent / received | TX + fabric per sent packet | forwarder lcore | forwarder lcore, NIC excluded | sink lcore (RX) | end to end | all threads per sent packet |\n");
            s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            for (case, v) in &self.instructions {
                let runs = match v["runs"].as_array() {
                    Some(a) if !a.is_empty() => a.iter().collect(),
                    _ => vec![v],
                };
                for r in runs {
                    let f = |k: &str| fmt_num(r[k].as_f64());
                    let _ = writeln!(
                        s,
                        "| {case} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
                        r["count"]
                            .as_u64()
                            .map_or(String::from("-"), |n| n.to_string()),
                        f("tx_packets"),
                        f("rx_packets"),
                        f("tx_ir_per_packet"),
                        f("fwd_core_ir_per_packet"),
                        f("fwd_core_ir_per_packet_excl_nic"),
                        f("rx_ir_per_packet"),
                        f("path_ir_per_packet"),
                        f("ir_per_tx_packet"),
                    );
                }
            }
        }
        if let Some(cases) = self.datapath["cases"].as_object() {
            s.push_str("\nClassify + resolve per packet, no NIC (datapath-ir under callgrind; criterion `classify_resolve/*`):\n\n| case | Ir / packet | ns / packet |\n| --- | ---: | ---: |\n");
            for (case, v) in cases {
                let _ = writeln!(
                    s,
                    "| {case} | {} | {} |",
                    fmt_num(v["ir_per_packet"].as_f64()),
                    v["ns_per_packet"]
                        .as_f64()
                        .map_or(String::from("-"), |ns| format!("{ns:.1}")),
                );
            }
        }
        s.push_str(&peers::markdown(&self.groups, &self.fwd_ir));
        s.push_str("\nTargets (DESIGN.md, issue 9):\n\n| target | measured | met |\n| --- | ---: | --- |\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datapath_figures_per_packet_from_callgrind_and_criterion() {
        let dir = std::env::temp_dir().join(format!("ibpoll-dp-{}", std::process::id()));
        let crit = dir.join("criterion");
        let est = crit.join("classify_resolve/unicast_1/new");
        std::fs::create_dir_all(&est).unwrap();
        std::fs::write(
            dir.join("datapath_ir.jsonl"),
            "{\"case\":\"unicast_1\",\"bursts\":1000,\"packets\":32000,\"ir\":3200000}\n\
             {\"case\":\"mcast_4\",\"bursts\":10,\"packets\":320,\"ir\":48000}\n\
             not json\n",
        )
        .unwrap();
        std::fs::write(
            est.join("estimates.json"),
            "{\"median\":{\"point_estimate\":320.0}}",
        )
        .unwrap();
        let v = datapath(&dir, Some(&crit));
        assert_eq!(v["cases"]["unicast_1"]["ir_per_packet"], json!(100.0));
        assert_eq!(v["cases"]["unicast_1"]["ns_per_packet"], json!(10.0));
        assert_eq!(v["cases"]["mcast_4"]["ir_per_packet"], json!(150.0));
        assert!(v["cases"]["mcast_4"].get("ns_per_packet").is_none());
        assert_eq!(v["cases"].as_object().unwrap().len(), 2);
        assert_eq!(datapath(&crit, None), Value::Null);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A forwarder thread's callgrind output in the compressed form callgrind writes:
    /// the lcore loop calls rx_burst and tx_burst (the simulated NIC) and the
    /// controller, which itself sends through tx_burst once.
    const FWD_THREAD: &str = "\
version: 1
creator: callgrind-3.19.0
thread: 3
positions: line
events: Ir
summary: 10000

fl=(1) /work/main/crates/stack/src/lcore.rs
fn=(10) ibpoll::lcore::DataLcore<A>::run
fi=(2) /work/main/apps/ipoib-fwd/src/fwd.rs
12 1500
cfl=(3) /work/main/pmd/sim/src/rx.rs
cfn=(11) <ibpoll_pmd_sim::rx::SimRxQueue as ibpoll_dev::queue::RxQueue>::rx_burst
calls=40 5
+3 1000
cfl=(4) /work/main/pmd/sim/src/tx.rs
cfn=(12) <ibpoll_pmd_sim::tx::SimTxQueue as ibpoll_dev::queue::TxQueue>::tx_burst
calls=20 7
-1 3000
cfn=(11)
calls=10 5
* 500
cfn=(13) ibpoll::lcore::CtlHost::poll
calls=50 9
+1 2500

fl=(4)
fn=(12)
7 2900
cfn=(14) ibpoll_pmd_sim::fabric::deliver
calls=20 3
7 100

fl=(5) /work/main/crates/ctrl/src/controller.rs
fn=(15) ibpoll_ctrl::controller::Controller::tx_flush
3 50
cfn=(12)
calls=1 7
3 200

fn=(13)
9 2250
cfn=(15)
calls=1 3
9 250

totals: 10000
";

    #[test]
    fn call_costs_resolve_compressed_names_and_sum_by_caller() {
        let c = call_costs(FWD_THREAD);
        let get = |caller: &str, callee: &str| {
            c.get(&(caller.to_string(), callee.to_string()))
                .map_or(0, |c| c.ir)
        };
        let run = "ibpoll::lcore::DataLcore<A>::run";
        assert_eq!(get(run, NIC_FNS[0]), 1500, "two calls sites, one total");
        assert_eq!(get(run, NIC_FNS[1]), 3000);
        assert_eq!(get(run, CTL_FN), 2500);
        assert_eq!(
            get("ibpoll_ctrl::controller::Controller::tx_flush", NIC_FNS[1]),
            200
        );
        assert_eq!(get(NIC_FNS[1], "ibpoll_pmd_sim::fabric::deliver"), 100);
        let count = |caller: &str, callee: &str| c[&(caller.to_string(), callee.to_string())].count;
        assert_eq!(count(run, NIC_FNS[0]), 50, "40 + 10 calls");
        assert_eq!(count(run, CTL_FN), 50);
    }

    #[test]
    fn nic_and_controller_split_without_counting_twice() {
        let t = parse_callgrind("cg-03", FWD_THREAD).expect("a thread");
        assert_eq!((t.thread, t.ir, t.role), (3, 10_000, Role::Forwarder));
        // The controller's own send (200 in tx_burst under tx_flush) stays with the
        // controller: NIC = 1500 + 3000, controller = 2500, the rest 3000.
        assert_eq!((t.nic_ir, t.ctl_ir, t.ctl_calls), (4500, 2500, 50));
        let r = RoleIr::of(&[t], Role::Forwarder).expect("the forwarder");
        assert_eq!(r.rest(), 3000);
    }

    #[test]
    fn call_costs_read_the_ir_column_with_two_positions_and_events() {
        let text = "positions: instr line\nevents: Dr Ir\nfn=(1) a\ncfn=(2) b\ncalls=1 0x10 3\n0x20 4 7 90\n";
        let c = call_costs(text);
        assert_eq!(
            c[&("a".to_string(), "b".to_string())],
            Calls { count: 1, ir: 90 }
        );
    }

    #[test]
    fn thread_files_match_the_prefix_exactly() {
        assert!(is_cg_file("callgrind.fwd.1-01", "callgrind.fwd.1"));
        assert!(is_cg_file("callgrind.fwd.1", "callgrind.fwd.1"));
        assert!(!is_cg_file("callgrind.fwd.10-01", "callgrind.fwd.1"));
        assert!(!is_cg_file("callgrind.fwd.1-01.txt", "callgrind.fwd.1"));
        assert!(!is_cg_file("callgrind.fwd.1-", "callgrind.fwd.1"));
    }

    fn thread(thread: u64, role: Role, ir: u64, nic_ir: u64, ctl_ir: u64) -> CgThread {
        CgThread {
            file: format!("cg-{thread:02}"),
            thread,
            ir,
            role,
            nic_ir,
            ctl_ir,
            // One loop iteration per 50 Ir of controller.
            ctl_calls: ctl_ir / 50,
        }
    }

    fn cg_run(count: u64, tx: u64, rx: u64, reached: bool, threads: Vec<CgThread>) -> CgRun {
        let run = Run {
            bench: "callgrind".into(),
            case: "fwd".into(),
            size: 64,
            burst: 32,
            rep: 1,
            result: json!({
                "count": count, "count_reached": reached, "tx_packets": tx,
                "rx_packets": rx, "drops": {"fabric.no_receive_posted": tx - rx},
            }),
            cdf: None,
            callgrind: Some(format!("callgrind.fwd.{count}")),
        };
        CgRun::new(&run, threads)
    }

    /// Set-up costs 1,000,000 on every thread in both runs; per packet the generator
    /// costs 300 (100 of it NIC), the forwarder 500 (200 NIC, 50 controller), the sink
    /// 250 (80 NIC).
    fn pair() -> (CgRun, CgRun) {
        let mk = |n: u64| {
            vec![
                thread(1, Role::Main, 2_000_000, 0, 0),
                thread(2, Role::Sink, 1_000_000 + 250 * n, 80 * n, 0),
                thread(3, Role::Forwarder, 1_000_000 + 500 * n, 200 * n, 50 * n),
                thread(4, Role::Generator, 1_000_000 + 300 * n, 100 * n, 0),
            ]
        };
        // 1 priming packet on top of the count; no drops.
        (
            cg_run(1000, 1001, 1001, true, mk(1001)),
            cg_run(2000, 2001, 2001, true, mk(2001)),
        )
    }

    #[test]
    fn marginal_removes_set_up_exactly() {
        let (a, b) = pair();
        let m = marginal(&a, &b);
        assert_eq!(m["valid"], true, "{m}");
        assert_eq!(m["counts"], json!([1000, 2000]));
        let f = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} in {m}"));
        assert_eq!(f("tx_ir_per_packet"), 300.0);
        assert_eq!(f("tx_ir_per_packet_excl_nic"), 200.0);
        assert_eq!(f("rx_ir_per_packet"), 250.0);
        assert_eq!(f("fwd_core_ir_per_packet"), 500.0);
        assert_eq!(f("fwd_core_nic_ir_per_packet"), 200.0);
        assert_eq!(f("fwd_core_ctl_ir_per_packet"), 50.0);
        assert_eq!(f("fwd_core_rest_ir_per_packet"), 250.0);
        assert_eq!(f("fwd_core_ir_per_packet_excl_nic"), 300.0);
        assert_eq!(f("fwd_core_loop_iterations_per_packet"), 1.0);
        assert_eq!(f("path_ir_per_packet"), 1050.0);
        assert_eq!(f("ir_per_tx_packet"), 1050.0);
        // The order of the runs does not matter.
        assert_eq!(marginal(&b, &a), m);
        // A single run carries set-up: far above the marginal figure.
        let single = single_run(&a);
        assert!(single["fwd_core_ir_per_packet"].as_f64().unwrap() > 1000.0);
    }

    #[test]
    fn marginal_divides_the_forwarder_by_packets_received() {
        // The second run lost 500 packets before the forwarder: the generator's
        // divisor is what it sent, the forwarder's and the sink's what arrived.
        let mk = |sent: u64, arrived: u64| {
            vec![
                thread(2, Role::Sink, 10 * arrived, 0, 0),
                thread(3, Role::Forwarder, 20 * arrived, 0, 0),
                thread(4, Role::Generator, 30 * sent, 0, 0),
            ]
        };
        let a = cg_run(1000, 1000, 1000, true, mk(1000, 1000));
        let b = cg_run(2000, 2000, 1500, true, mk(2000, 1500));
        let m = marginal(&a, &b);
        assert_eq!(m["tx_ir_per_packet"].as_f64(), Some(30.0));
        assert_eq!(m["fwd_core_ir_per_packet"].as_f64(), Some(20.0));
        assert_eq!(m["rx_ir_per_packet"].as_f64(), Some(10.0));
    }

    #[test]
    fn marginal_is_not_valid_when_a_count_was_not_reached() {
        let (a, b) = pair();
        let short = cg_run(2000, 1500, 1500, false, b.threads.clone());
        let m = marginal(&a, &short);
        assert_eq!(m["valid"], false);
        assert!(m["note"].as_str().unwrap().contains("--count"), "{m}");
        assert!(m["fwd_core_ir_per_packet"].is_null(), "{m}");
        let same = marginal(&a, &a.clone());
        assert_eq!(same["valid"], false);
    }

    #[test]
    fn a_case_reports_every_run_and_the_marginal() {
        let (a, b) = pair();
        let v = case_instructions(&[b, a]);
        assert_eq!(v["count"], 2000, "the top level is the larger run: {v}");
        let runs = v["runs"].as_array().expect("runs");
        assert_eq!(
            (runs[0]["count"].clone(), runs[1]["count"].clone()),
            (json!(1000), json!(2000))
        );
        assert_eq!(
            v["marginal"]["fwd_core_ir_per_packet"].as_f64(),
            Some(500.0)
        );
        let one = case_instructions(&[pair().0]);
        assert!(one["marginal"].is_null());
        assert_eq!(one["fwd_core_nic_ir"], 200 * 1001);
    }
}
