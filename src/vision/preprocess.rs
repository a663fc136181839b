//! The Hugging Face image-processor pipeline for ViT / DeiT (`ViTImageProcessor`,
//! `DeiTImageProcessor`): resize -> center crop -> rescale -> normalise, configured from a
//! `preprocessor_config.json`; and [`patchify`], the input of the patch embedding.
//!
//! Mirrors `transformers.image_transforms` (`resize`, `center_crop`, `rescale`, `normalize`) and
//! PIL's `ImagingResample` (separable convolution, filter support widened by the downscale
//! factor, so downscaling antialiases). Differences from HF, all below 1/255 before
//! normalisation: HF resizes `uint8` images through PIL and rounds to `uint8` after each pass; we
//! resize in `f32`/`f64` without rounding (values are clamped to `[0, 1]` after each pass, as
//! PIL's 8-bit path clips).

use std::path::Path;

use serde_json::{Map, Value};

use super::image::{write_atomic, Image, VisionError};
pub use super::transforms::{center_crop, normalize, patchify, resize};

/// `IMAGENET_STANDARD_MEAN` (ViT default).
pub const IMAGENET_STANDARD_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// `IMAGENET_STANDARD_STD` (ViT default).
pub const IMAGENET_STANDARD_STD: [f32; 3] = [0.5, 0.5, 0.5];
/// `IMAGENET_DEFAULT_MEAN` (DeiT default).
pub const IMAGENET_DEFAULT_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// `IMAGENET_DEFAULT_STD` (DeiT default).
pub const IMAGENET_DEFAULT_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The rescale factor HF uses to map `uint8` pixels to `[0, 1]`.
pub const DEFAULT_RESCALE_FACTOR: f32 = 1.0 / 255.0;

/// Resampling filter, with PIL's codes as stored in `preprocessor_config.json` (`"resample"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resample {
    /// PIL `NEAREST` (0): the source pixel under the output pixel centre.
    Nearest,
    /// PIL `BILINEAR` (2): triangle filter, support 1 (scaled by the downscale factor).
    Bilinear,
    /// PIL `BICUBIC` (3): Keys cubic with `a = -0.5`, support 2 (scaled by the downscale factor).
    Bicubic,
}

impl Resample {
    /// The filter for a PIL resample code: 0 nearest, 2 bilinear, 3 bicubic; `None` for the
    /// others (1 LANCZOS, 4 BOX, 5 HAMMING), which we do not implement.
    pub fn from_pil_code(code: i64) -> Option<Resample> {
        match code {
            0 => Some(Resample::Nearest),
            2 => Some(Resample::Bilinear),
            3 => Some(Resample::Bicubic),
            _ => None,
        }
    }

    /// PIL's code for this filter.
    pub fn pil_code(self) -> u8 {
        match self {
            Resample::Nearest => 0,
            Resample::Bilinear => 2,
            Resample::Bicubic => 3,
        }
    }
}

/// The resize target of an [`ImageProcessor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// Resize to exactly `height x width` pixels (`{"height": h, "width": w}`, or an int `size`
    /// for ViT/DeiT, which HF reads as a square).
    Exact {
        /// Output rows.
        height: usize,
        /// Output columns.
        width: usize,
    },
    /// Resize so the shorter side is this many pixels, keeping the aspect ratio
    /// (`{"shortest_edge": n}`): the longer side becomes `floor(n * long / short)`, as HF's
    /// `get_resize_output_image_size(default_to_square=False)`.
    ShortestEdge(usize),
}

impl Size {
    /// Output `(height, width)` for an input of `height x width` pixels.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        match *self {
            Size::Exact { height, width } => (height, width),
            Size::ShortestEdge(s) => {
                let (short, long) = (height.min(width).max(1), height.max(width));
                let new_long = (s * long) / short;
                if height <= width {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
        }
    }
}

