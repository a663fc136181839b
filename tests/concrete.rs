//! Concrete masking (ALGORITHM.md section 4) on burn: the differentiable masks equal the
//! reference vectors, gradients reach θ and the encoders, a finite-difference check on θ, finite
//! losses at extreme settings, hard-mask dense forward = gathered executor, and training moves the
//! retention toward σ(θ_0).

mod common;
use common::*;

use burn::tensor::{Device, Int, Tensor, TensorData};
use sttabt::approx::{ApproxInit, ApproxNet};
use sttabt::train::concrete::{concrete_loss, concrete_masks, train_concrete, ConcreteConfig, ConcreteTrain};
use sttabt::train::finetune::{scalar, with_new_head, LabeledInput};
use sttabt::train::model::{Batch, TrainBert};
use sttabt::{EncodedInput, RunOptions, TokenPlan};

fn tensor_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// The burn masks equal `concrete_A/B` (ddof 0) within 1e-5, and the hard sets are exact.
#[test]
fn burn_masks_match_reference_vectors() {
    for name in ["concrete_A_L3H2T8n6", "concrete_B_L4H3T10n10"] {
        let c = read_json(reference_dir().join("backtrack").join(format!("{name}.json")));
        let (l, h, t) = (c["L"].as_u64().unwrap() as usize, c["H"].as_u64().unwrap() as usize, c["T"].as_u64().unwrap() as usize);
        let dev = Device::flex();
        let s = f32s(&c["scores"]);
        let scores: Vec<Tensor<4>> = (0..l)
            .map(|li| Tensor::from_data(TensorData::new(s[li * h * t * t..(li + 1) * h * t * t].to_vec(), [1, h, t, t]), &dev))
            .collect();
        let valid: Tensor<2> = Tensor::from_data(TensorData::new(f32s(&c["valid"]), [1, t]), &dev);
        let theta: Tensor<1> = Tensor::from_data(TensorData::new(f32s(&c["theta"]), [l]), &dev);
        let out = concrete_masks(&scores, &valid, theta, false);
        let variant = c["variants"].as_array().unwrap().iter().find(|v| v["std_ddof"] == 0).unwrap();
        let layers = variant["result"]["layers"].as_array().unwrap();
        for (li, rec) in layers.iter().enumerate() {
            let got = tensor_vec(out.masks[li].clone());
            let expect = f32s(&rec["m"]);
            let err = max_abs_diff(&got, &expect);
            assert!(err < 1e-5, "{name} layer {}: m differs by {err}", li + 1);
            let hard: Vec<bool> = got.iter().map(|v| *v >= 0.5).collect();
            let expect_hard: Vec<bool> =
                rec["hard"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap_or(v.as_f64() == Some(1.0))).collect();
            assert_eq!(hard, expect_hard, "{name} layer {} hard mask", li + 1);
        }
        let r = scalar(&out.r);
        let expect_r = variant["result"]["soft_retention_r"].as_f64().unwrap();
        assert!((r - expect_r).abs() < 1e-5, "{name}: r {r} vs {expect_r}");
    }
}

fn tiny_setup(seed: u64) -> (sttabt::Encoder, ApproxNet, Vec<LabeledInput>) {
    let cfg = tiny_config(2, 2, 8, 24, 40, 16);
    let teacher = with_new_head(random_model(&cfg, seed, 0.3), vec!["a".into(), "b".into()], seed);
    let approx = ApproxNet::new(&teacher, 2, ApproxInit::Interpolate, seed).unwrap();
    let mut rng = sttabt::data::split::SplitMix64::new(seed);
    let data = (0..64)
        .map(|_| {
            let n = 3 + rng.next_below(8) as usize;
            let ids: Vec<u32> = (0..n).map(|j| if j == 0 { 1 } else { 2 + rng.next_below((cfg.vocab_size - 2) as u64) as u32 }).collect();
            let label = (ids.iter().skip(1).filter(|&&i| i % 2 == 0).count() * 2 > n - 1) as usize;
            LabeledInput { input: EncodedInput { type_ids: vec![0; n], ids, patches: Vec::new() }, label }
        })
        .collect();
    (teacher, approx, data)
}

