//! A PNG grid that shows which image patches survive token pruning, layer by layer: one row per
//! image, one column per stage (e.g. "input", "layer 1", ...). Kept patches show the image;
//! dropped patches are darkened strongly and tinted.
//!
//! Drawn like [`crate::plot`]: pixels written into an RGB buffer, titles rendered by plotters
//! with the embedded DejaVu Sans font (no system fonts), PNG encoded by the `image` crate and
//! written atomically.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::image::{write_atomic, Image, VisionError};

/// Space between cells and around the grid, in pixels.
pub const GAP: u32 = 6;
/// Title font size in pixels.
pub const TITLE_FONT_PX: u32 = 14;
/// Padding around title text, in pixels.
pub const TITLE_PAD: u32 = 4;
/// A dropped patch pixel becomes `DROPPED_BRIGHTNESS * value + (1 - DROPPED_BRIGHTNESS) * DROPPED_TINT`.
pub const DROPPED_BRIGHTNESS: f32 = 0.25;
/// The tint dropped patches are blended with (RGB in `[0, 1]`, a dark blue-grey).
pub const DROPPED_TINT: [f32; 3] = [0.10, 0.10, 0.16];

const FONT: &str = "sans-serif";
/// Largest grid we draw (pixels), to turn a wrong `scale` into an error rather than an
/// allocation failure.
const MAX_PIXELS: u64 = 1 << 28;

/// Pixel geometry of a patch-survival grid (see [`patch_survival_layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLayout {
    /// PNG width in pixels.
    pub width: u32,
    /// PNG height in pixels.
    pub height: u32,
    /// Width of the row-title band at the left (0 without row titles).
    pub left: u32,
    /// Height of the column-title band at the top (0 without column titles).
    pub top: u32,
    /// Cell width: the widest image times `scale`, or a wider column title.
    pub cell_width: u32,
    /// Cell height: the tallest image times `scale`.
    pub cell_height: u32,
    /// Upscaling factor (nearest neighbour).
    pub scale: u32,
}

impl GridLayout {
    /// Top-left pixel of cell (`row`, `col`).
    pub fn cell_origin(&self, row: usize, col: usize) -> (u32, u32) {
        (self.left + GAP + col as u32 * (self.cell_width + GAP), self.top + GAP + row as u32 * (self.cell_height + GAP))
    }

    /// Top-left pixel of `img` drawn in cell (`row`, `col`): centred horizontally, at the top.
    /// Image pixel `(y, x)` covers `scale x scale` PNG pixels from `origin + (x, y) * scale`.
    pub fn image_origin(&self, row: usize, col: usize, img: &Image) -> (u32, u32) {
        let (x, y) = self.cell_origin(row, col);
        let w = img.width as u32 * self.scale;
        (x + self.cell_width.saturating_sub(w) / 2, y)
    }
}

fn grid_err(msg: String) -> VisionError {
    VisionError::Grid(msg)
}

fn font_size_of(text: &str) -> Result<(u32, u32), VisionError> {
    if text.is_empty() {
        return Ok((0, 0));
    }
    (FONT, TITLE_FONT_PX as f64).into_font().box_size(text).map_err(|e| VisionError::Draw(format!("measuring title {text:?}: {e:?}")))
}

fn ensure_font() -> Result<(), VisionError> {
    crate::plot::ensure_font().map_err(|e| VisionError::Draw(e.to_string()))
}

