//! The native LTP step (src/train/native/ltp.rs; ALGORITHM.md section 6) against burn's
//! `train::ltp::ltp_forward` + the loss of `train_ltp`, autodiff through the masks: the loss, the
//! masks, every parameter's gradient and dL/dθ within 1e-4 relative on tiny random configs and
//! 1e-3 on all-MiniLM-L6-v2 with a real Rotten Tomatoes batch, soft and hard (straight-through)
//! phase, for both `LtpScore`s; and a float64 finite-difference check of dL/dθ through the LTP
//! masks, the renormalisation of section 4.3 and the L1 term.

mod common;

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{norm, random_batch, rel_err};
use sttabt::planners::ltp::LtpScore;
use sttabt::train::finetune::{cross_entropy, scalar, with_new_head, LabeledInput};
use sttabt::train::ltp::{ltp_forward, LtpTrain};
use sttabt::train::model::{to_vec, Batch, TrainBert};
use sttabt::train::native::ltp::{
    example_layer_mask, example_layer_mask_backward, ltp_backward, ltp_forward_native, LayerMaskOut, LayerMaskState, LtpStep,
};
use sttabt::train::native::masks::{renormalise, renormalise_backward};
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

/// The mask chain of one LTP forward in f64, on fixed softmax probabilities `raw[l]` (packed
/// `[H, n, n]` per example) in place of the encoder's: at each layer `l`, `P̃_l` = `raw[l]`
/// renormalised with the running mask `m[l]` (`m[0]` = 1), and for `l < L-1` the library's
/// [`example_layer_mask`] gives `m[l + 1] = m[l] · factor`. Returns the running masks, each
/// layer's `P̃`, raw copy and denominators, and each layer's LTP state (σ, factor, score, kept).
struct Chain {
    m: Vec<Vec<f64>>,
    pt: Vec<Vec<f64>>,
    raw: Vec<Vec<f64>>,
    denom: Vec<Vec<f64>>,
    sig: Vec<Vec<f64>>,
    factor: Vec<Vec<f64>>,
    score: Vec<Vec<f64>>,
    kept: Vec<Vec<f64>>,
}

fn chain_forward(raw: &[Vec<f64>], lengths: &[usize], heads: usize, theta: &[f64], step: &LtpStep) -> Chain {
    let layers = raw.len();
    let rows: usize = lengths.iter().sum();
    let mut c = Chain {
        m: vec![vec![1.0; rows]],
        pt: vec![],
        raw: vec![],
        denom: vec![],
        sig: vec![],
        factor: vec![],
        score: vec![],
        kept: vec![],
    };
    for (l, rl) in raw.iter().enumerate() {
        let (mut pt, mut rawc, mut den) = (rl.clone(), vec![0.0; rl.len()], vec![0.0; heads * rows]);
        let (mut sig, mut factor, mut score, mut kept) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows], vec![]);
        let (mut r0, mut p0) = (0usize, 0usize);
        for &n in lengths {
            let a = &c.m[l][r0..r0 + n];
            for hh in 0..heads {
                let b = p0 + hh * n * n;
                renormalise(&mut pt[b..b + n * n], a, &mut rawc[b..b + n * n], &mut den[heads * r0 + hh * n..heads * r0 + (hh + 1) * n]);
            }
            if l + 1 < layers {
                let out = LayerMaskOut { sig: &mut sig[r0..r0 + n], factor: &mut factor[r0..r0 + n], score: &mut score[r0..r0 + n] };
                kept.push(example_layer_mask(&pt[p0..p0 + heads * n * n], a, heads, theta[l], step, out));
            }
            r0 += n;
            p0 += heads * n * n;
        }
        if l + 1 < layers {
            let next: Vec<f64> = c.m[l].iter().zip(&factor).map(|(a, f)| a * f).collect();
            c.m.push(next);
        }
        c.pt.push(pt);
        c.raw.push(rawc);
        c.denom.push(den);
        c.sig.push(sig);
        c.factor.push(factor);
        c.score.push(score);
        c.kept.push(kept);
    }
    c.m.push(vec![1.0; rows]);
    c
}