fn train_model(teacher: &sttabt::Encoder, approx: &ApproxNet, theta: f32, device: &Device) -> ConcreteTrain {
    ConcreteTrain {
        teacher: TrainBert::from_native(teacher, device),
        approx: TrainBert::from_native(&approx.model, device),
        phi: burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![theta / 10.0; teacher.layers.len()], [teacher.layers.len()]),
            device,
        )),
    }
}

fn batch_of(data: &[LabeledInput], device: &Device) -> (Batch, Tensor<1, Int>) {
    let refs: Vec<&EncodedInput> = data.iter().map(|d| &d.input).collect();
    let labels: Vec<i64> = data.iter().map(|d| d.label as i64).collect();
    (Batch::from_inputs(&refs, device), Tensor::from_data(TensorData::new(labels, [data.len()]), device))
}

/// Every parameter on a path to the loss gets a finite non-zero gradient in soft mode, θ included.
#[test]
fn gradients_reach_theta_and_encoders() {
    let (teacher, approx, data) = tiny_setup(3);
    let device = Device::flex().autodiff();
    let model = train_model(&teacher, &approx, 0.0, &device);
    let (batch, labels) = batch_of(&data[..8], &device);
    let cfg = ConcreteConfig { retention_weight: 1.0, ..Default::default() };
    let (loss, _) = concrete_loss(&model, &teacher.config, &approx.model.config, &batch, labels, &cfg, false, None);
    let grads = loss.backward();
    let check = |name: &str, g: Option<Vec<f32>>| {
        let g = g.unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite gradient");
        assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient");
    };
    check("phi (θ)", model.phi.val().grad(&grads).map(tensor_vec));
    check("teacher word embeddings", model.teacher.word.as_ref().expect("text model").val().grad(&grads).map(tensor_vec));
    check("teacher layer 0 query", model.teacher.layers[0].query.w.val().grad(&grads).map(tensor_vec));
    check("teacher last out_ln gamma", model.teacher.layers[1].out_ln.gamma.val().grad(&grads).map(tensor_vec));
    check("teacher classifier", model.teacher.classifier.as_ref().unwrap().w.val().grad(&grads).map(tensor_vec));
    // ApproxNet parameters that feed its pre-softmax scores
    check("approx layer 1 key", model.approx.layers[1].key.w.val().grad(&grads).map(tensor_vec));
    check("approx layer 0 ffn_out", model.approx.layers[0].ffn_out.w.val().grad(&grads).map(tensor_vec));
    check("approx word embeddings", model.approx.word.as_ref().expect("text model").val().grad(&grads).map(tensor_vec));
}

/// d loss / d θ_l by central differences equals the autodiff gradient.
#[test]
fn finite_difference_on_theta() {
    let (teacher, approx, data) = tiny_setup(5);
    let cfg = ConcreteConfig { retention_weight: 1.0, ..Default::default() };
    let loss_at = |theta: &[f32], device: &Device| {
        let mut m = train_model(&teacher, &approx, 0.0, device);
        m.phi = burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(theta.iter().map(|t| t / 10.0).collect::<Vec<f32>>(), [theta.len()]),
            device,
        ));
        let (batch, labels) = batch_of(&data[..6], device);
        (concrete_loss(&m, &teacher.config, &approx.model.config, &batch, labels, &cfg, false, None).0, m)
    };
    let base = [0.3f32, -0.4];
    let device = Device::flex().autodiff();
    let (loss, m) = loss_at(&base, &device);
    let g_phi = tensor_vec(m.phi.val().grad(&loss.backward()).unwrap());
    let plain = Device::flex();
    for l in 0..2 {
        let h = 1e-2f32;
        let mut up = base;
        up[l] += h;
        let mut down = base;
        down[l] -= h;
        let fd = (scalar(&loss_at(&up, &plain).0) - scalar(&loss_at(&down, &plain).0)) / (2.0 * h as f64);
        let ad = g_phi[l] as f64 / 10.0; // θ = 10 φ
        eprintln!("θ_{}: autodiff {ad:.6e}, finite difference {fd:.6e}", l + 1);
        assert!((ad - fd).abs() <= 2e-2 * ad.abs().max(fd.abs()) + 1e-6, "θ_{}: autodiff {ad} vs finite difference {fd}", l + 1);
    }
}

