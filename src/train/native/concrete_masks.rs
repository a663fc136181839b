//! The concrete-mask generator of ALGORITHM.md section 4 (steps 1-2 and the retention signal of
//! step 5) on packed examples, forward and exact backward, generic over the float type: `f32` in
//! the native trainer ([`super::concrete`]), `f64` for the finite-difference check of dL/dθ
//! (`tests/native_concrete.rs`).
//!
//! Per example (`n` real tokens, `H` heads, `L` layers; the same math as burn's
//! [`concrete_masks_top`](crate::train::concrete::concrete_masks_top), padding left out):
//! for `l = L..1`, the ApproxNet's pre-softmax scores `S^l` `[H, n, n]` are standardised per
//! query row (population std, `Z = (S - mean) / (std + 1e-6)`), `U = mean_h Φ(Z)`,
//! `ŝ_j = Σ_i w_i U_ij / Σ_i m^{l+1}_i` with `w_i = m^{l+1}_i (p c_i + 1 - p)`,
//! `s = 0.01 + 0.99 ŝ / max(ŝ)`, `mask = σ((logit(clamp(s)) + θ_l) / τ)`,
//! `m^l = max(mask, m^{l+1})`, `c = s`; `m^{L+1} = c = 1` on the first `num_special` tokens.
//!
//! Ties are broken as burn breaks them: `max(ŝ)` routes its gradient to the first maximal
//! token; `max(mask, m^{l+1})` routes it to `mask` unless `mask < m^{l+1}`; the clamps of `s`
//! and of `max(ŝ)` pass the gradient at their bounds.

use rayon::prelude::*;

use crate::train::concrete::{CLAMP_EPS, P, STD_EPS, TAU};
pub use crate::train::native::real::Real;

/// What one layer of one example keeps for the backward pass.
#[derive(Debug, Clone, Default)]
struct LayerState<F> {
    /// Standardised scores `[H, n, n]`.
    z: Vec<F>,
    /// `std + eps` and `std` per (head, query) row `[H, n]`.
    a: Vec<F>,
    sd: Vec<F>,
    /// `U` `[n, n]`, `w` `[n]`, `Σ_i m^{l+1}_i`.
    u: Vec<F>,
    w: Vec<F>,
    msum: F,
    /// `ŝ` `[n]`, its first argmax, `max(ŝ)` after the clamp, whether the clamp cut it.
    s_hat: Vec<F>,
    arg: usize,
    smax: F,
    smax_clamped: bool,
    /// `s` `[n]` (before its clamp), the sigmoid `[n]`, and where `max` took `m^{l+1}`.
    s: Vec<F>,
    sig: Vec<F>,
    took_next: Vec<bool>,
}

/// The masks of one example and the state of their forward pass.
#[derive(Debug, Clone, Default)]
pub struct ExampleMasks<F> {
    /// `L + 1` soft masks `[n]`: index `l - 1` = `m^l`, index `L` = the top set (one-hot CLS).
    pub m: Vec<Vec<F>>,
    states: Vec<LayerState<F>>,
}