/// `L(θ, P) = Σ_{l=1}^{L-1} <G_l, m[l]> + Σ_l <H_l, P̃_l> + λ mean_l mean_b (Σ_j m[l]_bj / n_b)`:
/// fixed linear stand-ins `G` and `H` for the rest of the network's dependence on the masks and
/// on the renormalised probabilities (the burn comparisons above cover that part), plus the
/// L1 term of the LTP loss.
fn chain_loss(c: &Chain, lengths: &[usize], gm: &[Vec<f64>], gp: &[Vec<f64>], lambda: f64) -> f64 {
    let layers = c.pt.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let lin: f64 = (1..layers).map(|l| dot(&c.m[l], &gm[l])).sum::<f64>() + (0..layers).map(|l| dot(&c.pt[l], &gp[l])).sum::<f64>();
    let mut mean = 0.0;
    for m in &c.m[1..layers] {
        let mut r0 = 0;
        let mut per = 0.0;
        for &n in lengths {
            per += m[r0..r0 + n].iter().sum::<f64>() / n as f64;
            r0 += n;
        }
        mean += per / lengths.len() as f64;
    }
    lin + lambda * mean / (layers - 1) as f64
}

/// The analytic gradients of [`chain_loss`] with the library's backward pieces, in the order
/// the native backward runs them (top layer first; at layer `l` the LTP path, then the
/// renormalisation): dL/dθ `[L - 1]` and dL/d`raw`.
fn chain_backward(
    c: &Chain,
    lengths: &[usize],
    heads: usize,
    gm: &[Vec<f64>],
    gp: &[Vec<f64>],
    step: &LtpStep,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let layers = c.pt.len();
    let mut dm: Vec<Vec<f64>> =
        (0..=layers).map(|l| if (1..layers).contains(&l) { gm[l].clone() } else { vec![0.0; gm[0].len()] }).collect();
    let mut dtheta = vec![0.0; layers - 1];
    let mut draw = vec![Vec::new(); layers];
    let l1 = step.lambda / ((layers - 1) as f64 * lengths.len() as f64);
    for l in (0..layers).rev() {
        let mut dp = gp[l].clone();
        let (lo, hi) = dm.split_at_mut(l + 1);
        let (dm_this, dm_next) = (&mut lo[l], &hi[0]);
        let (mut r0, mut p0) = (0usize, 0usize);
        for (e, &n) in lengths.iter().enumerate() {
            let span = p0..p0 + heads * n * n;
            if l + 1 < layers {
                let rs = r0..r0 + n;
                let fwd = LayerMaskState {
                    sig: &c.sig[l][rs.clone()],
                    factor: &c.factor[l][rs.clone()],
                    score: &c.score[l][rs.clone()],
                    kept: c.kept[l][e],
                };
                let mut extra = vec![0.0; heads * n * n];
                example_layer_mask_backward(
                    &c.pt[l][span.clone()],
                    &c.m[l][rs.clone()],
                    heads,
                    &fwd,
                    step,
                    l1 / n as f64,
                    &dm_next[rs.clone()],
                    &mut dm_this[rs],
                    &mut extra,
                    &mut dtheta[l],
                );
                for (d, x) in dp[span.clone()].iter_mut().zip(&extra) {
                    *d += x;
                }
            }
            for hh in 0..heads {
                let b = p0 + hh * n * n;
                let d0 = heads * r0 + hh * n;
                renormalise_backward(
                    &mut dp[b..b + n * n],
                    &c.pt[l][b..b + n * n],
                    &c.raw[l][b..b + n * n],
                    &c.denom[l][d0..d0 + n],
                    &c.m[l][r0..r0 + n],
                    &mut dm_this[r0..r0 + n],
                );
            }
            r0 += n;
            p0 += heads * n * n;
        }
        draw[l] = dp;
    }
    (dtheta, draw)
}

/// Random softmax rows `[H, n, n]` per layer, packed for `lengths`.
fn random_probs(layers: usize, heads: usize, lengths: &[usize], rng: &mut fastrand::Rng) -> Vec<Vec<f64>> {
    (0..layers)
        .map(|_| {
            let mut v = Vec::new();
            for &n in lengths {
                for _ in 0..heads * n {
                    let row: Vec<f64> = (0..n).map(|_| (rng.f64() * 3.0 - 1.5).exp()).collect();
                    let s: f64 = row.iter().sum();
                    v.extend(row.iter().map(|x| x / s));
                }
            }
            v
        })
        .collect()
}

