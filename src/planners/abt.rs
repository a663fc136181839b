//! Attention back-tracking (ABT), ALGORITHM.md section 3, with the choices of
//! `reference/README.md` section 2.3.
//!
//! Starting from the tokens needed at the top (`O_L`, normally `{CLS}`), each layer from `L`
//! down to 1 scores every real token by the (approximate) attention it receives from the
//! current output set, keeps the `c` best (top-k or threshold form) plus the output set itself,
//! and passes normalised scores down as the next layer's importance weights.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::model::{EncodedInput, Encoder};
use crate::plan::{check_set, PlanError, SetKind, TokenPlan};

/// How to reduce over heads (`Ā = mean_h Â` or `max_h Â`) or over the output tokens
/// (`s_j = mean_{i∈O}` or `max_{i∈O}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Reduce {
    /// Arithmetic mean (the paper's default).
    Avg,
    /// Maximum.
    Max,
}

/// How many tokens a layer keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AbtForm {
    /// Keep `c = clamp(ceil(k_l n - 1e-9), 1, n)` tokens. `k` has `L` entries (`k[l-1] = k_l`)
    /// or one entry used for every layer; each in `(0, 1]`.
    TopK {
        /// Keep fractions.
        k: Vec<f64>,
    },
    /// Keep the tokens with `s_j > ratio · max s`, their count clamped to
    /// `[ceil(clamp.0 n), ceil(clamp.1 n)]` (same `- 1e-9` ceil rule). Paper: `ratio = 0.00625`,
    /// `clamp = (0.2, 0.95)`.
    Dynamic {
        /// Threshold relative to the largest score, `>= 0`.
        ratio: f64,
        /// Lower and upper keep fraction, `0 < lo <= hi <= 1`.
        clamp: (f64, f64),
    },
    /// Keep `c = clamp(ceil(k_l n - 1e-9), 1, n)` tokens with `k_l` from a per-layer keep
    /// schedule (ALGORITHM.md section 8; [`KeepSchedule::keep`]).
    Schedule(KeepSchedule),
}

/// A per-layer keep schedule for ABT's top-k form (ALGORITHM.md section 8):
/// `k_l = k_min + (1 - k_min) · ((L - l) / (L - 1))^γ` for layers `l = 1..L`.
///
/// Layer 1 keeps everything (`k_1 = 1`), the last layer keeps `k_min`; `γ` bends the curve
/// between them: `γ = 1` falls linearly, `γ < 1` keeps more in the middle layers, `γ > 1` drops
/// early. `γ = +∞` is the flat schedule `k_l = k_min` on layers 2..L (layer 1 still reads every
/// token); the fully flat schedule (`k_l = k` on every layer) is ABT's plain form
/// ([`AbtConfig::topk`], `--keep K`). One layer (`L = 1`): `k_1 = k_min`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KeepSchedule {
    /// The last layer's keep fraction, in `(0, 1]`.
    pub k_min: f64,
    /// The exponent `γ`, in `(0, +∞]` (JSON: a number, or `"inf"`).
    #[serde(with = "gamma_json")]
    pub gamma: f64,
}

/// Serde for a schedule's `γ`: a JSON number, or the string `"inf"` for `+∞` (JSON has no
/// infinity; serde_json would write `null` and fail to read it back).
pub mod gamma_json {
    use serde::{Deserialize, Deserializer, Serializer};

    /// `+∞` as `"inf"`, anything else as a number.
    pub fn serialize<S: Serializer>(g: &f64, s: S) -> Result<S::Ok, S::Error> {
        if g.is_infinite() && *g > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_f64(*g)
        }
    }

    /// A number, or `"inf"` / `"infinity"` (any case).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum G {
            Num(f64),
            Str(String),
        }
        match G::deserialize(d)? {
            G::Num(x) => Ok(x),
            G::Str(t) if t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("infinity") => Ok(f64::INFINITY),
            G::Str(t) => Err(serde::de::Error::custom(format!("gamma {t:?} is neither a number nor \"inf\""))),
        }
    }
}

