//! The public kernel API is sound: every safe function that hands caller slices to raw-pointer
//! code checks their lengths in release builds too (a panic that names the problem, never an
//! out-of-bounds read or write), and `Linear` cannot be changed after its weights were packed.

use std::io::Write as _;
use sttabt::kernels;
use sttabt::model::Linear;

fn seq(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| ((i * 7 + 3) % 11) as f32 * scale - 0.5).collect()
}

/// `a[m, k] · b[k, n]` in f64.
fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j])).sum();
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() <= 1e-4 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

// ---- the right lengths give the right values (so the panics below are about the lengths) ----

#[test]
fn kernels_with_correct_lengths_compute_the_product() {
    let (m, k, n) = (3, 5, 4);
    let (a, b) = (seq(m * k, 0.1), seq(k * n, 0.2));
    let want = reference(&a, &b, m, k, n);
    let mut out = vec![0.0f32; m * n];
    kernels::matmul(&a, &b, &mut out, m, k, n, false);
    assert_close(&out, &want, "matmul");
    // b transposed: bt[n, k]
    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
    let mut out = vec![0.0f32; m * n];
    kernels::matmul_bt(&a, &bt, &mut out, m, k, n);
    assert_close(&out, &want, "matmul_bt");
    let mut out = vec![0.0f32; m * n];
    kernels::matmul_bt_strided(&a, k, &bt, k, &mut out, m, k, n);
    assert_close(&out, &want, "matmul_bt_strided");
    let mut out = vec![0.0f32; m * n];
    kernels::matmul_strided_out(&a, &b, n, &mut out, n, m, k, n);
    assert_close(&out, &want, "matmul_strided_out");
    let bias = seq(n, 0.3);
    let mut out = vec![0.0f32; m * n];
    kernels::linear(&a, &b, &bias, &mut out, m, k, n, None);
    let with_bias: Vec<f64> = want.iter().enumerate().map(|(i, w)| w + f64::from(bias[i % n])).collect();
    assert_close(&out, &with_bias, "linear");
    let lin = Linear::new(b.clone(), bias.clone(), k, n);
    assert_eq!((lin.weight(), lin.bias(), lin.d_in(), lin.d_out()), (&b[..], &bias[..], k, n));
    let mut out = vec![0.0f32; m * n];
    lin.forward_into(&a, &mut out);
    assert_close(&out, &with_bias, "Linear::forward_into");
    // from_hf takes [out, in]: the same layer
    let hf: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
    assert_eq!(Linear::from_hf(&hf, bias.clone(), k, n), lin);
    assert_eq!(lin.weight_hf(), hf);
}

// ---- wrong lengths: a panic naming the problem ----

#[test]
#[should_panic(expected = "matmul: out has 11 values, expected m x n = 3 x 4")]
fn matmul_refuses_a_short_output() {
    let mut out = vec![0.0f32; 11];
    kernels::matmul(&seq(15, 0.1), &seq(20, 0.1), &mut out, 3, 5, 4, false);
}

#[test]
#[should_panic(expected = "matmul: a has 14 values, expected m x k = 3 x 5")]
fn matmul_refuses_a_short_input() {
    let mut out = vec![0.0f32; 12];
    kernels::matmul(&seq(14, 0.1), &seq(20, 0.1), &mut out, 3, 5, 4, false);
}

#[test]
#[should_panic(expected = "matmul: b has 19 values, expected k x n = 5 x 4")]
fn matmul_refuses_a_short_weight() {
    let mut out = vec![0.0f32; 12];
    kernels::matmul(&seq(15, 0.1), &seq(19, 0.1), &mut out, 3, 5, 4, true);
}

#[test]
#[should_panic(expected = "overflow")]
fn matmul_refuses_dimensions_whose_product_overflows() {
    // m x k wraps to 0 in usize arithmetic: must not pass as "0 values expected"
    let mut out = vec![0.0f32; 0];
    kernels::matmul(&[], &[], &mut out, 1 << 32, 1 << 32, 0, false);
}

#[test]
#[should_panic(expected = "matmul_bt: b has 19 values, expected n x k = 4 x 5")]
fn matmul_bt_refuses_a_short_operand() {
    let mut out = vec![0.0f32; 12];
    kernels::matmul_bt(&seq(15, 0.1), &seq(19, 0.1), &mut out, 3, 5, 4);
}