/// The soft masks of one example from its ApproxNet scores `scores[l]` (`[H, n, n]`, layer
/// `l + 1`'s pre-softmax `QKᵀ/√d_h`) and the thresholds `theta` `[L]`; `num_special` tokens
/// (at least 1) form the top set `m^{L+1}`.
pub fn example_forward<F: Real>(scores: &[&[F]], n: usize, heads: usize, theta: &[F], num_special: usize) -> ExampleMasks<F> {
    let big_l = scores.len();
    let (zero, one) = (F::of(0.0), F::of(1.0));
    let top: Vec<F> = (0..n).map(|j| if j < num_special.clamp(1, n.max(1)) { one } else { zero }).collect();
    let mut m = vec![Vec::new(); big_l + 1];
    m[big_l] = top.clone();
    let mut states: Vec<LayerState<F>> = vec![LayerState::default(); big_l];
    let mut c = top;
    let nf = F::of(n as f64);
    let (p, eps, tau) = (F::of(P), F::of(STD_EPS), F::of(TAU));
    let (lo, hi) = (F::of(CLAMP_EPS), F::of(1.0 - CLAMP_EPS));
    for l in (0..big_l).rev() {
        let sl = scores[l];
        let m_next = &m[l + 1];
        let mut st = LayerState { z: vec![zero; heads * n * n], a: vec![zero; heads * n], sd: vec![zero; heads * n], ..Default::default() };
        let mut u = vec![zero; n * n];
        for r in 0..heads * n {
            let row = &sl[r * n..(r + 1) * n];
            let mut sum = zero;
            for &v in row {
                sum += v;
            }
            let mean = sum / nf;
            let mut var = zero;
            for &v in row {
                let cdev = v - mean;
                var += cdev * cdev;
            }
            let sd = (var / nf).sqrt();
            let a = sd + eps;
            st.sd[r] = sd;
            st.a[r] = a;
            let i = r % n;
            F::standardize_cdf_add(row, mean, a, &mut st.z[r * n..(r + 1) * n], &mut u[i * n..(i + 1) * n]);
        }
        let hf = F::of(heads as f64);
        for v in u.iter_mut() {
            *v = *v / hf;
        }
        let w: Vec<F> = (0..n).map(|i| m_next[i] * (c[i] * p + (one - p))).collect();
        let mut msum = zero;
        for &v in m_next {
            msum += v;
        }
        let mut s_hat = vec![zero; n];
        for i in 0..n {
            for j in 0..n {
                s_hat[j] += w[i] * u[i * n + j];
            }
        }
        for v in s_hat.iter_mut() {
            *v = *v / msum;
        }
        let mut arg = 0;
        for j in 1..n {
            if s_hat[j] > s_hat[arg] {
                arg = j;
            }
        }
        let floor = F::of(1e-30);
        let smax_clamped = s_hat[arg] < floor;
        let smax = if smax_clamped { floor } else { s_hat[arg] };
        let s: Vec<F> = s_hat.iter().map(|&v| v / smax * F::of(0.99) + F::of(0.01)).collect();
        let mut sig = vec![zero; n];
        let mut took_next = vec![false; n];
        let mut ml = vec![zero; n];
        for j in 0..n {
            let sc = clamp(s[j], lo, hi);
            let logit = sc.ln() - (one - sc).ln();
            let x = (logit + theta[l]) / tau;
            let sg = one / (one + (-x).exp());
            sig[j] = sg;
            took_next[j] = sg < m_next[j];
            ml[j] = if took_next[j] { m_next[j] } else { sg };
        }
        c = s.clone();
        m[l] = ml;
        st.u = u;
        st.w = w;
        st.msum = msum;
        st.s_hat = s_hat;
        st.arg = arg;
        st.smax = smax;
        st.smax_clamped = smax_clamped;
        st.s = s;
        st.sig = sig;
        st.took_next = took_next;
        states[l] = st;
    }
    ExampleMasks { m, states }
}

fn clamp<F: Real>(x: F, lo: F, hi: F) -> F {
    if x > hi {
        hi
    } else if x < lo {
        lo
    } else {
        x
    }
}

