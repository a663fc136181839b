//! Per-layer keep schedules for ABT (ALGORITHM.md section 8): the schedule's values, plans
//! that nest and keep CLS, equality with the explicit per-layer list, and the dev-set search's
//! choice on a hand-made table.

mod common;

use sttabt::compress::search::{lowest_retention_within, search_schedules, within_budget, DevPoint, ScheduleGrid};
use sttabt::infer::{classify, Mode};
use sttabt::planners::abt::{backtrack, keep_count, AbtConfig, AbtError, AbtForm, KeepSchedule};

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
    }
}

#[test]
fn schedule_values() {
    // k_l = k_min + (1 - k_min) ((L - l)/(L - 1))^γ, L = 6, l = 1..6
    close(&KeepSchedule { k_min: 0.2, gamma: 1.0 }.keeps(6), &[1.0, 0.84, 0.68, 0.52, 0.36, 0.2]);
    close(&KeepSchedule { k_min: 0.2, gamma: 2.0 }.keeps(6), &[1.0, 0.712, 0.488, 0.328, 0.232, 0.2]);
    close(&KeepSchedule { k_min: 0.5, gamma: 0.5 }.keeps(3), &[1.0, 0.5 + 0.5 * 0.5f64.sqrt(), 0.5]);
    // γ = ∞: flat k_min after layer 1; one layer: k_min; k_min = 1: every layer keeps all
    close(&KeepSchedule { k_min: 0.3, gamma: f64::INFINITY }.keeps(4), &[1.0, 0.3, 0.3, 0.3]);
    close(&KeepSchedule { k_min: 0.3, gamma: 2.0 }.keeps(1), &[0.3]);
    close(&KeepSchedule { k_min: 1.0, gamma: 3.0 }.keeps(5), &[1.0; 5]);
    // non-increasing in l, and larger γ never keeps more
    for l in 2..=12 {
        let a = KeepSchedule { k_min: 0.1, gamma: 0.7 }.keeps(l);
        let b = KeepSchedule { k_min: 0.1, gamma: 3.0 }.keeps(l);
        assert!(a.windows(2).all(|w| w[0] >= w[1]), "{a:?}");
        assert!(a.iter().zip(&b).all(|(x, y)| x >= y), "{a:?} vs {b:?}");
    }
    for (k_min, gamma) in [(0.0, 1.0), (1.5, 1.0), (0.2, 0.0), (0.2, -1.0), (f64::NAN, 1.0), (0.2, f64::NAN)] {
        let s = KeepSchedule { k_min, gamma };
        assert!(matches!(s.check(), Err(AbtError::Schedule { .. })), "{s:?} accepted");
    }
    assert_eq!(KeepSchedule { k_min: 0.2, gamma: 1.5 }.label(), "k_min=0.20 γ=1.50");
}

/// Random softmax attention `[L, H, T, T]` (padding keys at 0), deterministic.
fn attention(seed: u64, l: usize, h: usize, t: usize, n: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut a = vec![0.0f32; l * h * t * t];
    for row in a.chunks_mut(t) {
        let e: Vec<f64> = (0..n).map(|_| (4.0 * (rng.f64() - 0.5)).exp()).collect();
        let s: f64 = e.iter().sum();
        for (x, v) in row.iter_mut().zip(&e) {
            *x = (v / s) as f32;
        }
    }
    a
}

#[test]
fn schedule_plans_nest_keep_cls_and_equal_the_explicit_list() {
    for (case, (l, h, t, n)) in [(6, 2, 20, 17), (4, 3, 9, 9), (1, 1, 5, 3), (12, 2, 40, 33)].into_iter().enumerate() {
        let attn = attention(case as u64, l, h, t, n);
        for s in [
            KeepSchedule { k_min: 0.1, gamma: 1.0 },
            KeepSchedule { k_min: 0.25, gamma: 3.0 },
            KeepSchedule { k_min: 0.5, gamma: f64::INFINITY },
        ] {
            let (plan, traces) = backtrack(&attn, l, h, t, n, &AbtConfig::schedule(s)).unwrap();
            let (listed, _) = backtrack(&attn, l, h, t, n, &AbtConfig::topk_per_layer(s.keeps(l))).unwrap();
            assert_eq!(plan, listed, "case {case} {s:?}: schedule vs explicit k list");
            assert_eq!(plan.top(), &[0]);
            for idx in 0..l {
                let i = plan.inputs(idx);
                assert!(i.contains(&0), "case {case}: CLS missing at layer {}", idx + 1);
                assert!(i.iter().all(|&j| j < n), "padding kept");
                assert!(plan.outputs(idx).iter().all(|j| i.contains(j)), "O_l ⊆ I_l");
                if idx + 1 < l {
                    assert_eq!(plan.outputs(idx), plan.inputs(idx + 1), "O_l = I_(l+1)");
                }
                assert_eq!(traces[idx].c, keep_count(s.keep(idx + 1, l), n));
            }
        }
    }
    let bad = AbtConfig { form: AbtForm::Schedule(KeepSchedule { k_min: 0.0, gamma: 1.0 }), ..AbtConfig::topk(0.5) };
    assert!(matches!(backtrack(&attention(9, 2, 1, 4, 4), 2, 1, 4, 4, &bad), Err(AbtError::Schedule { .. })));
}