/// The geometry [`render_patch_survival`] uses for `images` (one row each) and `columns`
/// columns: cells of the largest image times `scale`, [`GAP`] pixels apart and around, a title
/// band on top if any column title is non-empty and on the left if any row title is. Titles
/// are measured with the embedded font. `column_titles` must be empty or have `columns`
/// entries, `row_titles` empty or one per image.
///
/// Errors: [`VisionError::Grid`] for no image, no column, `scale == 0`, mismatched title
/// counts or a grid over 2^28 pixels; [`VisionError::Shape`] for an inconsistent image;
/// [`VisionError::Draw`] if the font cannot be used.
pub fn patch_survival_layout(
    images: &[Image],
    columns: usize,
    column_titles: &[String],
    row_titles: &[String],
    scale: u32,
) -> Result<GridLayout, VisionError> {
    if images.is_empty() {
        return Err(grid_err("no images: expected at least one row".into()));
    }
    if columns == 0 {
        return Err(grid_err("no columns: expected at least one list of kept tokens per image".into()));
    }
    if scale == 0 {
        return Err(grid_err("scale must be at least 1, found 0".into()));
    }
    if !column_titles.is_empty() && column_titles.len() != columns {
        return Err(grid_err(format!("{} column titles for {columns} columns; expected one per column or none", column_titles.len())));
    }
    if !row_titles.is_empty() && row_titles.len() != images.len() {
        return Err(grid_err(format!("{} row titles for {} images; expected one per image or none", row_titles.len(), images.len())));
    }
    for (i, img) in images.iter().enumerate() {
        img.validate(&format!("patch-survival grid image #{i}"))?;
    }
    ensure_font()?;
    let max_w = images.iter().map(|im| im.width as u64).max().unwrap_or(1) * scale as u64;
    let max_h = images.iter().map(|im| im.height as u64).max().unwrap_or(1) * scale as u64;
    let mut cell_w = max_w;
    let mut top = 0u64;
    if column_titles.iter().any(|t| !t.is_empty()) {
        let mut text_h = 0u64;
        for t in column_titles {
            let (w, h) = font_size_of(t)?;
            cell_w = cell_w.max(w as u64 + TITLE_PAD as u64);
            text_h = text_h.max(h as u64);
        }
        top = text_h.max(TITLE_FONT_PX as u64) + 2 * TITLE_PAD as u64;
    }
    let mut left = 0u64;
    if row_titles.iter().any(|t| !t.is_empty()) {
        let mut text_w = 0u64;
        for t in row_titles {
            text_w = text_w.max(font_size_of(t)?.0 as u64);
        }
        left = text_w + 2 * TITLE_PAD as u64;
    }
    let gap = GAP as u64;
    let width = left + gap + columns as u64 * (cell_w + gap);
    let height = top + gap + images.len() as u64 * (max_h + gap);
    if width.saturating_mul(height) > MAX_PIXELS {
        return Err(grid_err(format!(
            "a {width} x {height} pixel grid is too large (at most 2^28 pixels); lower `scale` or pass fewer images"
        )));
    }
    Ok(GridLayout {
        width: width as u32,
        height: height as u32,
        left: left as u32,
        top: top as u32,
        cell_width: cell_w as u32,
        cell_height: max_h as u32,
        scale,
    })
}

