//! The native LTP step (src/train/native/ltp.rs; ALGORITHM.md section 6) against burn's
//! `train::ltp::ltp_forward` + the loss of `train_ltp`, autodiff through the masks: the loss, the
//! masks, every parameter's gradient and dL/dθ within 1e-4 relative on tiny random configs and
//! 1e-3 on all-MiniLM-L6-v2 with a real Rotten Tomatoes batch, soft and hard (straight-through)
//! phase, for both `LtpScore`s.

mod common;

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{norm, random_batch, rel_err};
use sttabt::planners::ltp::LtpScore;
use sttabt::train::finetune::{cross_entropy, scalar, with_new_head, LabeledInput};
use sttabt::train::ltp::{ltp_forward, LtpTrain};
use sttabt::train::model::{to_vec, Batch, TrainBert};
use sttabt::train::native::ltp::{ltp_backward, ltp_forward_native, LtpStep};
use sttabt::train::native::params::train_bert_grads;
use sttabt::train::native::{batch_of, NativeBert, PackedBatch};
use sttabt::{EncodedInput, Encoder};

/// A tiny random BERT of `layers` layers with a classifier ([`common::tiny_classifier`]).
fn tiny_model(layers: usize, heads: usize, labels: usize, pooler: bool, seed: u64) -> Encoder {
    common::tiny_classifier(layers, heads, 8, 16 * heads, labels, pooler, seed)
}

/// burn's reference: loss, running masks (packed `[N]` each), parameter gradients and dL/dθ
/// (`None` when θ got no gradient), exactly as `train_ltp` computes them (θ = φ, scale 1).
#[allow(clippy::type_complexity)]
fn burn_run(
    model: &Encoder,
    data: &[LabeledInput],
    theta: &[f32],
    step: &LtpStep,
    pb: &PackedBatch,
) -> (f64, Vec<Vec<f32>>, Vec<(String, Vec<f32>)>, Option<Vec<f32>>) {
    let device = Device::flex().autodiff();
    let c = &model.config;
    let lt = LtpTrain {
        teacher: TrainBert::from_native(model, &device),
        phi: Param::from_tensor(Tensor::from_data(TensorData::new(theta.to_vec(), [theta.len()]), &device)),
    };
    let refs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
    let batch = Batch::from_inputs(&refs, &device);
    let [b, t] = batch.dims();
    let labels: Vec<i64> = data.iter().map(|x| x.label as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &device);
    let mut th = lt.phi.val().mul_scalar(1.0);
    if step.hard {
        th = th.detach();
    }
    let (cls, masks) = ltp_forward(&lt, c, &batch, th, (step.temperature, step.score), step.hard);
    let task = cross_entropy(lt.teacher.logits(c, cls).expect("classifier"), targets);
    let n = batch.valid.clone().sum_dim(1);
    let mut l1: Option<Tensor<1>> = None;
    for m in &masks {
        let v = (m.clone().sum_dim(1) / n.clone()).mean().reshape([1]);
        l1 = Some(match l1 {
            Some(x) => x + v,
            None => v,
        });
    }
    let l1 = l1.expect("L >= 2").div_scalar(masks.len() as f64);
    let loss = task + l1.mul_scalar(step.lambda);
    let lv = scalar(&loss);
    let packed: Vec<Vec<f32>> = masks
        .iter()
        .map(|m| {
            let v = to_vec(m.clone());
            let mut out = vec![0.0f32; pb.rows()];
            for e in 0..b {
                for j in 0..pb.lengths[e] {
                    out[pb.offsets[e] + j] = v[e * t + j];
                }
            }
            out
        })
        .collect();
    let grads = loss.backward();
    let dtheta = lt.phi.val().grad(&grads).map(to_vec);
    (lv, packed, train_bert_grads(&lt.teacher, &grads), dtheta)
}

