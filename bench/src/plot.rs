//! The two plots of `bench-report`, as SVG (plotters' SVG backend writes text as
//! `<text>` elements, so no font is loaded):
//!
//! * throughput against packet size: pktgen direct and fwd against kernel mmsg, one line
//!   per burst, the median with a min-max bar; beside them at 64 bytes, the same run's
//!   DPDK peers (l3fwd, testpmd io), ipoib-fwd on one lcore over the replay PMD and
//!   pktgen direct over the ring PMD, one marker each;
//! * the ping-pong latency CDF: the kernel's full CDF (median per percentile over the
//!   repetitions) against what pktgen reports (its CDF, or p50 / p99 / p99.9 / max).

use std::path::Path;

use plotters::prelude::*;

use crate::peers::figures as peers;
use crate::report::{pktgen_cdf, Report, ReportError};

fn err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |msg| ReportError::Plot {
        path: path.to_path_buf(),
        msg,
    }
}

/// A tick label without float noise (0.7, not 0.7000000000000001).
fn short(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The CDF's vertical axis: "nines", -log10(1 - p/100), so that 90, 99, 99.9 ... are
/// evenly spaced; the maximum (p = 100) sits at [`NINES_MAX`].
const NINES_MAX: f64 = 6.0;

fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        NINES_MAX
    } else {
        (-(1.0 - p / 100.0).log10()).min(NINES_MAX - 0.5)
    }
}

fn nines_label(y: f64) -> String {
    if y >= NINES_MAX - 1e-9 {
        String::from("max")
    } else {
        short(100.0 * (1.0 - 10f64.powf(-y)))
    }
}

/// Colour of one benchmark case.
fn colour(case: &str) -> RGBColor {
    match case {
        "direct" | "pingpong_direct" => RGBColor(0x1f, 0x77, 0xb4),
        "fwd" | "pingpong_fwd" => RGBColor(0x2c, 0xa0, 0x2c),
        "direct_ring" | "pingpong_direct_ring" => RGBColor(0x17, 0xbe, 0xcf),
        "replay_1lcore" => RGBColor(0x94, 0x67, 0xbd),
        "l3fwd" => RGBColor(0xff, 0x7f, 0x0e),
        "testpmd_io" => RGBColor(0x8c, 0x56, 0x4b),
        _ => RGBColor(0xd6, 0x27, 0x28),
    }
}

/// One line of the throughput plot: (size, median, min, max) in Mpps.
type Line = Vec<(f64, f64, f64, f64)>;

/// One line of the CDF plot: label, colour, (latency in us, percentile).
type CdfLine = (String, RGBColor, Vec<(f64, f64)>);

fn throughput_lines(r: &Report) -> Vec<(String, &'static str, u64, Line)> {
    let mut lines = Vec::new();
    for (bench, case, label) in [
        ("pktgen", "direct", "ibpoll direct"),
        ("pktgen", "fwd", "ibpoll fwd"),
        ("kernel", "mmsg", "kernel mmsg"),
    ] {
        let mut bursts: Vec<u64> = r
            .groups
            .keys()
            .filter(|k| k.bench == bench && k.case == case)
            .map(|k| k.burst)
            .collect();
        bursts.sort_unstable();
        bursts.dedup();
        for b in bursts {
            let pts: Line = r
                .groups
                .iter()
                .filter(|(k, _)| k.bench == bench && k.case == case && k.burst == b)
                .filter_map(|(k, g)| {
                    let s = g.stat("rx_pps")?;
                    Some((k.size as f64, s.median / 1e6, s.min / 1e6, s.max / 1e6))
                })
                .collect();
            if !pts.is_empty() {
                let what = if bench == "kernel" { "batch" } else { "burst" };
                lines.push((format!("{label}, {what} {b}"), case, b, pts));
            }
        }
    }
    // The same run's peers and single-lcore figures: one point each (64 bytes).
    for c in peers::THROUGHPUT {
        let Some(g) = peers::group(&r.groups, c) else {
            continue;
        };
        if let Some(s) = g.stat("rx_pps") {
            lines.push((
                format!("{}, burst {}", c.label, g.key.burst),
                c.case,
                PEER_WIDTH,
                vec![(g.key.size as f64, s.median / 1e6, s.min / 1e6, s.max / 1e6)],
            ));
        }
    }
    lines
}

