//! Image transforms of the HF image-processor pipeline: resampling as PIL's `ImagingResample`
//! ([`resize`]), [`center_crop`], [`normalize`], and [`patchify`] (the patch embedding's input).

use super::image::{Image, VisionError};
use super::preprocess::Resample;

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first input index and normalised weights (PIL `precompute_coeffs`).
fn coefficients(in_size: usize, out_size: usize, filter: fn(f64) -> f64, support: f64) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `(int)` in C truncates towards zero; the max(0) makes that a floor here.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax.max(xmin)).map(|x| filter((x as f64 - center + 0.5) / filterscale)).collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (xmin, w)
        })
        .collect()
}

/// Nearest source index per output index: `floor((xx + 0.5) * in / out)` (PIL's affine nearest).
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let scale = in_size as f64 / out_size as f64;
    (0..out_size).map(|xx| (((xx as f64 + 0.5) * scale).floor() as usize).min(in_size - 1)).collect()
}

/// Resizes `img` to `height x width` (`[C, height, width]`) as PIL's `Image.resize`: separable,
/// horizontal pass then vertical, each output pixel a normalised weighted sum of the input
/// pixels whose centres fall in the filter support around its centre. When downscaling by `s`
/// the filter (triangle for bilinear, Keys cubic `a = -0.5` for bicubic) is stretched by `s`, so
/// it averages (antialiases) like PIL rather than sampling like `align_corners=False`
/// interpolation. Values are clamped to `[0, 1]` after each pass (PIL's 8-bit clipping; only
/// bicubic can overshoot). Nearest takes input pixel `floor((i + 0.5) * in / out)`. Equal
/// sizes return a copy.
///
/// Errors: [`VisionError::Shape`] for an inconsistent image or a zero output size.
pub fn resize(img: &Image, height: usize, width: usize, resample: Resample) -> Result<Image, VisionError> {
    img.validate("resize input")?;
    if height == 0 || width == 0 {
        return Err(VisionError::Shape {
            what: "resize output size".into(),
            expected: "height and width > 0".into(),
            found: format!("{height} x {width}"),
        });
    }
    let (c, h, w) = (img.channels, img.height, img.width);
    if (h, w) == (height, width) {
        return Ok(img.clone());
    }
    if resample == Resample::Nearest {
        let (ys, xs) = (nearest_indices(h, height), nearest_indices(w, width));
        let mut data = Vec::with_capacity(c * height * width);
        for ch in 0..c {
            let plane = img.plane(ch);
            for &y in &ys {
                data.extend(xs.iter().map(|&x| plane[y * w + x]));
            }
        }
        return Image::new(c, height, width, data);
    }
    let (filter, support): (fn(f64) -> f64, f64) = match resample {
        Resample::Bilinear => (bilinear_filter, 1.0),
        _ => (bicubic_filter, 2.0),
    };
    let clamp = |v: f64| v.clamp(0.0, 1.0) as f32;
    // Horizontal pass: [c, h, w] -> [c, h, width].
    let horiz = if w != width {
        let k = coefficients(w, width, filter, support);
        let mut out = Vec::with_capacity(c * h * width);
        for row in img.data.chunks_exact(w) {
            out.extend(k.iter().map(|(x0, ws)| clamp(ws.iter().zip(&row[*x0..]).map(|(wt, &v)| wt * v as f64).sum())));
        }
        out
    } else {
        img.data.clone()
    };
    // Vertical pass: [c, h, width] -> [c, height, width].
    let data = if h != height {
        let k = coefficients(h, height, filter, support);
        let mut out = vec![0.0f32; c * height * width];
        let mut acc = vec![0.0f64; width];
        for ch in 0..c {
            let plane = &horiz[ch * h * width..(ch + 1) * h * width];
            for (yy, (y0, ws)) in k.iter().enumerate() {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for (j, wt) in ws.iter().enumerate() {
                    let row = &plane[(y0 + j) * width..(y0 + j + 1) * width];
                    acc.iter_mut().zip(row).for_each(|(a, &v)| *a += wt * v as f64);
                }
                let dst = &mut out[(ch * height + yy) * width..(ch * height + yy + 1) * width];
                dst.iter_mut().zip(&acc).for_each(|(d, &a)| *d = clamp(a));
            }
        }
        out
    } else {
        horiz
    };
    Image::new(c, height, width, data)
}