/// Native and burn agree on the loss (1e-5), the running masks (1e-5 abs), every parameter
/// gradient and dL/dθ (`tol`); the masks are neither all kept nor all pruned.
fn check(model: &Encoder, data: &[LabeledInput], theta: &[f32], step: LtpStep, tol: f64) {
    let native = NativeBert::from_model(model).expect("native params");
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let pb = batch_of(&native, &refs).expect("batch");
    let layers = model.layers.len();
    let (lb, mb, gb, dtb) = burn_run(model, data, theta, &step, &pb);
    let (fw, cache, loss) = ltp_forward_native(&native, &pb, theta, &step).expect("LTP forward");
    let mut gn = native.zeros_like();
    let dtn = sttabt::kernels::in_pool(|| ltp_backward(&native, &pb, &fw, &cache, &step, &mut gn));
    assert!((loss.loss - lb).abs() <= 1e-5 * lb.abs().max(1.0), "loss: native {} vs burn {lb}", loss.loss);
    let tm = fw.masks.as_ref().expect("masks");
    assert_eq!(tm.m.len(), layers + 1);
    assert!(tm.m[0].iter().chain(&tm.m[layers]).all(|&v| v == 1.0), "m^1 and m^(L+1) are ones");
    assert_eq!(mb.len(), layers - 1);
    let (mut lo, mut hi) = (0usize, 0usize);
    for (l, b) in mb.iter().enumerate() {
        for (x, y) in tm.m[l + 1].iter().zip(b) {
            assert!((x - y).abs() <= 1e-5, "mask after layer {l}: native {x} vs burn {y}");
            lo += usize::from(*y < 0.5);
            hi += usize::from(*y >= 0.5);
        }
    }
    assert!(lo > 0 && hi > pb.b * (layers - 1), "masks all one way: {lo} pruned, {hi} kept");
    let mut worst = (0.0f64, String::new());
    let largest = gb.iter().map(|(_, g)| norm(g)).fold(0.0, f64::max);
    let mut vanishing = 0usize;
    for ((name, g_n), (_, g_b)) in gn.tensors().iter().zip(&gb) {
        if name.ends_with("attention.self.key.bias") {
            let scale = gb.iter().find(|(n, _)| *n == name.replace(".bias", ".weight")).map(|(_, g)| norm(g)).expect("key weight");
            assert!(norm(g_n) <= 1e-5 * scale && norm(g_b) <= 1e-5 * scale, "{name}: {} / {} vs {scale}", norm(g_n), norm(g_b));
            continue;
        }
        if norm(g_b) <= VANISHING * largest {
            // e.g. the query and key of a layer whose keys are all pruned but CLS: rounding noise
            assert!(norm(g_n) <= VANISHING * largest, "{name}: {} vs burn's vanishing {}", norm(g_n), norm(g_b));
            vanishing += 1;
            continue;
        }
        let e = rel_err(g_n, g_b);
        if e > worst.0 {
            worst = (e, name.clone());
        }
        assert!(e <= tol, "{name}: relative gradient error {e:.3e} > {tol:e}");
    }
    if step.hard {
        assert!(dtb.is_none_or(|g| norm(&g) == 0.0), "burn: θ is frozen in the hard phase");
        assert!(dtn.iter().all(|&v| v == 0.0), "native: θ is frozen in the hard phase: {dtn:?}");
    } else {
        let dtb = dtb.expect("burn's dL/dθ");
        assert!(norm(&dtb) > 0.0, "burn's dL/dθ is zero");
        let e = rel_err(&dtn, &dtb);
        assert!(e <= tol, "dL/dθ: relative error {e:.3e} > {tol:e} (native {dtn:?}, burn {dtb:?})");
        if e > worst.0 {
            worst = (e, "theta".into());
        }
    }
    assert!(vanishing <= 3 * layers, "{vanishing} vanishing gradients");
    eprintln!(
        "{step:?}: loss {:.6} (burn {lb:.6}); {lo} pruned / {hi} kept; {vanishing} vanishing; worst {:.2e} at {}",
        loss.loss, worst.0, worst.1
    );
}

/// A parameter gradient below this fraction of the largest one is rounding noise on both sides
/// (compared in absolute terms).
const VANISHING: f64 = 1e-6;

fn steps(score: LtpScore, temperature: f64) -> [LtpStep; 2] {
    [false, true].map(|hard| LtpStep { temperature, score, lambda: 0.7, hard })
}

#[test]
fn tiny_configs_ltp_gradients_match_burn() {
    for (i, &(layers, heads, labels, pooler)) in [(3usize, 2usize, 2usize, true), (2, 3, 3, false), (4, 4, 2, true)].iter().enumerate() {
        let model = tiny_model(layers, heads, labels, pooler, 50 + i as u64);
        let data = random_batch(&[5, 3, 9, 1, 7], 40, labels, 300 + i as u64);
        let ls: Vec<f32> = (0..layers - 1).map(|l| 0.9 + 0.1 * l as f32).collect();
        for s in steps(LtpScore::LengthScaled, 0.25) {
            check(&model, &data, &ls, s, 1e-4);
        }
        let mr: Vec<f32> = (0..layers - 1).map(|l| 0.17 + 0.01 * l as f32).collect();
        for s in steps(LtpScore::MeanReceived, 0.05) {
            check(&model, &data, &mr, s, 1e-4);
        }
    }
}

