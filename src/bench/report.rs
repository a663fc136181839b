//! The bench report as a text table.

use super::*;

/// The report as a text table: a header (machine, rounds, load, precision, the peer's Python),
/// the rows, any [`BenchReport::warnings`] right after them, the executor stages, the peer's
/// figures with notes on what they pair with, and peak memory.
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
        r.int8_kernels.as_ref().map_or(String::new(), |k| format!(" (int8 kernels: {k})"))
    );
    if let (Some(name), Some(py)) = (&r.peer_name, &r.peer_python) {
        let _ = writeln!(s, "peer {name} run by Python {py}");
    }
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
            format!("({:.1}-{:.1}){}", row.examples_per_s_min, row.examples_per_s_max, row.round_spread().mark()),
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
    for w in &r.warnings {
        let _ = writeln!(s, "WARNING: {w}");
    }
    if r.rows.iter().any(|x| x.vs_dense_fp32.is_some()) {
        let _ = writeln!(
            s,
            "vs dense fp32 (every row of every layer, the teacher in fp32, timed in the same rounds: the reference of a bundle's headline speed-up), median of the per-round ratios (min-max):"
        );
        for row in r.rows.iter().filter(|x| x.vs_dense_fp32.is_some()) {
            let (lo, hi) = row.vs_dense_fp32_range.unwrap_or((f64::NAN, f64::NAN));
            let _ = writeln!(
                s,
                "  {:<9} {:>3} {:<mw$} {:>6.2}x ({lo:.2}-{hi:.2})",
                row.workload,
                row.batch,
                row.mode,
                row.vs_dense_fp32.unwrap_or(f64::NAN)
            );
        }
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
                "  {:<9} b{:<3} {:<14} {:>8.1} ({:.1}-{:.1}){}",
                p.workload,
                p.batch,
                p.peer_workload,
                p.examples_per_s,
                p.examples_per_s_min,
                p.examples_per_s_max,
                p.round_spread().mark()
            );
        }
        if r.peer.iter().any(|p| p.batch == 32 && p.workload.starts_with("rt")) {
            let _ = writeln!(s, "  rt b32 pairs: rt (in order, our unpadded packing) vs b_b32 (in order, padded to the batch's longest); rt-sorted vs c_b32_sorted (both length-sorted)");
        }
        if let Some(n) = unpaired_note(r) {
            let _ = writeln!(s, "  {n}");
        }
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

