//! The bench report as a text table.

use super::*;

/// The report as a text table.
pub fn format_report(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}; packed AVX-512 GEMM {}; {} round{} ({}); load average before {} / after {}",
        r.machine,
        if r.packed_gemm { "on" } else { "off (gemm crate only)" },
        r.rounds,
        if r.rounds == 1 { "" } else { "s" },
        r.round_order.join(" | "),
        r.loadavg_before,
        r.loadavg_after
    );
    let _ = writeln!(
        s,
        "precision: teacher {}{}{}",
        r.precision,
        r.approx_precision.map_or(String::new(), |a| format!(", ApproxNet {a}")),
        if r.precision.is_int8() || r.approx_precision.is_some_and(crate::model::Precision::is_int8) {
            format!(" (int8 kernels: {})", crate::precision_eval::int8_kernels_here())
        } else {
            String::new()
        }
    );
    // the mode column as wide as the longest mode name (in chars: "θ0" is one), at least 18
    let mw = r.rows.iter().map(|x| x.mode.chars().count()).max().unwrap_or(0).max(18);
    let _ = writeln!(s, "ex/s: median over rounds (min-max); xdense, xpeer: medians of the per-round ratios; dense = every row of every layer; stage times in ms per example");
    let _ = writeln!(
        s,
        "{:<9} {:>3} {:<mw$} {:>8} {:>17} {:>8} {:>8} {:>6} {:>7} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7} {:>6} {:>16}",
        "work",
        "b",
        "mode",
        "ex/s",
        "(min-max)",
        "p50 ms",
        "p90 ms",
        "ret",
        "GFLOP",
        "GFLOP/s",
        "tok",
        "approx",
        "plan",
        "exec",
        "head",
        "xdense",
        "xpeer (range)"
    );
    for row in &r.rows {
        let peer = match (row.vs_peer, row.vs_peer_range) {
            (Some(v), Some((lo, hi))) => format!("{v:.2} ({lo:.2}-{hi:.2})"),
            _ => "-".into(),
        };
        let _ = writeln!(
            s,
            "{:<9} {:>3} {:<mw$} {:>8.1} {:>17} {:>8.2} {:>8.2} {:>6.3} {:>7.3} {:>7.1} {:>6.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>6.2} {:>16}",
            row.workload,
            row.batch,
            row.mode,
            row.examples_per_s,
            format!("({:.1}-{:.1})", row.examples_per_s_min, row.examples_per_s_max),
            row.p50_ms,
            row.p90_ms,
            row.retention,
            row.gflops_per_example,
            row.exec_gflops_per_s,
            row.stage_ms.tokenize,
            row.stage_ms.approx,
            row.stage_ms.planning,
            row.stage_ms.executor,
            row.stage_ms.head,
            row.vs_dense,
            peer
        );
    }
    let _ = writeln!(s, "executor stages, ms per example (rest: plan bookkeeping, scatter, allocation):");
    let _ = writeln!(
        s,
        "{:<9} {:>3} {:<mw$} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7}",
        "work", "b", "mode", "exec", "embed", "gather", "qkv", "attention", "attnout", "ffn", "rest"
    );
    for row in &r.rows {
        let e = row.stage_ms.executor_stages.as_array();
        let rest = row.stage_ms.executor - e.iter().sum::<f64>();
        let _ = writeln!(
            s,
            "{:<9} {:>3} {:<mw$} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>9.3} {:>7.3} {:>7.3} {:>7.3}",
            row.workload, row.batch, row.mode, row.stage_ms.executor, e[0], e[1], e[2], e[3], e[4], e[5], rest
        );
    }
    if !r.peer.is_empty() {
        let _ = writeln!(
            s,
            "peer {} (ONNX Runtime dense{}) ex/s, median over rounds (min-max):",
            r.peer_name.as_deref().unwrap_or("?"),
            if r.peer_name.as_deref() == Some("ort-int8") { ", dynamic int8" } else { ", fp32" }
        );
        for p in &r.peer {
            let _ = writeln!(
                s,
                "  {:<9} b{:<3} {:<14} {:>8.1} ({:.1}-{:.1})",
                p.workload, p.batch, p.peer_workload, p.examples_per_s, p.examples_per_s_min, p.examples_per_s_max
            );
        }
        let _ = writeln!(s, "  rt b32 pairs: rt (in order, our unpadded packing) vs b_b32 (in order, padded to the batch's longest); rt-sorted vs c_b32_sorted (both length-sorted)");
    }
    if let Some(n) = &r.peer_note {
        let _ = writeln!(s, "{n}");
    }
    if !r.memory.is_empty() {
        let _ = writeln!(s, "peak RSS, batch 32 x length 256 (VmHWM; added = peak - RSS before):");
        for m in &r.memory {
            let _ = writeln!(s, "  {:<18} peak {:>8.1} MiB  added {:>8.1} MiB", m.mode, m.peak_rss_mib, m.added_mib);
        }
    }
    s
}