impl KeepSchedule {
    /// Check `k_min ∈ (0, 1]` and `γ ∈ (0, +∞]` (not NaN).
    ///
    /// Errors: [`AbtError::Schedule`] naming the bad value.
    pub fn check(&self) -> Result<(), AbtError> {
        if !(self.k_min > 0.0 && self.k_min <= 1.0 && self.gamma > 0.0) {
            return Err(AbtError::Schedule { k_min: self.k_min, gamma: self.gamma });
        }
        Ok(())
    }

    /// `k_l` of layer `layer` (1-based, `1..=layers`), in `[k_min, 1]`, non-increasing in `l`.
    pub fn keep(&self, layer: usize, layers: usize) -> f64 {
        if layers <= 1 {
            return self.k_min;
        }
        let x = (layers.saturating_sub(layer)) as f64 / (layers - 1) as f64;
        // x^∞ = 0 for x < 1 and 1 for x = 1: the flat limit
        let shape = if self.gamma.is_infinite() {
            if x >= 1.0 {
                1.0
            } else {
                0.0
            }
        } else {
            x.powf(self.gamma)
        };
        (self.k_min + (1.0 - self.k_min) * shape).clamp(self.k_min, 1.0)
    }

    /// `[k_1, ..., k_L]` for a model of `layers` layers.
    pub fn keeps(&self, layers: usize) -> Vec<f64> {
        (1..=layers).map(|l| self.keep(l, layers)).collect()
    }

    /// Short label, e.g. `k_min=0.20 γ=1.50`.
    pub fn label(&self) -> String {
        format!("k_min={:.2} γ={}", self.k_min, if self.gamma.is_infinite() { "inf".to_string() } else { format!("{:.2}", self.gamma) })
    }
}

/// ABT settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbtConfig {
    /// Top-k or threshold form.
    pub form: AbtForm,
    /// Weight of the back-tracked importance, `p ∈ [0, 1]` (paper default 0.1).
    pub p: f64,
    /// Reduction over heads.
    pub head_reduce: Reduce,
    /// Reduction over the output tokens `i ∈ O`.
    pub token_reduce: Reduce,
    /// `O_L`: sorted, unique, contains CLS (0), real tokens only. `[0]` for classification,
    /// `[0, 1]` for DeiT-distilled.
    pub top: Vec<usize>,
}

impl AbtConfig {
    /// Top-k form with the same keep fraction `k` on every layer, `p = 0.1`, averages, `O_L = {CLS}`.
    pub fn topk(k: f64) -> Self {
        Self::with_form(AbtForm::TopK { k: vec![k] })
    }

    /// Top-k form with one keep fraction per layer (`k[l-1] = k_l`, l = 1..L; or one value for
    /// every layer), `p = 0.1`, averages, `O_L = {CLS}`. Check `k` with [`check_keeps`].
    pub fn topk_per_layer(k: Vec<f64>) -> Self {
        Self::with_form(AbtForm::TopK { k })
    }

    /// Threshold form with the paper's constants (`0.00625`, clamp `(0.2, 0.95)`), `p = 0.1`,
    /// averages, `O_L = {CLS}`.
    pub fn dynamic() -> Self {
        Self::with_form(AbtForm::Dynamic { ratio: 0.00625, clamp: (0.2, 0.95) })
    }

    /// Top-k form with a per-layer keep schedule ([`KeepSchedule`], ALGORITHM.md section 8),
    /// `p = 0.1`, averages, `O_L = {CLS}`.
    pub fn schedule(schedule: KeepSchedule) -> Self {
        Self::with_form(AbtForm::Schedule(schedule))
    }

    fn with_form(form: AbtForm) -> Self {
        Self { form, p: 0.1, head_reduce: Reduce::Avg, token_reduce: Reduce::Avg, top: vec![0] }
    }
}

