//! Switching an encoder's linear layers between fp32 and int8 ([`Encoder::set_precision`]), and
//! the calibration run that makes int8 accurate on models with outlier channels.
//!
//! Not part of the paper (ALGORITHM.md has no quantisation; issue 17). BERT-family models carry
//! a few residual-stream channels whose LayerNorm outputs reach 10-30 where the rest stay near
//! 1-2 (all-MiniLM-L6-v2: channels 99, 223, 63, 157). Per-row activation quantisation then spends
//! its 255 steps on those few channels, and each int8 linear fed by a LayerNorm loses ~2-4%
//! (relative Frobenius error of its output). SmoothQuant (Xiao et al. 2023) divides those
//! channels by a factor `s` and multiplies the matching weight rows by `s`
//! ([`QuantizedLinear::with_smoothing`](crate::kernels::int8::QuantizedLinear::with_smoothing)),
//! which halves the error of Q, K/V and FFN-in; and the few channels of largest range are
//! computed in f32 beside the int8 product ([`F32_CHANNELS`]). Both need each channel's
//! activation range, which one fp32 pass over a fixed synthetic input gives
//! ([`calibration_inputs`]): the outlier channels are a property of the weights, not of the text
//! (measured: the same top channels, mostly to within ~10% of their range, as on real sentences).
//!
//! Measured on the five MiniLM parity cases (cosine of the pooled embedding, int8 vs fp32, worst
//! case = the 2-token empty text): per-row symmetric activations 0.986, with smoothing 0.9936;
//! asymmetric activations (zero point, `kernels::int8`) 0.9935, with smoothing 0.9964, and with
//! the f32 channels too 0.9991 (the other four cases >= 0.9994).

use super::*;
use crate::model::Precision;
use std::borrow::Cow;

/// Migration strength `α` of the smoothing (SmoothQuant's default; `s_j = a_j^α / w_j^(1−α)`).
pub const SMOOTHING_ALPHA: f32 = 0.5;

/// Lengths of the synthetic calibration sequences (capped at the model's position table).
const CALIBRATION_LENGTHS: [usize; 3] = [16, 48, 128];

/// The fixed calibration inputs of a text encoder: [`CALIBRATION_LENGTHS`] sequences of token ids
/// drawn with a fixed seed from `[min(1000, vocab / 2), vocab)` (past BERT's `[unused]` and
/// special tokens), token type 0. Empty for a vision encoder.
pub fn calibration_inputs(model: &Encoder) -> Vec<EncodedInput> {
    if model.config.vision().is_some() {
        return Vec::new();
    }
    let vocab = model.config.vocab_size as u64;
    let lo = 1000.min(vocab / 2);
    let max_len = model.config.max_position_embeddings.saturating_sub(model.config.position_offset()).max(1);
    // SplitMix64 (Steele et al. 2014), inline: the executor imports nothing of `data`
    let mut state = 0x5eed_ca1bu64;
    let mut next_below = |bound: u64| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    };
    CALIBRATION_LENGTHS
        .iter()
        .map(|&n| {
            let n = n.min(max_len);
            let ids: Vec<u32> = (0..n).map(|_| (lo + next_below(vocab - lo)) as u32).collect();
            EncodedInput { ids, type_ids: vec![0; n], patches: Vec::new() }
        })
        .collect()
}

impl Encoder {
    /// The precision of the encoder layers' linear layers (see [`set_precision`](Self::set_precision)).
    pub fn precision(&self) -> Precision {
        self.layers.first().map(EncoderLayer::precision).unwrap_or_default()
    }