/// A ViT / DeiT image processor (`transformers` `ViTImageProcessor`, `DeiTImageProcessor`).
///
/// [`ImageProcessor::apply`] runs, in HF's order: resize -> center crop -> rescale -> normalise.
/// Input images are *raw* ([`Image`] values `pixel / 255`, as our reader gives), so the rescale
/// step is expressed relative to `1/255`: `do_rescale` with `rescale_factor = 1/255` (the HF
/// default) multiplies by 1 (the reader already did it; it is never applied twice); another
/// factor `f` multiplies by `f * 255`; `do_rescale = false` multiplies by 255 (HF then feeds the
/// model values in `0..=255`). See [`ImageProcessor::effective_scale`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Whether to resize (`do_resize`).
    pub do_resize: bool,
    /// Resize target (`size`).
    pub size: Size,
    /// Resampling filter (`resample`, PIL code).
    pub resample: Resample,
    /// Whether to center-crop after resizing (`do_center_crop`).
    pub do_center_crop: bool,
    /// Crop `(height, width)` (`crop_size`).
    pub crop_size: (usize, usize),
    /// Whether to rescale (`do_rescale`).
    pub do_rescale: bool,
    /// Rescale factor applied to `uint8` pixels by HF (`rescale_factor`, usually `1/255`).
    pub rescale_factor: f32,
    /// Whether to normalise (`do_normalize`).
    pub do_normalize: bool,
    /// Per-channel mean (`image_mean`); its length is the model's channel count (1 or 3).
    pub image_mean: Vec<f32>,
    /// Per-channel standard deviation (`image_std`), same length as `image_mean`, no zero.
    pub image_std: Vec<f32>,
}

impl Default for ImageProcessor {
    /// [`ImageProcessor::vit_default`].
    fn default() -> Self {
        ImageProcessor::vit_default()
    }
}

/// Which processor class a config names (it decides the defaults of missing keys).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vit,
    Deit,
}

impl ImageProcessor {
    /// `ViTImageProcessor()` defaults: resize to 224 x 224 bilinear, no crop, rescale 1/255,
    /// normalise with mean = std = 0.5 (3 channels).
    pub fn vit_default() -> ImageProcessor {
        ImageProcessor {
            do_resize: true,
            size: Size::Exact { height: 224, width: 224 },
            resample: Resample::Bilinear,
            do_center_crop: false,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: DEFAULT_RESCALE_FACTOR,
            do_normalize: true,
            image_mean: IMAGENET_STANDARD_MEAN.to_vec(),
            image_std: IMAGENET_STANDARD_STD.to_vec(),
        }
    }

    /// `DeiTImageProcessor()` defaults: resize to 256 x 256 bicubic, center crop 224 x 224,
    /// rescale 1/255, normalise with the ImageNet mean/std (3 channels).
    pub fn deit_default() -> ImageProcessor {
        ImageProcessor {
            do_resize: true,
            size: Size::Exact { height: 256, width: 256 },
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: DEFAULT_RESCALE_FACTOR,
            do_normalize: true,
            image_mean: IMAGENET_DEFAULT_MEAN.to_vec(),
            image_std: IMAGENET_DEFAULT_STD.to_vec(),
        }
    }

    fn defaults(kind: Kind) -> ImageProcessor {
        match kind {
            Kind::Vit => ImageProcessor::vit_default(),
            Kind::Deit => ImageProcessor::deit_default(),
        }
    }

    /// The processor for a model trained on `image_size x image_size` inputs with `channels`
    /// channels: exact bilinear resize to `image_size`, no crop, rescale 1/255, normalise with
    /// `mean` / `std` (each of length `channels`, or 1 to use the same value for every channel).
    /// Errors ([`VisionError::Config`]) on a zero size or channel count, a length mismatch or a
    /// zero / non-finite std.
    pub fn for_model(image_size: usize, channels: usize, mean: &[f32], std: &[f32]) -> Result<ImageProcessor, VisionError> {
        let err = |field: &str, message: String| VisionError::Config {
            source_name: "ImageProcessor::for_model".into(),
            field: field.into(),
            message,
        };
        if channels == 0 {
            return Err(err("channels", "expected at least 1 channel, found 0".into()));
        }
        let widen = |v: &[f32], field: &str| -> Result<Vec<f32>, VisionError> {
            match v.len() {
                1 => Ok(vec![v[0]; channels]),
                n if n == channels => Ok(v.to_vec()),
                n => Err(err(field, format!("expected 1 or {channels} values (one per channel), found {n}"))),
            }
        };
        let p = ImageProcessor {
            do_resize: true,
            size: Size::Exact { height: image_size, width: image_size },
            resample: Resample::Bilinear,
            do_center_crop: false,
            crop_size: (image_size, image_size),
            do_rescale: true,
            rescale_factor: DEFAULT_RESCALE_FACTOR,
            do_normalize: true,
            image_mean: widen(mean, "image_mean")?,
            image_std: widen(std, "image_std")?,
        };
        p.validate_named("ImageProcessor::for_model")?;
        Ok(p)
    }