/// What the threshold form decided at one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicTrace {
    /// `ratio · max_j s_j`.
    pub threshold: f64,
    /// `#{j : s_j > threshold}`.
    pub count_above_threshold: usize,
    /// `ceil(clamp.0 n)` (clamped to `[1, n]`).
    pub clamp_lo: usize,
    /// `ceil(clamp.1 n)` (clamped to `[1, n]`).
    pub clamp_hi: usize,
}

/// Everything ABT computed at one layer (for tests, debugging and reports).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbtLayerTrace {
    /// Layer number `l` (1-based).
    pub layer: usize,
    /// `O_l`, the set back-tracked from.
    pub o: Vec<usize>,
    /// Weights of `O_l`, aligned with `o`.
    pub w_in: Vec<f64>,
    /// Number of tokens taken by top-k.
    pub c: usize,
    /// The `c` chosen tokens, sorted.
    pub topk: Vec<usize>,
    /// `I_l = topk ∪ O_l`.
    pub i: Vec<usize>,
    /// `s_j` for every real token `j = 0..n`.
    pub scores: Vec<f64>,
    /// New weights `s_j / Σ_{m∈I_l} s_m`, aligned with `i` (uniform if that sum is not positive).
    pub w: Vec<f64>,
    /// Score of the `c`-th minus the `(c+1)`-th token in the ranking; `None` when `c = n`.
    pub boundary_gap: Option<f64>,
    /// `Some` for the threshold form.
    pub dynamic: Option<DynamicTrace>,
}