#[test]
#[should_panic(expected = "matmul_bt: out has 13 values, expected m x n = 3 x 4")]
fn matmul_bt_refuses_a_long_output() {
    let mut out = vec![0.0f32; 13];
    kernels::matmul_bt(&seq(15, 0.1), &seq(20, 0.1), &mut out, 3, 5, 4);
}

#[test]
#[should_panic(expected = "matmul_bt_strided: a has 14 values, too few for 3 rows of 4 at stride 6")]
fn matmul_bt_strided_refuses_a_short_strided_operand() {
    let mut out = vec![0.0f32; 6];
    kernels::matmul_bt_strided(&seq(14, 0.1), 6, &seq(20, 0.1), 4, &mut out, 3, 4, 2);
}

#[test]
#[should_panic(expected = "matmul_bt_strided: strides 3, 4 shorter than a row of k = 4")]
fn matmul_bt_strided_refuses_a_stride_shorter_than_a_row() {
    let mut out = vec![0.0f32; 6];
    kernels::matmul_bt_strided(&seq(20, 0.1), 3, &seq(20, 0.1), 4, &mut out, 3, 4, 2);
}

#[test]
#[should_panic(expected = "matmul_strided_out: out has 9 values, too few for 3 rows of 2 at stride 4")]
fn matmul_strided_out_refuses_a_short_strided_output() {
    let mut out = vec![0.0f32; 9];
    kernels::matmul_strided_out(&seq(12, 0.1), &seq(8, 0.1), 2, &mut out, 4, 3, 4, 2);
}

#[test]
#[should_panic(expected = "matmul_strided_out: v has 7 values, too few for 4 rows of 2 at stride 2")]
fn matmul_strided_out_refuses_short_values() {
    let mut out = vec![0.0f32; 6];
    kernels::matmul_strided_out(&seq(12, 0.1), &seq(7, 0.1), 2, &mut out, 2, 3, 4, 2);
}

#[test]
#[should_panic(expected = "linear: out has 11 values, expected m x n = 3 x 4")]
fn linear_refuses_a_short_output() {
    let mut out = vec![0.0f32; 11];
    kernels::linear(&seq(15, 0.1), &seq(20, 0.1), &seq(4, 0.1), &mut out, 3, 5, 4, None);
}

#[test]
#[should_panic(expected = "linear: bias has 3 values, expected n = 4")]
fn linear_refuses_a_short_bias() {
    let mut out = vec![0.0f32; 12];
    kernels::linear(&seq(15, 0.1), &seq(20, 0.1), &seq(3, 0.1), &mut out, 3, 5, 4, None);
}

/// A 4 -> 3 layer; with `rows` up to `PACKED_MAX_ROWS` the packed path runs on AVX-512 CPUs, so
/// both paths are covered by the two calls in each test below.
fn layer() -> Linear {
    Linear::new(seq(12, 0.1), seq(3, 0.1), 4, 3)
}

#[test]
#[should_panic(expected = "Linear::forward_into: output has 5 values, expected rows x d_out = 2 x 3")]
fn linear_forward_into_refuses_a_short_output_few_rows() {
    let mut out = vec![0.0f32; 5];
    layer().forward_into(&seq(8, 0.1), &mut out);
}

#[test]
#[should_panic(expected = "Linear::forward_into: output has 899 values, expected rows x d_out = 300 x 3")]
fn linear_forward_into_refuses_a_short_output_many_rows() {
    // more rows than PACKED_MAX_ROWS: the `gemm` path
    let mut out = vec![0.0f32; 899];
    layer().forward_into(&seq(1200, 0.01), &mut out);
}

#[test]
#[should_panic(expected = "Linear::forward_into: input has 9 values, not a whole number of rows of d_in = 4")]
fn linear_forward_into_refuses_a_ragged_input() {
    let mut out = vec![0.0f32; 6];
    layer().forward_into(&seq(9, 0.1), &mut out);
}

#[test]
#[should_panic(expected = "Linear::forward_act: input has 7 values, not a whole number of rows of d_in = 4")]
fn linear_forward_refuses_a_ragged_input() {
    let _ = layer().forward(&seq(7, 0.1));
}

#[test]
#[should_panic(expected = "Linear::new: weight has 11 values, expected d_in x d_out = 4 x 3")]
fn linear_new_refuses_a_weight_of_the_wrong_size() {
    let _ = Linear::new(seq(11, 0.1), seq(3, 0.1), 4, 3);
}