/// Losses stay finite with a 5% retention target and with one-token sequences, soft and hard.
#[test]
fn finite_losses_at_extremes() {
    let (teacher, approx, mut data) = tiny_setup(7);
    let device = Device::flex().autodiff();
    data.push(LabeledInput { input: EncodedInput { ids: vec![1], type_ids: vec![0], patches: Vec::new() }, label: 0 });
    let theta0 = (0.05f64 / 0.95).ln(); // σ(θ0) = 5%
    let model = train_model(&teacher, &approx, theta0 as f32, &device);
    for hard in [false, true] {
        let (batch, labels) = batch_of(&data[data.len() - 5..], &device);
        let cfg = ConcreteConfig { theta0, ..Default::default() };
        let (loss, parts) = concrete_loss(&model, &teacher.config, &approx.model.config, &batch, labels, &cfg, hard, None);
        assert!(scalar(&loss).is_finite(), "loss not finite (hard = {hard})");
        let g = tensor_vec(model.phi.val().grad(&loss.backward()).unwrap());
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(parts.soft_retention.is_finite() && parts.hard_retention > 0.0);
    }
}

/// With hard masks, the dense soft-mask forward gives the CLS output of the gathered executor.
#[test]
fn hard_mask_forward_equals_gathered_executor() {
    let (teacher, approx, data) = tiny_setup(11);
    let device = Device::flex();
    let model = train_model(&teacher, &approx, -0.5, &device);
    for ex in data.iter().take(6) {
        let (batch, _) = batch_of(std::slice::from_ref(ex), &device);
        let a = model.approx.forward(&approx.model.config, &batch, None);
        let mo = concrete_masks(&a.scores, &batch.valid, model.theta(), true);
        let out = model.teacher.forward(&teacher.config, &batch, Some(&mo.masks));
        let cls_soft = tensor_vec(out.cls());
        let n = ex.input.len();
        let inputs: Vec<Vec<usize>> = mo.masks[..teacher.layers.len()]
            .iter()
            .map(|m| tensor_vec(m.clone()).iter().enumerate().filter(|(j, v)| *j < n && **v >= 0.5).map(|(j, _)| j).collect())
            .collect();
        let plan = TokenPlan::from_inputs(n, inputs, vec![0]).unwrap();
        let gathered = teacher.run(std::slice::from_ref(&ex.input), &[plan], RunOptions::default()).unwrap();
        let err = max_abs_diff(&cls_soft, gathered[0].cls());
        assert!(err < 1e-4, "hard-mask forward vs gathered CLS: {err}");
    }
}

/// Starting from θ_l = 0, training with targets σ(θ_0) for θ_0 in {-2, 0, 2} moves the soft
/// retention toward the target, and the hard retentions end ordered like θ_0.
#[test]
fn training_moves_retention_toward_target() {
    let (teacher, approx, data) = tiny_setup(13);
    let mut ends = Vec::new();
    for theta0 in [-2.0, 0.0, 2.0] {
        let tmp = TempDir::new(&format!("concrete{theta0}"));
        let dir = tmp.path().to_path_buf();
        let cfg = ConcreteConfig {
            theta0,
            theta_init: Some(0.0),
            steps: 40,
            batch_size: 16,
            lr: 3e-3,
            retention_weight: 1.0,
            hard_frac: 0.0,
            ..Default::default()
        };
        let r = train_concrete(&teacher, &approx, &data, &cfg, &dir, false, &sttabt::train::Progress { quiet: true }).unwrap();
        let target = r.target_retention;
        eprintln!(
            "θ0 = {theta0}: target {target:.3}, soft r {:.3} -> {:.3}, hard {:.3} -> {:.3}, θ = {:?}",
            r.start.soft_retention, r.end.soft_retention, r.start.hard_retention, r.end.hard_retention, r.theta
        );
        assert!(
            (r.end.soft_retention - target).abs() < (r.start.soft_retention - target).abs(),
            "θ0 = {theta0}: |r - target| did not shrink"
        );
        ends.push(r.end.hard_retention);
    }
    assert!(ends[0] < ends[1] && ends[1] < ends[2], "hard retentions not ordered like θ0: {ends:?}");
}