/// Invalid ABT input or configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AbtError {
    /// `layers`, `heads` or `t` is 0.
    #[error("layers, heads and t must be >= 1 (got layers {layers}, heads {heads}, t {t})")]
    EmptyShape {
        /// Layers given.
        layers: usize,
        /// Heads given.
        heads: usize,
        /// Padded length given.
        t: usize,
    },
    /// `n` is 0 or larger than `t`.
    #[error("number of real tokens n = {n} must be in 1..=t (t = {t})")]
    BadTokenCount {
        /// Real tokens.
        n: usize,
        /// Padded length.
        t: usize,
    },
    /// The attention slice does not have `L·H·T·T` elements.
    #[error("attention has {got} values, expected L*H*T*T = {expected}")]
    AttentionLength {
        /// `L·H·T·T`.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// `k` has neither 1 nor `L` entries.
    #[error("k has {got} entries, expected 1 or L = {layers}")]
    KeepCount {
        /// Entries given.
        got: usize,
        /// Number of layers.
        layers: usize,
    },
    /// A keep fraction is not in `(0, 1]`.
    #[error("keep fraction for layer {layer} is {k}, must be in (0, 1]")]
    KeepFraction {
        /// Layer number `l` (1-based).
        layer: usize,
        /// The value.
        k: f64,
    },
    /// Invalid threshold-form parameters.
    #[error("dynamic form needs a finite ratio >= 0 and clamps 0 < lo <= hi <= 1 (got ratio {ratio}, clamp ({lo}, {hi}))")]
    DynamicParams {
        /// Ratio given.
        ratio: f64,
        /// Lower clamp.
        lo: f64,
        /// Upper clamp.
        hi: f64,
    },
    /// A keep schedule with `k_min ∉ (0, 1]` or `γ ∉ (0, +∞]`.
    #[error("keep schedule needs k_min in (0, 1] and gamma in (0, inf] (got k_min {k_min}, gamma {gamma})")]
    Schedule {
        /// `k_min` given.
        k_min: f64,
        /// `γ` given.
        gamma: f64,
    },
    /// `p` is not in `[0, 1]`.
    #[error("p = {0} must be in [0, 1]")]
    BadP(f64),
    /// `top` is not a valid set (empty, unsorted, padding, no CLS).
    #[error("invalid top set O_L: {0}")]
    Top(PlanError),
    /// A score is NaN or infinite (non-finite attention input).
    #[error("layer {layer}: score of token {token} is not finite (check the attention input)")]
    NonFiniteScore {
        /// Layer number `l` (1-based).
        layer: usize,
        /// Token.
        token: usize,
    },
    /// The resulting plan failed validation (should not happen for valid inputs).
    #[error("internal: produced an invalid plan: {0}")]
    Plan(#[from] PlanError),
}

/// `clamp(ceil(x·n − 1e-9), 1, n)` in f64 (reference README 2.3 rule 2).
pub fn keep_count(x: f64, n: usize) -> usize {
    let c = (x * n as f64 - 1e-9).ceil();
    if c < 1.0 {
        1
    } else {
        (c as usize).min(n)
    }
}

/// Sorted union of two sorted, unique sets.
fn union_sorted(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = a.iter().chain(b).copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Checks top-k keep fractions for `layers` layers: one value (the same `k` for every layer) or
/// exactly `layers` values (`k[l-1] = k_l`), each in `(0, 1]` (ALGORITHM.md section 3).
///
/// Errors: [`AbtError::KeepCount`] for any other count (0 included), [`AbtError::KeepFraction`]
/// naming the first bad layer (1-based; layer 1 for a single value).
pub fn check_keeps(k: &[f64], layers: usize) -> Result<(), AbtError> {
    if k.len() != 1 && k.len() != layers {
        return Err(AbtError::KeepCount { got: k.len(), layers });
    }
    for (idx, &kl) in k.iter().enumerate() {
        if !(kl > 0.0 && kl <= 1.0) {
            return Err(AbtError::KeepFraction { layer: idx + 1, k: kl });
        }
    }
    Ok(())
}

fn validate(attn_len: usize, layers: usize, heads: usize, t: usize, n: usize, cfg: &AbtConfig) -> Result<(), AbtError> {
    if layers == 0 || heads == 0 || t == 0 {
        return Err(AbtError::EmptyShape { layers, heads, t });
    }
    if n == 0 || n > t {
        return Err(AbtError::BadTokenCount { n, t });
    }
    let expected = layers * heads * t * t;
    if attn_len != expected {
        return Err(AbtError::AttentionLength { expected, got: attn_len });
    }
    if !(0.0..=1.0).contains(&cfg.p) {
        return Err(AbtError::BadP(cfg.p));
    }
    match &cfg.form {
        AbtForm::TopK { k } => check_keeps(k, layers)?,
        AbtForm::Schedule(s) => s.check()?,
        &AbtForm::Dynamic { ratio, clamp: (lo, hi) } => {
            if !(ratio.is_finite() && ratio >= 0.0 && lo > 0.0 && lo <= hi && hi <= 1.0) {
                return Err(AbtError::DynamicParams { ratio, lo, hi });
            }
        }
    }
    check_set(n, layers, SetKind::Output, &cfg.top).map_err(AbtError::Top)
}

/// Runs ABT on the attention of one example.
///
/// `attn`: attention probabilities, row-major `[L, H, T, T]` (layer `l-1`, head, query, key);
/// `t`: padded length; `n`: real tokens (the first `n` positions). Padding-key columns and
/// padding-query rows are never read. Computation is in f64; ties break toward the lower index;
/// each token's score uses the same sequence of operations, so bitwise-equal attention columns
/// give bitwise-equal scores.
///
/// Returns the plan (`I_l` per layer, `O_l = I_{l+1}`, `O_L = cfg.top`) and one trace per
/// layer (index `l - 1`).
///
/// Errors: [`AbtError`] for shape mismatches, `n ∉ 1..=t`, bad `k` / `p` / threshold
/// parameters, an invalid `top`, or non-finite scores.
pub fn backtrack(
    attn: &[f32],
    layers: usize,
    heads: usize,
    t: usize,
    n: usize,
    cfg: &AbtConfig,
) -> Result<(TokenPlan, Vec<AbtLayerTrace>), AbtError> {
    validate(attn.len(), layers, heads, t, n, cfg)?;
    backtrack_core(layers, n, cfg, |layer_idx, i, abar| {
        for h in 0..heads {
            let row = &attn[((layer_idx * heads + h) * t + i) * t..][..n];
            for (a, &x) in abar.iter_mut().zip(row) {
                let x = f64::from(x);
                *a = match (h, cfg.head_reduce) {
                    (0, _) => x,
                    (_, Reduce::Avg) => *a + x,
                    (_, Reduce::Max) => a.max(x),
                };
            }
        }
        if cfg.head_reduce == Reduce::Avg {
            for a in abar.iter_mut() {
                *a /= heads as f64;
            }
        }
    })
}

/// [`backtrack`] on attention already reduced over heads: `reduced` is `[L, n, n]` f64 with
/// `reduced[l][i][j]` = the head reduction of layer `l+1`'s attention of query `i` on key `j`
/// exactly as [`backtrack`] computes it (f64 sum over heads in head order divided by `heads` for
/// `Reduce::Avg`, f64 max for `Reduce::Max`). Rows never read may be left as anything (zero).
/// Gives bitwise the same plan and traces as [`backtrack`].
pub fn backtrack_reduced(reduced: &[f64], layers: usize, n: usize, cfg: &AbtConfig) -> Result<(TokenPlan, Vec<AbtLayerTrace>), AbtError> {
    validate(layers * n * n, layers, 1, n, n, cfg)?;
    if reduced.len() != layers * n * n {
        return Err(AbtError::AttentionLength { expected: layers * n * n, got: reduced.len() });
    }
    backtrack_core(layers, n, cfg, |layer_idx, i, abar| {
        abar.copy_from_slice(&reduced[(layer_idx * n + i) * n..][..n]);
    })
}

fn backtrack_core(
    layers: usize,
    n: usize,
    cfg: &AbtConfig,
    head_row: impl Fn(usize, usize, &mut [f64]),
) -> Result<(TokenPlan, Vec<AbtLayerTrace>), AbtError> {
    let p = cfg.p;
    let mut o: Vec<usize> = cfg.top.clone();
    let mut w: Vec<f64> = vec![1.0 / o.len() as f64; o.len()];
    let mut inputs: Vec<Vec<usize>> = vec![Vec::new(); layers];
    let mut traces: Vec<AbtLayerTrace> = Vec::with_capacity(layers);
    let mut abar = vec![0.0f64; n]; // one row of the head-reduced attention, real keys only
    let mut acc = vec![0.0f64; n];

    for layer_idx in (0..layers).rev() {
        let layer = layer_idx + 1;
        // Scores: s_j = reduce_{i∈O} Ā[i, j] · (p w_i + 1 − p), over real keys j < n.
        for (r, (&i, &wi)) in o.iter().zip(&w).enumerate() {
            let factor = p * wi + (1.0 - p);
            head_row(layer_idx, i, &mut abar);
            for (s, &a) in acc.iter_mut().zip(&abar) {
                let v = a * factor;
                *s = match (r, cfg.token_reduce) {
                    (0, _) => v,
                    (_, Reduce::Avg) => *s + v,
                    (_, Reduce::Max) => s.max(v),
                };
            }
        }
        let scores: Vec<f64> = match cfg.token_reduce {
            Reduce::Avg => acc.iter().map(|s| s / o.len() as f64).collect(),
            Reduce::Max => acc.clone(),
        };
        if let Some(token) = scores.iter().position(|s| !s.is_finite()) {
            return Err(AbtError::NonFiniteScore { layer, token });
        }

        // Ranking: score descending, then index ascending.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
        let (c, dynamic) = match &cfg.form {
            AbtForm::TopK { k } => (keep_count(if k.len() == 1 { k[0] } else { k[layer_idx] }, n), None),
            AbtForm::Schedule(s) => (keep_count(s.keep(layer, layers), n), None),
            &AbtForm::Dynamic { ratio, clamp: (lo, hi) } => {
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let threshold = ratio * max;
                let count = scores.iter().filter(|&&s| s > threshold).count();
                let (clamp_lo, clamp_hi) = (keep_count(lo, n), keep_count(hi, n));
                let trace = DynamicTrace { threshold, count_above_threshold: count, clamp_lo, clamp_hi };
                (count.clamp(clamp_lo, clamp_hi), Some(trace))
            }
        };
        let boundary_gap = (c < n).then(|| scores[order[c - 1]] - scores[order[c]]);
        let mut topk: Vec<usize> = order[..c].to_vec();
        topk.sort_unstable();
        let i_set = union_sorted(&topk, &o);

        let sum: f64 = i_set.iter().map(|&j| scores[j]).sum();
        let w_new: Vec<f64> = if sum > 0.0 && sum.is_finite() {
            i_set.iter().map(|&j| scores[j] / sum).collect()
        } else {
            vec![1.0 / i_set.len() as f64; i_set.len()]
        };

        traces.push(AbtLayerTrace {
            layer,
            o: std::mem::take(&mut o),
            w_in: std::mem::take(&mut w),
            c,
            topk,
            i: i_set.clone(),
            scores,
            w: w_new.clone(),
            boundary_gap,
            dynamic,
        });
        inputs[layer_idx] = i_set.clone();
        o = i_set;
        w = w_new;
    }
    traces.reverse();
    let plan = TokenPlan::from_inputs(n, inputs, cfg.top.clone())?;
    Ok((plan, traces))
}

/// Whose attention ABT back-tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionSource {
    /// The ApproxNet's (section 2): the pruning planner.
    ApproxNet,
    /// The teacher's own (`abt-actual`): an upper bound that needs a dense teacher pass.
    Teacher,
}

/// The ABT planner: `config` (top-k with one keep fraction or one per layer, or the threshold
/// form; `config.top` is replaced by the teacher's top tokens) on `source`'s attention.
#[derive(Debug, Clone)]
pub struct Abt {
    pub config: AbtConfig,
    pub source: AttentionSource,
}

impl Abt {
    /// Top-k ABT with keep fractions `k` (one for every layer, or `k[l-1] = k_l`) on `source`.
    pub fn topk(k: Vec<f64>, source: AttentionSource) -> Self {
        Self { config: AbtConfig::topk_per_layer(k), source }
    }

    /// Top-k ABT with a per-layer keep schedule (ALGORITHM.md section 8) on `source`.
    pub fn schedule(schedule: KeepSchedule, source: AttentionSource) -> Self {
        Self { config: AbtConfig::schedule(schedule), source }
    }
}

impl crate::planners::Planner for Abt {
    fn label(&self) -> String {
        // two decimals, unless that would show a positive fraction as 0.00 (`--keep 0.0001`)
        let two = |k: f64| if k > 0.0 && k < 0.005 { format!("{k}") } else { format!("{k:.2}") };
        let keep = match &self.config.form {
            AbtForm::TopK { k } if k.len() == 1 => two(k[0]),
            AbtForm::TopK { k } => k.iter().map(|&k| two(k)).collect::<Vec<_>>().join(","),
            AbtForm::Dynamic { ratio, .. } => format!("ratio {ratio}"),
            AbtForm::Schedule(s) => return format!("{} {}", self.family(), s.label()),
        };
        format!("{} k={keep}", self.family())
    }
    fn family(&self) -> &'static str {
        match self.source {
            AttentionSource::ApproxNet => "abt",
            AttentionSource::Teacher => "abt-actual",
        }
    }
    fn cost(&self) -> crate::planners::Cost {
        use crate::planners::Cost;
        match self.source {
            AttentionSource::ApproxNet => Cost { approx_pass: true, ..Cost::default() },
            AttentionSource::Teacher => Cost { dense_teacher_pass: true, ..Cost::default() },
        }
    }
    fn schedule<'a>(
        &'a self,
        models: &crate::planners::Models<'a>,
        inputs: &[EncodedInput],
    ) -> Result<crate::planners::Schedule<'a>, ModelError> {
        let net = match self.source {
            AttentionSource::ApproxNet => models.approx_for("mode abt")?,
            AttentionSource::Teacher => models.teacher,
        };
        let cfg = AbtConfig { top: models.teacher.top_tokens(), ..self.config.clone() };
        let (plans, approx, planning) = abt_plans_timed(net, inputs, &cfg)?;
        Ok(crate::planners::Schedule::Plans { plans, timing: Some(crate::planners::PlanTiming { approx, planning }) })
    }
}