/// Cuts the centred `height x width` window, as HF's `center_crop`: the window's top-left is
/// `(top, left) = ((H - height) // 2, (W - width) // 2)` with Python's floor division, so an odd
/// margin leaves the extra row/column at the bottom/right. A window larger than the image is
/// padded with zeros (the same formula, negative offsets: the image sits centred, the extra
/// padding row/column at the top/left, as HF's `ceil` padding). Output `[C, height, width]`.
///
/// Errors: [`VisionError::Shape`] for an inconsistent image or a zero crop size.
pub fn center_crop(img: &Image, height: usize, width: usize) -> Result<Image, VisionError> {
    img.validate("center_crop input")?;
    if height == 0 || width == 0 {
        return Err(VisionError::Shape {
            what: "center_crop size".into(),
            expected: "height and width > 0".into(),
            found: format!("{height} x {width}"),
        });
    }
    let (c, h, w) = (img.channels as i64, img.height as i64, img.width as i64);
    let top = (h - height as i64).div_euclid(2);
    let left = (w - width as i64).div_euclid(2);
    let mut data = vec![0.0f32; img.channels * height * width];
    for ch in 0..c {
        for y in 0..height as i64 {
            let sy = y + top;
            if !(0..h).contains(&sy) {
                continue;
            }
            for x in 0..width as i64 {
                let sx = x + left;
                if (0..w).contains(&sx) {
                    data[((ch * height as i64 + y) * width as i64 + x) as usize] = img.data[((ch * h + sy) * w + sx) as usize];
                }
            }
        }
    }
    Image::new(img.channels, height, width, data)
}

/// `(x - mean[c]) / std[c]` per channel. Errors: [`VisionError::Shape`] unless `mean` and `std`
/// have one entry per channel.
pub fn normalize(img: &Image, mean: &[f32], std: &[f32]) -> Result<Image, VisionError> {
    img.validate("normalize input")?;
    if mean.len() != img.channels || std.len() != img.channels {
        return Err(VisionError::Shape {
            what: "normalize mean/std".into(),
            expected: format!("{} values each (one per channel)", img.channels),
            found: format!("{} mean and {} std values", mean.len(), std.len()),
        });
    }
    let n = img.height * img.width;
    let mut out = img.clone();
    for (c, plane) in out.data.chunks_exact_mut(n).enumerate() {
        let (m, s) = (mean[c], std[c]);
        plane.iter_mut().for_each(|v| *v = (*v - m) / s);
    }
    Ok(out)
}

/// Splits a `[C, H, W]` image into non-overlapping `patch x patch` patches, returned as
/// `[num_patches, C * patch * patch]` row-major with `num_patches = (H / patch) * (W / patch)`.
/// Patches are in raster order (patch row, then patch column: patch `i` is token `i` after the
/// class/distillation tokens); inside a patch the order is `(c, ky, kx)`, the flattening of a
/// conv weight `[d, C, p, p]`, so `patches @ W.reshape(d, C*p*p)^T + b` equals HF's
/// `patch_embeddings.projection` (a `Conv2d` with kernel and stride `p`) followed by
/// `flatten(2).transpose(1, 2)`.
///
/// Errors: [`VisionError::Shape`] if `patch` is 0, `H` or `W` is not divisible by it, or the
/// image is inconsistent.
pub fn patchify(img: &Image, patch: usize) -> Result<Vec<f32>, VisionError> {
    img.validate("patchify input")?;
    if patch == 0 || !img.height.is_multiple_of(patch) || !img.width.is_multiple_of(patch) {
        return Err(VisionError::Shape {
            what: "patchify".into(),
            expected: format!("height and width divisible by the patch size {patch} (> 0)"),
            found: format!("an image of {} x {}", img.height, img.width),
        });
    }
    let (c, h, w, p) = (img.channels, img.height, img.width, patch);
    let (gh, gw) = (h / p, w / p);
    let mut out = Vec::with_capacity(c * h * w);
    for pr in 0..gh {
        for pc in 0..gw {
            for ch in 0..c {
                for ky in 0..p {
                    let start = (ch * h + pr * p + ky) * w + pc * p;
                    out.extend_from_slice(&img.data[start..start + p]);
                }
            }
        }
    }
    Ok(out)
}