/// The "burst" given to the peers' points: drawn with the widest stroke and the
/// largest markers.
const PEER_WIDTH: u64 = 64;

/// Throughput (received packets per second) against packet size, log-log.
pub fn throughput(r: &Report, path: &Path) -> Result<(), ReportError> {
    let e = err(path);
    let lines = throughput_lines(r);
    let all = lines.iter().flat_map(|l| l.3.iter());
    let (mut y_lo, mut y_hi) = (f64::MAX, f64::MIN);
    let (mut x_lo, mut x_hi) = (f64::MAX, f64::MIN);
    for &(x, _, lo, hi) in all {
        y_lo = y_lo.min(lo.max(1e-6));
        y_hi = y_hi.max(hi);
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
    }
    if lines.is_empty() {
        (x_lo, x_hi, y_lo, y_hi) = (64.0, 2048.0, 0.01, 10.0);
    }
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput against packet size (received packets/s, median, min-max bars; DPDK peers of the same run at 64 B)",
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(
            ((x_lo * 0.8)..(x_hi * 1.25)).log_scale(),
            // Room above the data for the legend (upper right).
            ((y_lo * 0.5)..(y_hi * 40.0)).log_scale(),
        )
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("IP packet size (bytes)")
        .y_desc("Mpps received")
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| short(*y))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (label, case, burst, pts) in &lines {
        let c = colour(case);
        // Thicker lines for larger bursts, so that the bursts of one case stay apart.
        let width = match burst {
            0..=1 => 1,
            2..=8 => 2,
            9..=32 => 3,
            _ => 4,
        };
        chart
            .draw_series(
                LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(width))
                    .point_size(2 + width),
            )
            .map_err(|x| e(x.to_string()))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(width))
            });
        chart
            .draw_series(
                pts.iter()
                    .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], c.stroke_width(1))),
            )
            .map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Ping-pong round-trip CDF: latency (log) against percentile.
pub fn latency_cdf(r: &Report, path: &Path) -> Result<(), ReportError> {
    let e = err(path);
    let mut lines: Vec<CdfLine> = Vec::new();
    if !r.kernel_cdf.is_empty() {
        lines.push((
            String::from("kernel UDP ping-pong (median per percentile)"),
            colour("kernel"),
            r.kernel_cdf
                .iter()
                .map(|&(p, ns)| (ns / 1e3, nines(p)))
                .collect(),
        ));
    }
    for (k, g) in &r.groups {
        if k.bench != "pktgen" || !k.case.starts_with("pingpong") {
            continue;
        }
        // The repetition whose p50 is the median one (or the first).
        let p50 = g.stat("latency_ns.p50").map(|s| s.median);
        let run = g
            .runs
            .iter()
            .find(|run| run.result["latency_ns"]["p50"].as_f64() == p50)
            .or(g.runs.first());
        let Some(run) = run else { continue };
        let cdf = pktgen_cdf(&run.result);
        if cdf.is_empty() {
            continue;
        }
        let sparse = run.result.get("latency_cdf").is_none();
        let topo = k.case.trim_start_matches("pingpong_");
        lines.push((
            format!(
                "ibpoll pktgen --pingpong {topo}{}",
                if sparse {
                    " (p50, p99, p99.9, max only)"
                } else {
                    ""
                }
            ),
            colour(&k.case),
            cdf.iter().map(|&(p, ns)| (ns / 1e3, nines(p))).collect(),
        ));
    }
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for (_, _, pts) in &lines {
        for &(us, _) in pts {
            lo = lo.min(us.max(1e-3));
            hi = hi.max(us);
        }
    }
    if lines.is_empty() {
        (lo, hi) = (0.1, 1000.0);
    }
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Ping-pong round trip, 64-byte packets: CDF",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(((lo * 0.5)..(hi * 2.0)).log_scale(), 0f64..NINES_MAX)
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("round trip (us, log scale)")
        .y_desc("percentile (nines scale)")
        .light_line_style(TRANSPARENT)
        .y_labels(7)
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|y| nines_label(*y))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (label, c, pts) in lines {
        // Markers only where there are few points (pktgen's percentiles).
        let marker = if pts.len() > 20 { 0 } else { 4 };
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)).point_size(marker))
            .map_err(|x| e(x.to_string()))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}