/// Issue 15 item 3: LTP's analytic dL/dθ (the library's `example_layer_mask_backward` and
/// `renormalise_backward`, run in f64) equals central finite differences of the f64 forward
/// (`example_layer_mask`, `renormalise`) to 1e-3 relative, per layer and as a vector, for both
/// scores, with λ > 0; so does dL/dP along a random direction (the path into the softmax).
#[test]
fn f64_finite_differences_match_ltp_dtheta() {
    let lengths = [5usize, 3, 8, 6];
    let rows: usize = lengths.iter().sum();
    for (case, &(layers, heads, score, temperature)) in
        [(3usize, 2usize, LtpScore::LengthScaled, 0.25), (4, 3, LtpScore::MeanReceived, 0.05), (4, 2, LtpScore::LengthScaled, 0.1)]
            .iter()
            .enumerate()
    {
        let mut rng = fastrand::Rng::with_seed(90 + case as u64);
        let raw = random_probs(layers, heads, &lengths, &mut rng);
        let gm: Vec<Vec<f64>> = (0..=layers).map(|_| (0..rows).map(|_| rng.f64() - 0.5).collect()).collect();
        let gp: Vec<Vec<f64>> = raw.iter().map(|r| r.iter().map(|_| rng.f64() - 0.5).collect()).collect();
        let theta: Vec<f64> = match score {
            LtpScore::LengthScaled => (0..layers - 1).map(|l| 0.9 + 0.05 * l as f64).collect(),
            LtpScore::MeanReceived => (0..layers - 1).map(|l| 0.17 + 0.01 * l as f64).collect(),
        };
        let step = LtpStep { temperature, score, lambda: 0.7, hard: false };
        let c = chain_forward(&raw, &lengths, heads, &theta, &step);
        let pruned = c.m[1..layers].iter().flatten().filter(|&&v| v < 0.5).count();
        let kept = c.m[1..layers].iter().flatten().filter(|&&v| v >= 0.5).count();
        assert!(pruned > 0 && kept > lengths.len() * (layers - 1), "masks all one way: {pruned} pruned, {kept} kept");
        let (dtheta, draw) = chain_backward(&c, &lengths, heads, &gm, &gp, &step);
        let loss = |r: &[Vec<f64>], t: &[f64]| chain_loss(&chain_forward(r, &lengths, heads, t, &step), &lengths, &gm, &gp, step.lambda);
        let h = 1e-6;
        let numeric: Vec<f64> = (0..layers - 1)
            .map(|l| {
                let (mut up, mut dn) = (theta.clone(), theta.clone());
                up[l] += h;
                dn[l] -= h;
                (loss(&raw, &up) - loss(&raw, &dn)) / (2.0 * h)
            })
            .collect();
        let diff: f64 = dtheta.iter().zip(&numeric).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let scale: f64 = numeric.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(scale > 1e-2, "dL/dθ is too small to test: {numeric:?}");
        assert!(diff <= 1e-3 * scale, "dL/dθ: analytic {dtheta:?} vs finite differences {numeric:?}");
        for (l, (a, b)) in dtheta.iter().zip(&numeric).enumerate() {
            assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-2 * scale), "layer {l}: analytic {a} vs numeric {b}");
        }
        // dL/dP along a random direction v: <dL/dP, v> vs (L(P + hv) − L(P − hv)) / 2h
        let v: Vec<Vec<f64>> = raw.iter().map(|r| r.iter().map(|_| rng.f64() - 0.5).collect()).collect();
        let shift = |sign: f64| -> Vec<Vec<f64>> {
            raw.iter().zip(&v).map(|(r, d)| r.iter().zip(d).map(|(a, b)| a + sign * h * b).collect()).collect()
        };
        let num_dir = (loss(&shift(1.0), &theta) - loss(&shift(-1.0), &theta)) / (2.0 * h);
        let ana_dir: f64 = draw.iter().zip(&v).map(|(g, d)| g.iter().zip(d).map(|(a, b)| a * b).sum::<f64>()).sum();
        assert!(num_dir.abs() > 1e-3, "directional derivative too small to test: {num_dir}");
        assert!((ana_dir - num_dir).abs() <= 1e-3 * num_dir.abs(), "dL/dP·v: analytic {ana_dir} vs numeric {num_dir}");
        eprintln!(
            "case {case} ({score:?}): {pruned} pruned / {kept} kept; dL/dθ {dtheta:?} vs {numeric:?}: relative {:.1e}; dL/dP·v {ana_dir:.6e} vs {num_dir:.6e}",
            diff / scale
        );
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