/// When the peer ran but some rows have no peer workload to compare with ([`peer_workload`]),
/// one note saying which and why their `xpeer` is `-`; `None` otherwise.
pub(super) fn unpaired_note(r: &BenchReport) -> Option<String> {
    let mut unpaired: Vec<String> = Vec::new();
    for row in r.rows.iter().filter(|x| peer_workload(&x.workload, x.batch).is_none()) {
        let w = format!("{} b{}", row.workload, row.batch);
        if !unpaired.contains(&w) {
            unpaired.push(w);
        }
    }
    (!r.peer.is_empty() && !unpaired.is_empty()).then(|| {
        format!(
            "xpeer - on {}: the peer times the RT sentences only at batch 1 (a_b1) and 32 (b_b32, c_b32_sorted), and the synthetic lengths at every --batches size (d_Tn_bB)",
            unpaired.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, batch: usize, mode: &str, vs_peer: Option<f64>) -> BenchRow {
        BenchRow {
            workload: workload.into(),
            batch,
            mode: mode.into(),
            examples: 20,
            examples_per_s: 100.0,
            examples_per_s_min: 90.0,
            examples_per_s_max: 110.0,
            examples_per_s_rounds: vec![90.0, 100.0, 110.0],
            p50_ms: 1.0,
            p90_ms: 2.0,
            retention: 1.0,
            gflops_per_example: 0.5,
            exec_gflops_per_s: 100.0,
            stage_ms: Stages::default(),
            vs_dense: 1.0,
            vs_peer,
            vs_peer_range: vs_peer.map(|v| (v, v)),
            peer_workload: peer_workload(workload, batch).filter(|_| vs_peer.is_some()),
            vs_dense_fp32: None,
            vs_dense_fp32_range: None,
        }
    }

    fn peer_row(workload: &str, batch: usize) -> PeerRow {
        PeerRow {
            workload: workload.into(),
            batch,
            peer_workload: peer_workload(workload, batch).unwrap(),
            examples_per_s: 50.0,
            examples_per_s_min: 45.0,
            examples_per_s_max: 55.0,
            examples_per_s_rounds: vec![45.0, 50.0, 55.0],
        }
    }

    fn report(rows: Vec<BenchRow>, peer: Vec<PeerRow>) -> BenchReport {
        BenchReport {
            machine: "test cpu".into(),
            loadavg_before: "0.10 0.10 0.10".into(),
            loadavg_after: "0.20 0.10 0.10".into(),
            rounds: 3,
            round_order: vec!["ours,peer".into(), "peer,ours".into(), "ours,peer".into()],
            threads: 2,
            simd: "avx2".into(),
            packed_gemm: false,
            rows,
            memory: Vec::new(),
            peer_name: Some("ort".into()),
            peer,
            peer_note: None,
            precision: crate::model::Precision::Fp32,
            approx_precision: None,
            int8_kernels: None,
            peer_python: Some("/venv/bin/python".into()),
            warnings: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn rt_rows_without_a_peer_workload_get_one_note_and_no_b32_footer() {
        let r = report(
            vec![
                row("rt", 1, "dense", Some(2.0)),
                row("rt", 8, "dense", None),
                row("rt", 8, "abt k=0.50", None),
                row("rt-sorted", 8, "dense", None),
                row("T64", 8, "dense", Some(1.5)),
            ],
            vec![peer_row("rt", 1), peer_row("T64", 8)],
        );
        let s = format_report(&r);
        assert!(!s.contains("rt b32 pairs"), "{s}");
        let notes: Vec<&str> = s.lines().filter(|l| l.contains("the peer times the RT sentences only at batch 1")).collect();
        assert_eq!(notes.len(), 1, "{s}");
        assert!(notes[0].contains("xpeer - on rt b8, rt-sorted b8:"), "{s}");
        assert!(s.contains("peer ort run by Python /venv/bin/python"), "{s}");
    }

    #[test]
    fn b32_footer_only_with_an_rt_b32_run() {
        let r = report(
            vec![row("rt", 1, "dense", Some(2.0)), row("rt", 32, "dense", Some(1.0)), row("rt-sorted", 32, "dense", Some(1.0))],
            vec![peer_row("rt", 1), peer_row("rt", 32), peer_row("rt-sorted", 32)],
        );
        let s = format_report(&r);
        assert_eq!(s.matches("rt b32 pairs").count(), 1, "{s}");
        assert!(!s.contains("xpeer - on"), "{s}");
        // batch 1 only: no b32 footer, no note
        let r = report(vec![row("rt", 1, "dense", Some(2.0))], vec![peer_row("rt", 1)]);
        let s = format_report(&r);
        assert!(!s.contains("rt b32 pairs") && !s.contains("xpeer - on"), "{s}");
        // no peer: no note even for unpaired rows
        let mut r = report(vec![row("rt", 8, "dense", None)], Vec::new());
        r.peer_name = None;
        r.peer_python = None;
        let s = format_report(&r);
        assert!(!s.contains("xpeer - on") && !s.contains("run by Python"), "{s}");
    }

    #[test]
    fn warnings_follow_the_table_and_int8_kernels_come_from_the_report() {
        let mut r = report(vec![row("rt", 1, "dense", None)], Vec::new());
        r.warnings = vec!["the machine was busy (...)".into()];
        r.precision = crate::model::Precision::Int8;
        r.int8_kernels = Some("avx512-vnni".into());
        let s = format_report(&r);
        let lines: Vec<&str> = s.lines().collect();
        let w = lines.iter().position(|l| *l == "WARNING: the machine was busy (...)").expect("warning line");
        assert!(lines[w - 1].starts_with("rt "), "the warning follows the table:\n{s}");
        assert!(lines[w + 1].starts_with("executor stages"), "{s}");
        assert!(lines[1].contains("teacher int8 (int8 kernels: avx512-vnni)"), "{s}");
        r.warnings.clear();
        assert!(!format_report(&r).contains("WARNING"));
    }

    #[test]
    fn rows_whose_rounds_disagree_are_marked() {
        let mut wide = row("rt", 1, "abt k=0.50", None);
        (wide.examples_per_s_min, wide.examples_per_s_max, wide.examples_per_s_rounds) = (50.0, 110.0, vec![50.0, 100.0, 110.0]);
        let mut peer = peer_row("rt", 1);
        (peer.examples_per_s_min, peer.examples_per_s_rounds) = (20.0, vec![20.0, 50.0, 55.0]);
        let s = format_report(&report(vec![row("rt", 1, "dense", None), wide], vec![peer]));
        assert!(s.contains("(90.0-110.0) "), "a 20% spread is not marked:\n{s}");
        assert!(s.contains(&format!("(50.0-110.0){SPREAD_MARK}")), "{s}");
        assert!(s.contains(&format!("(20.0-55.0){SPREAD_MARK}")), "the peer's rows are marked too:\n{s}");
    }
}