    /// Run every encoder layer's linear layers (Q, fused K/V, attention output, FFN in and out)
    /// at `precision`; attention, LayerNorm, embeddings, pooler and classifier stay f32. The f32
    /// weights are kept (training, [`hf_tensors`](Self::hf_tensors) and a later switch back use
    /// them); switching to the precision the encoder already has changes nothing.
    ///
    /// An int8 precision ([`Precision::Int8`], [`Precision::Int8W7`]) on a text encoder first runs the fp32 model once over
    /// [`calibration_inputs`] (fixed synthetic ids, ~200 tokens) recording each linear layer's
    /// per-channel input range, then quantises each layer once: Q, K/V and FFN-in (fed by
    /// LayerNorms, whose outputs carry the outlier channels) with SmoothQuant smoothing at
    /// [`SMOOTHING_ALPHA`], the attention output and FFN-out without (smoothing measured no
    /// better there), each with its [`F32_CHANNELS`] input channels of largest range in f32.
    /// A vision encoder is quantised without calibration (plain per-channel int8).
    ///
    /// Errors: [`ModelError::Input`] naming the layer when a weight cannot be quantised (NaN or
    /// infinite values), or the calibration run's error; the encoder is then left at its old
    /// precision.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        let old = self.precision();
        if precision == old && self.layers.iter().all(|l| l.precision() == precision) {
            return Ok(());
        }
        let ranges = if precision.is_int8() { self.calibrate()? } else { Vec::new() };
        let mut failed = None;
        'layers: for (l, layer) in self.layers.iter_mut().enumerate() {
            let r = ranges.get(l);
            for (i, lin) in layer.linears_mut().into_iter().enumerate() {
                let res = match (r.and_then(|r| r[i].as_deref()), precision.weight_range()) {
                    (Some(act_max), Some(range)) => {
                        lin.set_int8_calibrated(act_max, SMOOTHED[i].then_some(SMOOTHING_ALPHA), F32_CHANNELS[i], range)
                    }
                    _ => lin.set_precision(precision),
                };
                if let Err(e) = res {
                    failed = Some(ModelError::Input(format!("encoder layer {l}: {e}")));
                    break 'layers;
                }
            }
        }
        let Some(err) = failed else { return Ok(()) };
        // undo: back to fp32 never fails (and the encoder was fp32 unless it was int8 already,
        // in which case nothing was switched)
        for layer in &mut self.layers {
            for lin in layer.linears_mut() {
                lin.set_precision(old)?;
            }
        }
        Err(err)
    }

    /// `self` switched to `precision` (see [`set_precision`](Self::set_precision)).
    pub fn with_precision(mut self, precision: Precision) -> Result<Self, ModelError> {
        self.set_precision(precision)?;
        Ok(self)
    }

    /// `self` at `precision` without a copy where none is needed: borrowed when every encoder
    /// layer already runs at `precision` (where [`set_precision`](Self::set_precision) would
    /// change nothing), else a clone switched to it (the same model as
    /// [`with_precision`](Self::with_precision) on a clone). Errors: as `set_precision`.
    pub fn at_precision(&self, precision: Precision) -> Result<Cow<'_, Encoder>, ModelError> {
        if self.precision() == precision && self.layers.iter().all(|l| l.precision() == precision) {
            return Ok(Cow::Borrowed(self));
        }
        Ok(Cow::Owned(self.clone().with_precision(precision)?))
    }

    /// One fp32 pass over [`calibration_inputs`] recording, per layer, each linear layer's
    /// largest `|x[·, j]|` per input channel (in [`EncoderLayer::linears_mut`] order; `None`
    /// where nothing ran). Empty for a vision encoder.
    fn calibrate(&mut self) -> Result<Vec<[Option<Vec<f32>>; 5]>, ModelError> {
        let inputs = calibration_inputs(self);
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        for layer in &mut self.layers {
            for lin in layer.linears_mut() {
                lin.set_precision(Precision::Fp32)?;
                lin.record_input_ranges(true);
            }
        }
        let run = self.run_dense(&inputs, crate::exec::RunOptions::default());
        let ranges = self.layers.iter_mut().map(|layer| layer.linears_mut().map(|lin| lin.record_input_ranges(false))).collect();
        run?;
        Ok(ranges)
    }
}

/// Which of [`EncoderLayer::linears_mut`] (Q, K/V, attention output, FFN in, FFN out) are
/// smoothed at int8: those fed by a LayerNorm (measured on all-MiniLM-L6-v2: the attention
/// output and FFN-out came out no better or worse smoothed).
const SMOOTHED: [bool; 5] = [true, true, false, true, false];

/// How many input channels of largest calibrated range each of [`EncoderLayer::linears_mut`]
/// computes in f32 beside its int8 product
/// ([`QuantizedLinear::with_f32_channels`](crate::kernels::int8::QuantizedLinear::with_f32_channels)):
/// 4 of 384 (1% of the multiply-adds), 8 of FFN-out's 1536 (0.5%), whose GELU inputs have a
/// channel at 14-25 where the rest stay below ~6.
const F32_CHANNELS: [usize; 5] = [4, 4, 4, 4, 8];