/// Draws the patch-survival grid for token pruning on a ViT / DeiT into a PNG at `path`
/// (written atomically: temporary file + rename; the parent folder is created if missing).
///
/// - `images`: raw images (values in `[0, 1]`, 1 or 3 channels), one row each; their height and
///   width must be divisible by `patch`.
/// - `kept[i][j]`: the token indices kept for image `i` at column `j` (e.g. the input `I_l` of
///   layer `l`); every `kept[i]` has the same number of columns. Tokens `0..n_special` are the
///   class / distillation tokens (ignored here); token `n_special + p` is patch `p` in raster
///   order (see [`crate::vision::preprocess::patchify`]).
/// - `column_titles` (one per column) and `row_titles` (one per image) may be empty.
/// - `scale`: each image pixel becomes `scale x scale` PNG pixels (nearest neighbour).
///
/// Kept patches show the image; dropped ones show `0.25 * value + 0.75 *` [`DROPPED_TINT`].
/// The PNG size is given by [`patch_survival_layout`].
///
/// Errors: [`VisionError::Grid`] for mismatched lengths, a token index past the last patch, an
/// image not divisible by `patch`, `patch == 0`; the errors of [`patch_survival_layout`];
/// [`VisionError::Io`] / [`VisionError::Encode`] naming the file.
#[allow(clippy::too_many_arguments)]
pub fn render_patch_survival(
    path: &Path,
    images: &[Image],
    kept: &[Vec<Vec<usize>>],
    column_titles: &[String],
    row_titles: &[String],
    n_special: usize,
    patch: usize,
    scale: u32,
) -> Result<(), VisionError> {
    if kept.len() != images.len() {
        return Err(grid_err(format!("{} kept-token lists for {} images; expected one per image", kept.len(), images.len())));
    }
    let columns = kept.first().map(|k| k.len()).unwrap_or(0);
    if let Some((i, k)) = kept.iter().enumerate().find(|(_, k)| k.len() != columns) {
        return Err(grid_err(format!(
            "image #{i} has {} columns of kept tokens, image #0 has {columns}; expected the same count",
            k.len()
        )));
    }
    if patch == 0 {
        return Err(grid_err("patch size must be at least 1, found 0".into()));
    }
    let layout = patch_survival_layout(images, columns, column_titles, row_titles, scale)?;
    // Per image and column: a kept flag per patch.
    let mut masks: Vec<Vec<Vec<bool>>> = Vec::with_capacity(images.len());
    for (i, (img, cols)) in images.iter().zip(kept).enumerate() {
        if img.height % patch != 0 || img.width % patch != 0 {
            return Err(grid_err(format!("image #{i} is {} x {}, not divisible by the patch size {patch}", img.height, img.width)));
        }
        if img.channels != 1 && img.channels != 3 {
            return Err(grid_err(format!("image #{i} has {} channels; expected 1 (grey) or 3 (RGB)", img.channels)));
        }
        let n_patches = (img.height / patch) * (img.width / patch);
        let mut per_col = Vec::with_capacity(cols.len());
        for (j, tokens) in cols.iter().enumerate() {
            let mut mask = vec![false; n_patches];
            for &t in tokens {
                if t >= n_special + n_patches {
                    return Err(grid_err(format!(
                        "image #{i}, column {j}: token index {t} out of range; expected < {} ({n_special} special tokens + {n_patches} patches)",
                        n_special + n_patches
                    )));
                }
                if t >= n_special {
                    mask[t - n_special] = true;
                }
            }
            per_col.push(mask);
        }
        masks.push(per_col);
    }

    let (w, h) = (layout.width as usize, layout.height as usize);
    let mut buf = vec![255u8; w * h * 3];
    let s = scale as usize;
    for (r, (img, per_col)) in images.iter().zip(&masks).enumerate() {
        let grid_w = img.width / patch;
        for (c, mask) in per_col.iter().enumerate() {
            let (ox, oy) = layout.image_origin(r, c, img);
            let (ox, oy) = (ox as usize, oy as usize);
            for y in 0..img.height {
                for x in 0..img.width {
                    let rgb = if img.channels == 1 {
                        let v = img.get(0, y, x);
                        [v, v, v]
                    } else {
                        [img.get(0, y, x), img.get(1, y, x), img.get(2, y, x)]
                    };
                    let kept = mask[(y / patch) * grid_w + x / patch];
                    let px: [u8; 3] = std::array::from_fn(|k| {
                        let v = rgb[k].clamp(0.0, 1.0);
                        let v = if kept { v } else { DROPPED_BRIGHTNESS * v + (1.0 - DROPPED_BRIGHTNESS) * DROPPED_TINT[k] };
                        (v * 255.0).round() as u8
                    });
                    for dy in 0..s {
                        let row = (oy + y * s + dy) * w;
                        for dx in 0..s {
                            let i = (row + ox + x * s + dx) * 3;
                            buf[i..i + 3].copy_from_slice(&px);
                        }
                    }
                }
            }
        }
    }

    {
        let draw = |e: DrawingAreaErrorKind<_>| VisionError::Draw(e.to_string());
        let root = BitMapBackend::with_buffer(&mut buf, (layout.width, layout.height)).into_drawing_area();
        let centred = (FONT, TITLE_FONT_PX as f64).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        let left_aligned = (FONT, TITLE_FONT_PX as f64).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        if layout.top > 0 {
            for (c, t) in column_titles.iter().enumerate() {
                if t.is_empty() {
                    continue;
                }
                let (x, _) = layout.cell_origin(0, c);
                let pos = ((x + layout.cell_width / 2) as i32, (layout.top / 2 + GAP / 2) as i32);
                root.draw_text(t, &centred, pos).map_err(draw)?;
            }
        }
        if layout.left > 0 {
            for (r, t) in row_titles.iter().enumerate() {
                if t.is_empty() {
                    continue;
                }
                let (_, y) = layout.cell_origin(r, 0);
                let pos = (TITLE_PAD as i32, (y + layout.cell_height / 2) as i32);
                root.draw_text(t, &left_aligned, pos).map_err(draw)?;
            }
        }
        root.present().map_err(draw)?;
    }

    let img = ::image::RgbImage::from_raw(layout.width, layout.height, buf)
        .ok_or_else(|| VisionError::Draw("RGB buffer has the wrong size".into()))?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, ::image::ImageFormat::Png).map_err(|source| VisionError::Encode { path: path.to_path_buf(), source })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| VisionError::Io { path: dir.to_path_buf(), source })?;
    }
    write_atomic(path, png.get_ref())
}