fn point(label: &str, acc: f64, ret: f64) -> DevPoint {
    DevPoint { mode: Mode::Dense, label: label.into(), dev_accuracy: acc, dev_retention: ret, gflops: 0.0, correct: Vec::new() }
}

#[test]
fn search_picks_the_lowest_retention_within_the_budget() {
    // dense 0.850; budget 1 point -> accuracy >= 0.840
    let table = [
        point("a", 0.852, 0.70),
        point("b", 0.841, 0.45),
        point("c", 0.839, 0.30), // 1.1 points under: out
        point("d", 0.840, 0.45), // exactly 1 point under: in, ties b on retention, lower accuracy
        point("e", 0.845, 0.52),
    ];
    assert_eq!(lowest_retention_within(&table, 0.850, 1.0), Some(1));
    assert_eq!(lowest_retention_within(&table, 0.850, 1.2), Some(2));
    assert_eq!(lowest_retention_within(&table, 0.850, 0.1), Some(0));
    assert_eq!(lowest_retention_within(&table, 0.860, 0.5), None);
    assert!(within_budget(0.840, 0.850, 1.0) && !within_budget(0.8399, 0.850, 1.0));
}

#[test]
fn schedule_search_on_real_sentences() {
    use sttabt::text::tokenizer::TextTokenizer;
    let base = sttabt::Encoder::load(&common::minilm_dir()).unwrap();
    let teacher = sttabt::train::finetune::with_new_head(base, vec!["negative".into(), "positive".into()], 3);
    let approx = sttabt::approx::ApproxNet::new(&teacher, 4, sttabt::approx::ApproxInit::Interpolate, 0).unwrap();
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).unwrap();
    let tok = TextTokenizer::from_dir(&common::minilm_dir(), 128).unwrap();
    let (dev, _) = sttabt::pipeline::tokenize(&tok, &rt.dev, Some(24)).unwrap();
    let grid = ScheduleGrid { k_mins: vec![0.1, 0.4], gammas: vec![1.0, 4.0] };
    let r = search_schedules(&teacher, &approx.model, &dev, &grid, 1.0).unwrap();
    assert_eq!(r.points.len(), 4);
    assert_eq!(r.dense.dev_retention, 1.0);
    for (p, s) in r.points.iter().zip(grid.schedules().unwrap()) {
        assert_eq!(p.mode, Mode::AbtSchedule { k_min: s.k_min, gamma: s.gamma });
        assert!(p.dev_retention < 1.0 && p.dev_retention > s.k_min * 0.5, "{p:?}");
        // the point's numbers are classify's
        let preds = classify(&teacher, Some(&approx.model), &dev.iter().map(|d| d.input.clone()).collect::<Vec<_>>(), &p.mode).unwrap();
        let ret = preds.iter().map(|q| q.retention).sum::<f64>() / dev.len() as f64;
        assert!((ret - p.dev_retention).abs() < 1e-12);
        assert_eq!(p.correct, preds.iter().zip(&dev).map(|(q, d)| q.label == d.label).collect::<Vec<_>>());
    }
    // retention falls with k_min and with γ
    assert!(r.points[1].dev_retention < r.points[0].dev_retention && r.points[3].dev_retention < r.points[2].dev_retention);
    assert!(r.points[0].dev_retention < r.points[2].dev_retention);
    assert_eq!(r.chosen, lowest_retention_within(&r.points, r.dense.dev_accuracy, 1.0));
    if let Some(i) = r.chosen {
        assert!(within_budget(r.points[i].dev_accuracy, r.dense.dev_accuracy, 1.0));
        assert!(matches!(r.best(), Some(s) if Mode::AbtSchedule { k_min: s.k_min, gamma: s.gamma } == r.points[i].mode));
    }
    assert!(search_schedules(&teacher, &approx.model, &dev, &grid, 0.0).is_err());
    assert!(search_schedules(&teacher, &approx.model, &dev, &ScheduleGrid { k_mins: vec![], gammas: vec![1.0] }, 1.0).is_err());
}

#[test]
fn schedule_modes_round_trip_through_json_with_infinite_gamma() {
    for m in [
        Mode::AbtSchedule { k_min: 0.2, gamma: f64::INFINITY },
        Mode::AbtSchedule { k_min: 0.05, gamma: 0.5 },
        Mode::AbtActualSchedule { k_min: 0.3, gamma: 2.0 },
    ] {
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Mode>(&j).unwrap(), m, "{j}");
    }
    assert_eq!(
        serde_json::to_value(Mode::AbtSchedule { k_min: 0.2, gamma: f64::INFINITY }).unwrap(),
        serde_json::json!({"mode": "abt-schedule", "k_min": 0.2, "gamma": "inf"})
    );
    assert!(serde_json::from_str::<Mode>(r#"{"mode": "abt-schedule", "k_min": 0.2, "gamma": "big"}"#).is_err());
    let s = KeepSchedule { k_min: 0.1, gamma: f64::INFINITY };
    assert_eq!(serde_json::from_str::<KeepSchedule>(&serde_json::to_string(&s).unwrap()).unwrap(), s);
}