    /// Parses a `preprocessor_config.json` (see [`ImageProcessor::from_json_str`]); errors name
    /// the file.
    pub fn from_file(path: &Path) -> Result<ImageProcessor, VisionError> {
        let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io { path: path.to_path_buf(), source })?;
        ImageProcessor::parse(&text, &path.display().to_string())
    }

    /// Parses a `preprocessor_config.json` as written by `transformers` for `ViTImageProcessor`
    /// (`"size": {"height", "width"}`) and `DeiTImageProcessor` (plus `"crop_size"`,
    /// `"do_center_crop"`), and the older feature-extractor forms (`"size": 224` meaning a
    /// square, `"size": {"shortest_edge": n}`, `"crop_size": 224`, a `feature_extractor_type`
    /// key). Missing keys take the defaults of the class named by `image_processor_type` /
    /// `feature_extractor_type` (DeiT if the name contains `DeiT`, else ViT); unknown keys are
    /// ignored; `null` counts as missing. A single number for `image_mean` / `image_std` is used
    /// for every channel (3, or the other list's length).
    ///
    /// Errors: [`VisionError::Json`] for invalid JSON, [`VisionError::Config`] naming the field
    /// for a wrong type, an unsupported `resample` code (supported: 0, 2, 3) or size form, or
    /// invalid values (zero sizes, mean/std length mismatch, zero std).
    pub fn from_json_str(json: &str) -> Result<ImageProcessor, VisionError> {
        ImageProcessor::parse(json, "<string>")
    }

    fn parse(json: &str, name: &str) -> Result<ImageProcessor, VisionError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| VisionError::Json { source_name: name.into(), message: e.to_string() })?;
        let map = value.as_object().ok_or_else(|| VisionError::Json {
            source_name: name.into(),
            message: format!("expected a JSON object, found {}", json_kind(&value)),
        })?;
        let f = Fields { name, map };
        let class = f.string("image_processor_type")?.or(f.string("feature_extractor_type")?).unwrap_or_default();
        let kind = if class.contains("DeiT") { Kind::Deit } else { Kind::Vit };
        let d = ImageProcessor::defaults(kind);
        let mean = f.floats("image_mean")?;
        let std = f.floats("image_std")?;
        // A scalar mean/std applies to every channel.
        let channels = match (&mean, &std) {
            (Some(Floats::List(m)), _) => m.len(),
            (_, Some(Floats::List(s))) => s.len(),
            _ => d.image_mean.len(),
        };
        let resolve = |v: Option<Floats>, default: &[f32]| match v {
            None => default.to_vec(),
            Some(Floats::Scalar(x)) => vec![x; channels],
            Some(Floats::List(l)) => l,
        };
        let resample = match f.int("resample")? {
            None => d.resample,
            Some(code) => Resample::from_pil_code(code).ok_or_else(|| {
                f.err("resample", format!("unsupported PIL resample code {code}; expected 0 (nearest), 2 (bilinear) or 3 (bicubic)"))
            })?,
        };
        let p = ImageProcessor {
            do_resize: f.bool("do_resize")?.unwrap_or(d.do_resize),
            size: f.size("size")?.unwrap_or(d.size),
            resample,
            do_center_crop: f.bool("do_center_crop")?.unwrap_or(d.do_center_crop),
            crop_size: f.crop("crop_size")?.unwrap_or(d.crop_size),
            do_rescale: f.bool("do_rescale")?.unwrap_or(d.do_rescale),
            rescale_factor: f.float("rescale_factor")?.unwrap_or(d.rescale_factor),
            do_normalize: f.bool("do_normalize")?.unwrap_or(d.do_normalize),
            image_mean: resolve(mean, &d.image_mean),
            image_std: resolve(std, &d.image_std),
        };
        p.validate_named(name)?;
        Ok(p)
    }

    /// Checks the values: sizes > 0, `image_mean` and `image_std` of equal non-zero length,
    /// finite, std non-zero, `rescale_factor` finite and > 0. Errors ([`VisionError::Config`])
    /// name the field.
    pub fn validate(&self) -> Result<(), VisionError> {
        self.validate_named("ImageProcessor")
    }

    fn validate_named(&self, name: &str) -> Result<(), VisionError> {
        let err = |field: &str, message: String| VisionError::Config { source_name: name.into(), field: field.into(), message };
        match self.size {
            Size::Exact { height, width } if height == 0 || width == 0 => {
                return Err(err("size", format!("expected a height and width > 0, found {height} x {width}")))
            }
            Size::ShortestEdge(0) => return Err(err("size", "expected shortest_edge > 0, found 0".into())),
            _ => {}
        }
        if self.crop_size.0 == 0 || self.crop_size.1 == 0 {
            return Err(err("crop_size", format!("expected a height and width > 0, found {} x {}", self.crop_size.0, self.crop_size.1)));
        }
        if !(self.rescale_factor.is_finite() && self.rescale_factor > 0.0) {
            return Err(err("rescale_factor", format!("expected a finite value > 0, found {}", self.rescale_factor)));
        }
        if self.image_mean.is_empty() {
            return Err(err("image_mean", "expected one value per channel, found an empty list".into()));
        }
        if self.image_mean.len() != self.image_std.len() {
            return Err(err(
                "image_std",
                format!("expected as many values as image_mean ({}), found {}", self.image_mean.len(), self.image_std.len()),
            ));
        }
        if let Some(m) = self.image_mean.iter().find(|m| !m.is_finite()) {
            return Err(err("image_mean", format!("expected finite values, found {m}")));
        }
        if let Some(s) = self.image_std.iter().find(|s| !s.is_finite() || **s == 0.0) {
            return Err(err("image_std", format!("expected finite non-zero values, found {s}")));
        }
        Ok(())
    }

    /// The config as `transformers` writes a `ViTImageProcessor` (keys sorted; sizes as
    /// `{"height", "width"}` or `{"shortest_edge"}`), plus `do_center_crop` / `crop_size`.
    /// `image_processor_type` is `"DeiTImageProcessor"` when center crop is on (the ViT class
    /// would ignore it), else `"ViTImageProcessor"`. [`ImageProcessor::from_json_str`] reads it
    /// back to an equal processor.
    pub fn to_json_value(&self) -> Value {
        let hw = |h: usize, w: usize| {
            let mut m = Map::new();
            m.insert("height".into(), h.into());
            m.insert("width".into(), w.into());
            Value::Object(m)
        };
        let size = match self.size {
            Size::Exact { height, width } => hw(height, width),
            Size::ShortestEdge(s) => {
                let mut m = Map::new();
                m.insert("shortest_edge".into(), s.into());
                Value::Object(m)
            }
        };
        let rescale = if self.rescale_factor == DEFAULT_RESCALE_FACTOR { json_f64(1.0 / 255.0) } else { json_f32(self.rescale_factor) };
        let class = if self.do_center_crop { "DeiTImageProcessor" } else { "ViTImageProcessor" };
        let mut m = Map::new();
        m.insert("crop_size".into(), hw(self.crop_size.0, self.crop_size.1));
        m.insert("do_center_crop".into(), self.do_center_crop.into());
        m.insert("do_normalize".into(), self.do_normalize.into());
        m.insert("do_rescale".into(), self.do_rescale.into());
        m.insert("do_resize".into(), self.do_resize.into());
        m.insert("image_mean".into(), Value::Array(self.image_mean.iter().map(|&v| json_f32(v)).collect()));
        m.insert("image_processor_type".into(), class.into());
        m.insert("image_std".into(), Value::Array(self.image_std.iter().map(|&v| json_f32(v)).collect()));
        m.insert("resample".into(), self.resample.pil_code().into());
        m.insert("rescale_factor".into(), rescale);
        m.insert("size".into(), size);
        Value::Object(m)
    }

    /// [`ImageProcessor::to_json_value`] as pretty-printed JSON text.
    pub fn to_json(&self) -> String {
        // Serialising a Value of plain maps, numbers and strings cannot fail.
        serde_json::to_string_pretty(&self.to_json_value()).unwrap_or_default()
    }

    /// Writes [`ImageProcessor::to_json`] to `path` atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), VisionError> {
        let mut text = self.to_json();
        text.push('\n');
        write_atomic(path, text.as_bytes())
    }

    /// Channels of the processed images: `image_mean.len()`.
    pub fn channels(&self) -> usize {
        self.image_mean.len()
    }

    /// Output `(height, width)` of [`ImageProcessor::apply`] for an input of `height x width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let (h, w) = if self.do_resize { self.size.output_size(height, width) } else { (height, width) };
        if self.do_center_crop {
            self.crop_size
        } else {
            (h, w)
        }
    }

    /// The factor applied to raw (`pixel / 255`) values in the rescale step: 1 for
    /// `do_rescale` with `rescale_factor` = 1/255 (relative tolerance 1e-4), `rescale_factor *
    /// 255` for another factor, 255 without `do_rescale`.
    pub fn effective_scale(&self) -> f32 {
        if !self.do_rescale {
            255.0
        } else if (self.rescale_factor * 255.0 - 1.0).abs() < 1e-4 {
            1.0
        } else {
            self.rescale_factor * 255.0
        }
    }

    /// Preprocesses one raw image (values in `[0, 1]`, any size, 1 or 3 channels) into the model
    /// input `[C, H, W]` with `C = image_mean.len()` and `(H, W)` from
    /// [`ImageProcessor::output_size`]: convert channels ([`Image::to_channels`]) -> resize
    /// ([`resize`]) -> center crop ([`center_crop`]) -> rescale
    /// ([`ImageProcessor::effective_scale`]) -> normalise (`(x - mean[c]) / std[c]`).
    ///
    /// Errors: [`VisionError::Shape`] if the image is inconsistent or its channel count cannot be
    /// converted to `C` (e.g. 2 channels for a 3-entry mean); [`VisionError::Config`] if the
    /// processor is invalid.
    pub fn apply(&self, img: &Image) -> Result<Image, VisionError> {
        img.validate("ImageProcessor::apply input")?;
        self.validate()?;
        let c = self.channels();
        let mut out = img.to_channels(c).map_err(|_| VisionError::Shape {
            what: format!("ImageProcessor::apply channels (image_mean/image_std have {c} entries)"),
            expected: if c == 1 || c == 3 { "an image with 1 or 3 channels".to_string() } else { format!("an image with {c} channels") },
            found: format!("{} channels", img.channels),
        })?;
        if self.do_resize {
            let (h, w) = self.size.output_size(out.height, out.width);
            out = resize(&out, h, w, self.resample)?;
        }
        if self.do_center_crop {
            out = center_crop(&out, self.crop_size.0, self.crop_size.1)?;
        }
        let scale = self.effective_scale();
        if scale != 1.0 {
            out.data.iter_mut().for_each(|v| *v *= scale);
        }
        if self.do_normalize {
            out = normalize(&out, &self.image_mean, &self.image_std)?;
        }
        Ok(out)
    }

    /// [`ImageProcessor::apply`] on every image (in parallel), stacked into `[N, C, H, W]`
    /// row-major. Errors like `apply` (naming the image index), or if the outputs differ in size
    /// (only possible with a `shortest_edge` resize and no crop).
    pub fn apply_batch(&self, images: &[Image]) -> Result<Vec<f32>, VisionError> {
        use rayon::prelude::*;
        let outs: Vec<Result<Image, VisionError>> = images.par_iter().map(|im| self.apply(im)).collect();
        let mut data = Vec::new();
        let mut first: Option<(usize, usize, usize)> = None;
        for (i, r) in outs.into_iter().enumerate() {
            let im = r.map_err(|e| VisionError::Shape {
                what: format!("ImageProcessor::apply_batch image #{i}"),
                expected: "a valid image".into(),
                found: e.to_string(),
            })?;
            let dims = (im.channels, im.height, im.width);
            match first {
                None => first = Some(dims),
                Some(f) if f != dims => {
                    return Err(VisionError::Shape {
                        what: format!("ImageProcessor::apply_batch image #{i}"),
                        expected: format!("output {f:?} like image #0"),
                        found: format!("{dims:?}"),
                    })
                }
                _ => {}
            }
            data.extend_from_slice(&im.data);
        }
        Ok(data)
    }
}