/// ABT plans from dense attention of `net` (the ApproxNet, or the teacher for abt-actual).
///
/// Errors: bad input; back-tracking fails on an example (names it).
pub fn abt_plans(net: &Encoder, inputs: &[EncodedInput], cfg: &AbtConfig) -> Result<Vec<TokenPlan>, ModelError> {
    abt_plans_timed(net, inputs, cfg).map(|(p, _, _)| p)
}

/// [`abt_plans`] with its two stages timed: `(plans, seconds in the attention run, seconds
/// back-tracking)`; each group of examples ([`Encoder::for_each_reduced_group`]) is
/// back-tracked right after its attention run. The attention run computes only what back-tracking reads: at the top layer
/// only the `cfg.top` query rows (other rows of a softmax are independent, so the plans are
/// identical to a full dense run's); attention is reduced over heads as it is produced
/// ([`Encoder::run_attention_reduced`]), so `[L, H, n, n]` is never stored.
pub fn abt_plans_timed(net: &Encoder, inputs: &[EncodedInput], cfg: &AbtConfig) -> Result<(Vec<TokenPlan>, f64, f64), ModelError> {
    let c = &net.config;
    let big_l = net.layers.len();
    let t0 = std::time::Instant::now();
    let top_ok =
        |n: usize| !cfg.top.is_empty() && cfg.top.iter().all(|&t| t < n) && cfg.top.windows(2).all(|w| w[0] < w[1]) && cfg.top[0] == 0;
    let plans: Vec<TokenPlan> = inputs
        .iter()
        .map(|x| {
            let n = x.len().max(1);
            if top_ok(n) {
                TokenPlan::from_inputs(n, vec![(0..n).collect(); big_l], cfg.top.clone()).unwrap_or_else(|_| TokenPlan::dense(n, big_l))
            } else {
                TokenPlan::dense(n, big_l)
            }
        })
        .collect();
    let reduce = if cfg.head_reduce == Reduce::Max { crate::exec::HeadReduce::Max } else { crate::exec::HeadReduce::Mean };
    // back-tracked one group at a time, while its reduced attention is in memory
    let mut out: Vec<TokenPlan> = Vec::with_capacity(inputs.len());
    let mut planning = 0.0f64;
    net.for_each_reduced_group(inputs, &plans, reduce, |first, blocks| {
        use rayon::prelude::*;
        let t = std::time::Instant::now();
        let group = blocks
            .par_iter()
            .enumerate()
            .map(|(i, att)| {
                let e = first + i;
                backtrack_reduced(att, c.num_layers, inputs[e].len(), cfg)
                    .map(|(p, _)| p)
                    .map_err(|err| ModelError::Input(format!("back-tracking example {e}: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.extend(group);
        planning += t.elapsed().as_secs_f64();
        Ok(())
    })?;
    let total = t0.elapsed().as_secs_f64();
    Ok((out, (total - planning).max(0.0), planning))
}