#[test]
fn minilm_rotten_tomatoes_ltp_gradients_match_burn() {
    let rt = sttabt::data::rt::load_rotten_tomatoes(&common::rotten_tomatoes_path(), 0).expect("Rotten Tomatoes");
    let tok = sttabt::text::tokenizer::TextTokenizer::from_dir(&common::minilm_dir(), 128).expect("tokenizer");
    let (train, _) = sttabt::pipeline::tokenize(&tok, &rt.train, Some(6)).expect("tokenise");
    let model = with_new_head(common::minilm().clone(), vec!["negative".into(), "positive".into()], 0);
    for s in steps(LtpScore::LengthScaled, 0.25) {
        check(&model, &train, &[0.5; 5], s, 1e-3);
    }
    for s in steps(LtpScore::MeanReceived, 0.01) {
        check(&model, &train, &[0.03; 5], s, 1e-3);
    }
}

#[test]
fn bad_thresholds_are_clear_errors() {
    let model = tiny_model(3, 2, 2, false, 4);
    let native = NativeBert::from_model(&model).expect("native params");
    let data = random_batch(&[3, 2], 40, 2, 5);
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let pb = batch_of(&native, &refs).expect("batch");
    let step = LtpStep { temperature: 0.25, score: LtpScore::LengthScaled, lambda: 1.0, hard: false };
    let err = ltp_forward_native(&native, &pb, &[1.0; 3], &step).expect_err("3 thresholds for 3 layers").to_string();
    assert!(err.contains("3 LTP thresholds") && err.contains("L - 1"), "{err}");
}

/// Whole runs: burn's `train_ltp` and `train_ltp_native` on the same tiny teacher and data (12
/// steps, the last 4 hard, so θ moves and then freezes) end with the same thresholds, retention
/// windows and teacher weights (all but the key biases, whose gradient is rounding noise) up to
/// float rounding.
#[test]
fn native_ltp_run_equals_burn_run() {
    use sttabt::train::ltp::{train_ltp, LtpConfig};
    use sttabt::train::native::ltp::train_ltp_native;
    let model = tiny_model(3, 2, 2, true, 77);
    let data = random_batch(&[5, 3, 9, 4, 7, 6, 2, 8, 5, 6], 40, 2, 78);
    let cfg =
        LtpConfig { steps: 12, batch_size: 4, lr: 1e-3, theta_lr: 0.05, hard_frac: 0.34, checkpoint_every: 100, ..Default::default() };
    let (a, b) = (common::TempDir::new("ltp-burn"), common::TempDir::new("ltp-native"));
    let quiet = sttabt::train::Progress { quiet: true };
    let rb = train_ltp(&model, &data, &cfg, a.path(), false, &quiet).expect("burn LTP run");
    let rn = train_ltp_native(&model, &data, &cfg, b.path(), false, &quiet).expect("native LTP run");
    assert!(rb.theta.iter().all(|t| t.abs() > 1e-3), "θ moved in the soft phase: {:?}", rb.theta);
    for (x, y) in rn.theta.iter().zip(&rb.theta) {
        assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "θ: native {:?} vs burn {:?}", rn.theta, rb.theta);
    }
    assert!((rn.start_retention - rb.start_retention).abs() < 1e-9 && (rn.end_retention - rb.end_retention).abs() < 1e-9);
    let (tb, tn) = (
        Encoder::load(&a.path().join("teacher")).expect("burn teacher"),
        Encoder::load(&b.path().join("teacher")).expect("native teacher"),
    );
    let (wb, wn) = (tb.hf_tensors(), tn.hf_tensors());
    assert_eq!(wb.len(), wn.len());
    let start = model.hf_tensors();
    for (((name, _, x), (_, _, y)), (_, _, s)) in wn.iter().zip(&wb).zip(&start) {
        if name.ends_with("attention.self.key.bias") {
            // its gradient is 0 up to rounding noise, which Adam's normalisation blows up to
            // steps of size lr in either trainer: not comparable
            continue;
        }
        let moved: Vec<f32> = y.iter().zip(s).map(|(a, b)| a - b).collect();
        let diff: Vec<f32> = x.iter().zip(y).map(|(a, b)| a - b).collect();
        assert!(
            norm(&diff) <= 1e-3 * norm(&moved).max(1e-6),
            "{name}: native - burn {:.3e} vs the update {:.3e}",
            norm(&diff),
            norm(&moved)
        );
    }
    let jn: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(b.path().join("ltp.json")).expect("ltp.json")).expect("json");
    assert_eq!(jn["trainer"], "native");
    assert_eq!(jn["config"]["steps"], 12);
}
