//! The native trainer's CLS-only last layer (`forward_cls_last`, issue 15): for losses that read
//! only the logits, computing the last layer for the CLS rows alone gives the same logits, loss
//! and gradients as the full last layer (within 1e-5 relative per tensor) on tiny random
//! configs: plain fine-tuning (cross-entropy), a loss given as dL/dlogits, and plan-aware
//! fine-tuning's token masks (with their mask gradients); a same-input rerun is bit for bit the
//! same.

mod common;

use common::{norm, random_batch, rel_err};
use sttabt::train::native::backward::{backward_full, backward_into};
use sttabt::train::native::forward::{forward, forward_cls_last, forward_masked};
use sttabt::train::native::masks::TokenMasks;
use sttabt::train::native::{batch_of, NativeBert, PackedBatch};

/// A tiny random BERT (`layers` layers) with a classifier, and a ragged batch of it.
fn setup(layers: usize, heads: usize, labels: usize, pooler: bool, seed: u64) -> (NativeBert, PackedBatch) {
    let model = common::tiny_classifier(layers, heads, 8, 2 * heads * 8, labels, pooler, seed);
    let native = NativeBert::from_model(&model).expect("native params");
    let data = random_batch(&[5, 3, 9, 1, 7], 40, labels, seed + 1);
    let batch = batch_of(&native, &data.iter().collect::<Vec<_>>()).expect("batch");
    (native, batch)
}

/// Every tensor of `a` within 1e-5 relative of `b` (both gradients of the same loss), and
/// the attention key bias (zero in exact arithmetic) tiny on both sides.
fn assert_grads_close(a: &NativeBert, b: &NativeBert, what: &str) {
    let (ta, tb) = (a.tensors(), b.tensors());
    assert_eq!(ta.len(), tb.len());
    for ((name, ga), (_, gb)) in ta.iter().zip(&tb) {
        if name.ends_with("attention.self.key.bias") {
            let w = tb.iter().find(|(n, _)| *n == name.replace(".bias", ".weight")).map(|(_, g)| norm(g)).expect("key weight");
            assert!(norm(ga) <= 1e-5 * w && norm(gb) <= 1e-5 * w, "{what} {name}: {} / {} vs {w}", norm(ga), norm(gb));
            continue;
        }
        assert!(norm(gb) > 0.0, "{what} {name}: the full pass's gradient is zero (the batch should reach every tensor)");
        let e = rel_err(ga, gb);
        assert!(e <= 1e-5, "{what} {name}: CLS-only vs full last layer, relative {e:.3e}");
    }
}

fn assert_loss_close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-12), "{what}: loss {a} vs {b}");
}

#[test]
fn cls_only_last_layer_equals_the_full_layer_for_cross_entropy() {
    for (i, &(layers, heads, labels, pooler)) in [(2usize, 2usize, 2usize, true), (1, 3, 3, false), (3, 4, 2, true)].iter().enumerate() {
        let (model, batch) = setup(layers, heads, labels, pooler, 40 + 10 * i as u64);
        let (full, cls) = (forward(&model, &batch), forward_cls_last(&model, &batch, None));
        assert!(cls.cls_last && !full.cls_last);
        assert_eq!(cls.hidden.last().map(Vec::len), Some(batch.b * model.config.hidden_size), "the last hidden state holds the CLS rows");
        assert!(rel_err(&cls.cls, &full.cls) <= 1e-6, "CLS rows differ: {}", rel_err(&cls.cls, &full.cls));
        assert!(rel_err(&cls.logits, &full.logits) <= 1e-5, "logits differ");
        assert_loss_close(cls.loss, full.loss, "cross-entropy");
        let (mut g_full, mut g_cls) = (model.zeros_like(), model.zeros_like());
        backward_into(&model, &batch, &full, &mut g_full);
        backward_into(&model, &batch, &cls, &mut g_cls);
        assert_grads_close(&g_cls, &g_full, &format!("config {i}"));
        // deterministic: a second pass on the same input gives the same bits
        let again = forward_cls_last(&model, &batch, None);
        let mut g_again = model.zeros_like();
        backward_into(&model, &batch, &again, &mut g_again);
        assert!(again.loss.to_bits() == cls.loss.to_bits(), "the loss changed between identical passes");
        for ((name, a), (_, b)) in g_again.tensors().iter().zip(g_cls.tensors()) {
            assert!(*a == b, "{name}: two identical CLS-only passes gave different gradients");
        }
    }
}

#[test]
fn cls_only_last_layer_equals_the_full_layer_for_a_logit_loss_and_token_masks() {
    let (model, batch) = setup(2, 2, 3, true, 70);
    let layers = model.layers.len();
    // plan-aware fine-tuning's masks: soft values in (0, 1], CLS kept
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 0.9 + 0.1
    };
    let mut m: Vec<Vec<f32>> = (0..=layers).map(|_| (0..batch.rows()).map(|_| next()).collect()).collect();
    for ml in m.iter_mut() {
        for &r in &batch.offsets[..batch.b] {
            ml[r] = 1.0;
        }
    }
    let masks = TokenMasks::new(m, &batch, layers).expect("masks");
    let full = forward_masked(&model, &batch, Some(&masks));
    let cls = forward_cls_last(&model, &batch, Some(&masks));
    assert!(rel_err(&cls.logits, &full.logits) <= 1e-5, "masked logits differ");
    let dlogits: Vec<f32> = (0..full.logits.len()).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.1).collect();
    for want_mask_grads in [false, true] {
        let (mut g_full, mut g_cls) = (model.zeros_like(), model.zeros_like());
        let dm_full = backward_full(&model, &batch, &full, &mut g_full, Some(&dlogits), want_mask_grads);
        let dm_cls = backward_full(&model, &batch, &cls, &mut g_cls, Some(&dlogits), want_mask_grads);
        assert_grads_close(&g_cls, &g_full, &format!("masked, logit loss, mask grads {want_mask_grads}"));
        assert_eq!(dm_full.is_some(), want_mask_grads);
        if let (Some(a), Some(b)) = (dm_cls, dm_full) {
            assert_eq!(a.len(), b.len());
            for (l, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(norm(y) > 0.0, "dL/dm^{} is zero in the full pass", l + 1);
                assert!(rel_err(x, y) <= 1e-5, "dL/dm^{}: relative {:.3e}", l + 1, rel_err(x, y));
            }
        }
    }
}