/// The backward of [`example_forward`]: `dm[l]` `[n]` = dL/dm^{l+1} for `l = 0..L` (the soft
/// masks, gradients of their hard straight-through copies included); adds dL/dθ_l into
/// `dtheta` and returns dL/dS^l per layer (`[H, n, n]`, as `scores`).
pub fn example_backward<F: Real>(ex: &ExampleMasks<F>, dm: &[Vec<F>], n: usize, heads: usize, dtheta: &mut [F]) -> Vec<Vec<F>> {
    let big_l = ex.states.len();
    let zero = F::of(0.0);
    let one = F::of(1.0);
    let (p, tau) = (F::of(P), F::of(TAU));
    let (lo, hi) = (F::of(CLAMP_EPS), F::of(1.0 - CLAMP_EPS));
    let nf = F::of(n as f64);
    let hf = F::of(heads as f64);
    let mut gm: Vec<Vec<F>> = (0..=big_l).map(|l| dm.get(l).cloned().unwrap_or_else(|| vec![zero; n])).collect();
    let mut gs: Vec<Vec<F>> = vec![vec![zero; n]; big_l + 1];
    let mut dscores = Vec::with_capacity(big_l);
    for l in 0..big_l {
        let st = &ex.states[l];
        let m_next = &ex.m[l + 1];
        let c: Vec<F> = if l + 1 < big_l { ex.states[l + 1].s.clone() } else { m_next.clone() };
        // m^l = max(mask, m^{l+1}); mask = σ(x), x = (logit(clamp(s)) + θ) / τ
        let mut ds = gs[l].clone();
        let mut dth = zero;
        for j in 0..n {
            let g = gm[l][j];
            if st.took_next[j] {
                gm[l + 1][j] += g;
                continue;
            }
            let sg = st.sig[j];
            let dx = g * (sg * (one - sg));
            let dlogit = dx / tau;
            dth += dlogit;
            let sj = st.s[j];
            if !(sj > hi || sj < lo) {
                ds[j] += dlogit / sj + dlogit / (one - sj);
            }
        }
        dtheta[l] += dth;
        // s = ŝ / max(ŝ) · 0.99 + 0.01
        let mut dsh = vec![zero; n];
        let mut dmax = zero;
        for j in 0..n {
            let g = ds[j] * F::of(0.99);
            dsh[j] = g / st.smax;
            dmax += -(g * st.s_hat[j]) / (st.smax * st.smax);
        }
        if !st.smax_clamped {
            dsh[st.arg] += dmax;
        }
        // ŝ_j = Σ_i w_i U_ij / M
        let mut dmsum = zero;
        for j in 0..n {
            dmsum += -(dsh[j] * st.s_hat[j]) / st.msum;
        }
        let mut du = vec![zero; n * n];
        for i in 0..n {
            let mut dw = zero;
            for j in 0..n {
                dw += dsh[j] * st.u[i * n + j];
                du[i * n + j] = st.w[i] * dsh[j] / st.msum;
            }
            dw = dw / st.msum;
            gm[l + 1][i] += dmsum + dw * (c[i] * p + (one - p));
            if l + 1 < big_l {
                gs[l + 1][i] += dw * m_next[i] * p;
            }
        }
        // U = mean_h Φ(Z); Z = (S - mean) / (std + eps)
        let mut dsc = vec![zero; heads * n * n];
        for r in 0..heads * n {
            let i = r % n;
            let (a, sd) = (st.a[r], st.sd[r]);
            let z = &st.z[r * n..(r + 1) * n];
            let mut dz = vec![zero; n];
            let dsd = F::cdf_backward_row(&du[i * n..(i + 1) * n], z, hf, a, &mut dz);
            // d std / d var = 1 / (2 std); a zero std (all scores equal) passes nothing
            let dvar = if sd > zero { dsd / (F::of(2.0) * sd) } else { zero };
            let mut dcen = vec![zero; n];
            let mut tot = zero;
            for j in 0..n {
                dcen[j] = dz[j] / a + dvar * F::of(2.0) * (z[j] * a) / nf;
                tot += dcen[j];
            }
            let mean_d = tot / nf;
            for j in 0..n {
                dsc[r * n + j] = dcen[j] - mean_d;
            }
        }
        dscores.push(dsc);
    }
    dscores
}

/// The masks of a packed batch (examples one after another, `lengths`), as the native teacher
/// takes them: `m[l]` `[N]` = `m^{l+1}` (`L + 1` vectors), and each example's forward state.
#[derive(Debug, Clone)]
pub struct BatchMasks<F> {
    pub m: Vec<Vec<F>>,
    pub examples: Vec<ExampleMasks<F>>,
}

/// [`example_forward`] for every example of a packed batch, in parallel: `scores[l]` is layer
/// `l + 1`'s score buffer in the layout of the native forward's probabilities (per example
/// `[H, n_e, n_e]`, one after another).
pub fn batch_forward<F: Real>(scores: &[Vec<F>], lengths: &[usize], heads: usize, theta: &[F], num_special: usize) -> BatchMasks<F> {
    let big_l = scores.len();
    let starts = block_starts(lengths, heads);
    let examples: Vec<ExampleMasks<F>> = lengths
        .par_iter()
        .zip(starts.par_iter())
        .map(|(&n, &s0)| {
            let per: Vec<&[F]> = scores.iter().map(|s| &s[s0..s0 + heads * n * n]).collect();
            example_forward(&per, n, heads, theta, num_special)
        })
        .collect();
    let mut m = vec![Vec::with_capacity(lengths.iter().sum()); big_l + 1];
    for ex in &examples {
        for (dst, src) in m.iter_mut().zip(&ex.m) {
            dst.extend_from_slice(src);
        }
    }
    BatchMasks { m, examples }
}