/// A JSON number holding exactly the shortest decimal of an `f32` (so `0.485f32` is written
/// `0.485`, and reads back to the same `f32`).
fn json_f32(v: f32) -> Value {
    json_f64(format!("{v}").parse::<f64>().unwrap_or(v as f64))
}

fn json_f64(v: f64) -> Value {
    serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

enum Floats {
    Scalar(f32),
    List(Vec<f32>),
}

/// Typed access to the keys of a config object, with errors naming the file and field.
struct Fields<'a> {
    name: &'a str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: String) -> VisionError {
        VisionError::Config { source_name: self.name.into(), field: field.into(), message }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, VisionError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.err(key, format!("expected true or false, found {}", json_kind(v)))))
            .transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>, VisionError> {
        self.get(key)
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.err(key, format!("expected a string, found {}", json_kind(v)))))
            .transpose()
    }

    fn float(&self, key: &str) -> Result<Option<f32>, VisionError> {
        self.get(key)
            .map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| self.err(key, format!("expected a number, found {}", json_kind(v)))))
            .transpose()
    }

    fn int(&self, key: &str) -> Result<Option<i64>, VisionError> {
        self.get(key).map(|v| v.as_i64().ok_or_else(|| self.err(key, format!("expected an integer, found {v}")))).transpose()
    }

    fn floats(&self, key: &str) -> Result<Option<Floats>, VisionError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        if let Some(x) = v.as_f64() {
            return Ok(Some(Floats::Scalar(x as f32)));
        }
        let arr =
            v.as_array().ok_or_else(|| self.err(key, format!("expected a list of numbers (one per channel), found {}", json_kind(v))))?;
        let list = arr
            .iter()
            .enumerate()
            .map(|(i, x)| x.as_f64().map(|x| x as f32).ok_or_else(|| self.err(key, format!("entry {i}: expected a number, found {x}"))))
            .collect::<Result<Vec<f32>, _>>()?;
        Ok(Some(Floats::List(list)))
    }

    fn dim(&self, key: &str, obj: &Map<String, Value>, sub: &str) -> Result<Option<usize>, VisionError> {
        obj.get(sub)
            .filter(|v| !v.is_null())
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.err(&format!("{key}.{sub}"), format!("expected a positive integer, found {v}")))
            })
            .transpose()
    }

    /// `size`: an int (square), `{"height", "width"}` or `{"shortest_edge"}`.
    fn size(&self, key: &str) -> Result<Option<Size>, VisionError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        if let Some(n) = v.as_u64() {
            return Ok(Some(Size::Exact { height: n as usize, width: n as usize }));
        }
        let expected = "expected an integer, {\"height\": h, \"width\": w} or {\"shortest_edge\": n}";
        let obj = v.as_object().ok_or_else(|| self.err(key, format!("{expected}, found {v}")))?;
        let (h, w) = (self.dim(key, obj, "height")?, self.dim(key, obj, "width")?);
        let (short, long) = (self.dim(key, obj, "shortest_edge")?, self.dim(key, obj, "longest_edge")?);
        match (h, w, short, long) {
            (Some(height), Some(width), None, None) => Ok(Some(Size::Exact { height, width })),
            (None, None, Some(s), None) => Ok(Some(Size::ShortestEdge(s))),
            (None, None, Some(_), Some(_)) | (None, None, None, Some(_)) => {
                Err(self.err(key, format!("longest_edge is not supported; {expected}, found {v}")))
            }
            _ => Err(self.err(key, format!("{expected}, found {v}"))),
        }
    }

    /// `crop_size`: an int (square) or `{"height", "width"}`.
    fn crop(&self, key: &str) -> Result<Option<(usize, usize)>, VisionError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        if let Some(n) = v.as_u64() {
            return Ok(Some((n as usize, n as usize)));
        }
        let expected = "expected an integer or {\"height\": h, \"width\": w}";
        let obj = v.as_object().ok_or_else(|| self.err(key, format!("{expected}, found {v}")))?;
        match (self.dim(key, obj, "height")?, self.dim(key, obj, "width")?) {
            (Some(h), Some(w)) => Ok(Some((h, w))),
            _ => Err(self.err(key, format!("{expected}, found {v}"))),
        }
    }
}