#[test]
#[should_panic(expected = "Linear::from_hf: bias has 2 values, expected d_out = 3")]
fn linear_from_hf_refuses_a_bias_of_the_wrong_size() {
    let _ = Linear::from_hf(&seq(12, 0.1), seq(2, 0.1), 4, 3);
}

#[test]
#[should_panic(expected = "output has 5 values, expected")]
fn packed_matmul_refuses_a_short_output() {
    match kernels::packed::PackedWeights::new(&seq(12, 0.1), 4, 3) {
        Some(p) => p.matmul(&seq(8, 0.1), &mut [0.0f32; 5], 2, false),
        None => {
            let _ = writeln!(std::io::stderr(), "NOTE: packed GEMM not available on this CPU (no AVX-512F or STTABT_NO_PACKED_GEMM set): PackedWeights::new returned None; checking that `pack` would refuse instead");
            // the same message from the portable path every packed call falls back to
            layer().forward_into(&seq(8, 0.1), &mut [0.0f32; 5]);
            unreachable!();
        }
    }
}

#[test]
#[should_panic(expected = "reduce_heads_row: probs has 10 values, too few for 3 heads of 4 at stride 4")]
fn reduce_heads_row_refuses_short_probabilities() {
    let mut out = vec![0.0f64; 4];
    kernels::reduce_heads_row(&[0.1f32; 10], 4, 3, false, &mut out);
}

#[test]
#[should_panic(expected = "attention: a key row index points past kv")]
fn attention_head_refuses_a_key_row_past_the_keys() {
    let (dh, ni, no) = (8, 3, 2);
    let q = seq(no * dh, 0.1);
    let kv = seq(ni * 2 * dh, 0.1);
    let mut ctx = vec![0.0f32; no * dh];
    let mut kt = Vec::new();
    // key row 3 of a 3-row kv
    unsafe { kernels::attention_head(&q, dh, &kv, 2 * dh, dh, Some(&[0, 1, 3]), None, no, ni, dh, &mut [], ctx.as_mut_ptr(), dh, &mut kt) };
}

#[test]
#[should_panic(expected = "attention: q has 15 values, too few for 2 rows of 8 at stride 8")]
fn attention_scores_refuses_short_queries() {
    let mut out = vec![0.0f32; 6];
    kernels::attention_scores(&seq(15, 0.1), 8, &seq(48, 0.1), 16, None, 2, 3, 8, &mut Vec::new(), &mut out);
}

#[test]
#[should_panic(expected = "standardize_cdf_add: row 5, z 5, u 4")]
fn standardize_cdf_add_refuses_a_short_output() {
    kernels::standardize_cdf_add(&[0.1f32; 5], 0.0, 1.0, &mut [0.0; 5], &mut [0.0; 4]);
}

#[test]
#[should_panic(expected = "cdf_backward_row: du 5, z 4, dz 5")]
fn cdf_backward_row_refuses_a_short_row() {
    kernels::cdf_backward_row(&[0.1f32; 5], &[0.0; 4], 12.0, 1.0, &mut [0.0; 5]);
}

/// `lane_row_mean` (the fused ABT pass's last step) gives the scalar form's bits: every row of
/// a lane-major head sum, key counts with and without a tail of 8, odd head counts.
#[test]
fn lane_row_mean_equals_the_scalar_division() {
    let mut rng = fastrand::Rng::with_seed(3);
    for ni in [1usize, 7, 8, 9, 16, 33, 130] {
        let acc: Vec<f64> = (0..16 * ni + 5).map(|_| rng.f64() * 12.0).collect();
        for heads in [1.0f64, 3.0, 12.0] {
            for r in 0..16 {
                let mut got = vec![f64::NAN; ni];
                kernels::lane_row_mean(&acc, r, heads, &mut got);
                for (j, g) in got.iter().enumerate() {
                    let want = acc[16 * j + r] / heads;
                    assert_eq!(g.to_bits(), want.to_bits(), "ni {ni}, heads {heads}, row {r}, key {j}: {g} vs {want}");
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "lane_row_mean")]
fn lane_row_mean_refuses_a_short_scratch() {
    let acc = vec![0.0f64; 16 * 4 - 1];
    kernels::lane_row_mean(&acc, 0, 12.0, &mut [0.0; 4]);
}

#[test]
#[should_panic(expected = "lane_row_mean")]
fn lane_row_mean_refuses_a_row_past_the_lanes() {
    let acc = vec![0.0f64; 16 * 4];
    kernels::lane_row_mean(&acc, 16, 12.0, &mut [0.0; 4]);
}