/// [`example_backward`] for every example of a packed batch: `dm[l]` `[N]` = dL/dm^{l+1}
/// (`l = 0..L`); returns dL/dS per layer (layout of `scores` in [`batch_forward`]) and dL/dθ
/// `[L]` (summed over examples in order).
pub fn batch_backward<F: Real>(bm: &BatchMasks<F>, dm: &[Vec<F>], lengths: &[usize], heads: usize) -> (Vec<Vec<F>>, Vec<F>) {
    let big_l = bm.m.len() - 1;
    let mut offs = vec![0usize];
    for &n in lengths {
        offs.push(offs.last().copied().unwrap_or(0) + n);
    }
    let per: Vec<(Vec<Vec<F>>, Vec<F>)> = bm
        .examples
        .par_iter()
        .enumerate()
        .map(|(e, ex)| {
            let n = lengths[e];
            let dme: Vec<Vec<F>> = dm.iter().take(big_l).map(|v| v[offs[e]..offs[e] + n].to_vec()).collect();
            let mut dth = vec![F::of(0.0); big_l];
            let ds = example_backward(ex, &dme, n, heads, &mut dth);
            (ds, dth)
        })
        .collect();
    let mut dscores = vec![Vec::new(); big_l];
    let mut dtheta = vec![F::of(0.0); big_l];
    for (ds, dth) in per {
        for (dst, src) in dscores.iter_mut().zip(ds) {
            dst.extend(src);
        }
        for (a, b) in dtheta.iter_mut().zip(dth) {
            *a += b;
        }
    }
    (dscores, dtheta)
}

/// Start of each example's `[H, n, n]` block in a packed score buffer.
fn block_starts(lengths: &[usize], heads: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(lengths.len());
    let mut o = 0;
    for &n in lengths {
        out.push(o);
        o += heads * n * n;
    }
    out
}

/// The retention signal `r` of section 4.5: the mean over layers `l = 1..L` and examples of
/// `Σ_j m^l_j / n` (soft masks `m[..L]`, packed), in f64.
pub fn soft_retention<F: Real>(m: &[Vec<F>], lengths: &[usize]) -> f64 {
    let big_l = m.len() - 1;
    let mut r = 0.0;
    for ml in &m[..big_l] {
        let mut at = 0;
        let mut per = 0.0;
        for &n in lengths {
            per += ml[at..at + n].iter().map(|v| v.to_f64()).sum::<f64>() / n as f64;
            at += n;
        }
        r += per / lengths.len() as f64;
    }
    r / big_l as f64
}

/// Add the gradient of `weight · (r - target)²` (`r` of [`soft_retention`]) to `dm[l]` (`[N]`,
/// `l = 0..L`); returns the term's value.
pub fn retention_term<F: Real>(m: &[Vec<F>], lengths: &[usize], target: f64, weight: f64, dm: &mut [Vec<F>]) -> f64 {
    let big_l = m.len() - 1;
    let r = soft_retention(m, lengths);
    let dr = 2.0 * weight * (r - target);
    let b = lengths.len() as f64;
    for d in dm.iter_mut().take(big_l) {
        let mut at = 0;
        for &n in lengths {
            let g = F::of(dr / (big_l as f64 * b * n as f64));
            for v in &mut d[at..at + n] {
                *v += g;
            }
            at += n;
        }
    }
    weight * (r - target).powi(2)
}

/// The hard straight-through copies of the soft masks `m[..L]` (`m + (1[m >= 0.5] - m)`,
/// computed as burn does; the top set is kept as is): the forward values the teacher runs with
/// in the hard phase. The gradient of a hard mask is that of its soft mask.
pub fn harden<F: Real>(m: &[Vec<F>]) -> Vec<Vec<F>> {
    let big_l = m.len() - 1;
    let half = F::of(0.5);
    m.iter()
        .enumerate()
        .map(
            |(l, v)| {
                if l == big_l {
                    v.clone()
                } else {
                    v.iter().map(|&x| x + ((if x >= half { F::of(1.0) } else { F::of(0.0) }) - x)).collect()
                }
            },
        )
        .collect()
}

/// Section-5 retention of the hard plans of masks `m[..L]` (kept iff `m >= 0.5`; `O_L` = CLS)
/// averaged over the examples: burn's [`hard_retention`](crate::train::concrete::hard_retention).
pub fn hard_retention<F: Real>(m: &[Vec<F>], lengths: &[usize]) -> f64 {
    let big_l = m.len() - 1;
    let half = F::of(0.5);
    let mut total = 0.0;
    let mut at = 0;
    for &n in lengths {
        let kept: usize = m[..big_l].iter().map(|v| v[at..at + n].iter().filter(|&&x| x >= half).count()).sum();
        total += (kept + 1) as f64 / ((big_l + 1) * n) as f64;
        at += n;
    }
    total / lengths.len().max(1) as f64
}
