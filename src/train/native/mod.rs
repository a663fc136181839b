//! A native trainer (issue 15, items 2-3): forward and backward of the BERT encoder with its
//! pooler, classifier and cross-entropy on the crate's own kernels, and AdamW as burn runs it,
//! with burn's [`TrainBert`](crate::train::model::TrainBert) kept as the reference (the gradient
//! tests in `tests/native_grad.rs`, `tests/native_distill.rs`, `tests/native_masks.rs` and
//! `tests/native_ltp.rs` pin the two together).
//!
//! - [`params`]: the parameters as plain buffers, to and from HF-named tensors;
//! - [`forward`]: padded batch, forward pass with the activations the backward needs;
//! - [`backward`]: the gradients (`dX = dY·Wᵀ`, `dW = Xᵀ·dY`, LayerNorm, GELU, softmax attention);
//! - [`optim`]: AdamW with burn's per-tensor clipping and defaults;
//! - [`finetune`]: [`finetune_native`], the fine-tuning loop on these pieces;
//! - [`distill`]: ApproxNet distillation (its losses' gradients injected into the backward pass);
//! - [`checkpoint`]: its resumable checkpoints (weights, AdamW moments, position);
//! - [`driver`]: the training loop of the concrete and LTP jobs (shuffle, schedule, AdamW,
//!   checkpoints, exact resume, progress bar);
//! - [`masks`]: per-layer token masks (ALGORITHM.md section 4.3) in the forward and backward;
//! - [`plan_ft`]: plan-aware fine-tuning (ABT-FT, section 8) on those masks;
//! - [`ltp`]: the LTP step (section 6): masks from each layer's own attention, and their backward;
//! - [`real`]: the float type (`f32` / `f64`) the mask code is generic over;
//! - [`concrete_masks`]: the concrete-mask generator (section 4.1-4.2, 4.5), generic over the float type;
//! - [`concrete`]: concrete-mask training (section 4) on it: teacher, ApproxNet and θ jointly.
//! - [`teacher_cache`]: exact per-example caches of the frozen teacher's targets (distillation,
//!   plan-aware fine-tuning).

pub mod backward;
pub mod batch;
pub mod checkpoint;
pub mod concrete;
pub mod concrete_masks;
pub mod distill;
pub mod driver;
pub mod finetune;
pub mod forward;
pub mod ltp;
pub mod masks;
pub mod optim;
pub mod params;
pub mod plan_ft;
pub mod real;
pub mod teacher_cache;

use std::time::Instant;

use crate::error::ModelError;
use crate::model::{EncodedInput, Encoder};
use crate::train::finetune::LabeledInput;
use crate::train::step_seconds::StageSeconds;

pub use batch::PackedBatch;
pub use finetune::finetune_native;
pub use optim::{AdamW, AdamWSettings};
pub use params::NativeBert;

/// Keep the large per-step buffers of the forward and backward passes (activations, attention
/// probabilities, gradients: up to ~25 MB each, ~0.5 GB per step at length 128) in the
/// allocator's heap once freed, instead of glibc's default of returning every block over its
/// mmap threshold to the kernel: each step would then map them afresh and fault in every
/// page (perf: ~10% of a length-128 step in page faults and zeroing, with the kernel's page-table
/// lock serialising both threads). Sets `M_MMAP_THRESHOLD` to 32 MiB (glibc's largest) and
/// `M_TRIM_THRESHOLD` to 1 GiB, once per process, from the first native forward pass; the
/// process then keeps up to that much freed memory for reuse. No-op on other C libraries.
///
/// It also sets `M_TOP_PAD` to 64 MiB: the steps run on rayon worker threads, whose glibc arenas
/// grow in heaps of up to 64 MiB that glibc unmaps as soon as one is empty (the trim threshold
/// does not guard them; a top pad that large does), so every step faulted its buffers in again:
/// ~98,000 page faults per concrete step at length 128 x 16 (`perf stat`), none with the pad.
/// Alternating runs on a 2-core AMD Zen 4: length-128 steps 1.02-1.22x faster (median per job),
/// RT batches unchanged within the noise; one arena (`M_ARENA_MAX` 1) also ends the faults but
/// slowed RT batches to 0.7-0.9x (`docs/results/train_allocator_ab.txt`).
pub(crate) fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tunables; all three values are in range.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        });
    }
}

/// Mean cross-entropy of `model` on `batch` and its gradient with respect to every parameter
/// (the shapes of `model`), on the rayon pool of the caller. The loss reads only the CLS rows,
/// so the last layer runs for them only ([`forward::forward_cls_last`]).
pub fn loss_and_grads(model: &NativeBert, batch: &PackedBatch) -> (f64, NativeBert) {
    crate::kernels::in_pool(|| {
        let fw = forward::forward_cls_last(model, batch, None);
        let g = backward::backward(model, batch, &fw);
        (fw.loss, g)
    })
}

/// Pack labelled examples into a batch for `model`. Errors: as [`PackedBatch::new`].
pub fn batch_of(model: &NativeBert, data: &[&LabeledInput]) -> Result<PackedBatch, ModelError> {
    let inputs: Vec<&EncodedInput> = data.iter().map(|x| &x.input).collect();
    let labels: Vec<usize> = data.iter().map(|x| x.label).collect();
    PackedBatch::new(&inputs, &labels, &model.config, model.classifier.d_out)
}

/// Time `warmup + reps` native fine-tuning steps of `teacher` on the batch `data` (learning
/// rate 1e-5, weight decay 0.01, clipping 1.0, as the burn rows of
/// [`crate::train::bench`]); returns the measured steps' stage times and the last loss.
///
/// Errors: `teacher` is not a text encoder with a classifier, or bad input.
pub fn bench_steps(teacher: &Encoder, data: &[LabeledInput], warmup: usize, reps: usize) -> anyhow::Result<(Vec<StageSeconds>, f64)> {
    let mut model = NativeBert::from_model(teacher)?;
    let mut optim = AdamW::new(AdamWSettings::burn_defaults(0.01, Some(1.0)), &model);
    let refs: Vec<&LabeledInput> = data.iter().collect();
    let mut stages = Vec::new();
    let mut loss = f64::NAN;
    let mut g = model.zeros_like();
    for rep in 0..warmup + reps {
        let t0 = Instant::now();
        let batch = batch_of(&model, &refs)?;
        let data_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let fw = crate::kernels::in_pool(|| forward::forward_cls_last(&model, &batch, None));
        let fwd_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        crate::kernels::in_pool(|| backward::backward_into(&model, &batch, &fw, &mut g));
        let bwd_s = t2.elapsed().as_secs_f64();
        let t3 = Instant::now();
        crate::kernels::in_pool(|| optim.step(1e-5, &mut model, &mut g));
        let opt_s = t3.elapsed().as_secs_f64();
        loss = fw.loss;
        anyhow::ensure!(loss.is_finite(), "native loss {loss} is not finite");
        if rep >= warmup {
            stages.push(StageSeconds { data: data_s, forward: fwd_s, backward: bwd_s, optimizer: opt_s, teacher: 0.0 });
        }
    }
    Ok((stages, loss))
}
