//! Float images (`[channels, height, width]`, values in `[0, 1]`), the image reader (PNG, JPEG),
//! and the image-folder data set (torchvision `ImageFolder` layout).
//!
//! A *raw* image holds `pixel / 255` (or `pixel / 65535` for 16-bit files) in `[0, 1]`: the
//! reader already does the `1/255` rescale that Hugging Face image processors apply, so
//! [`crate::vision::preprocess::ImageProcessor`] does not apply it a second time.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::idx::LabelledImages;

/// Errors reading, converting, preprocessing and drawing images. Each names the file, the field
/// or the shape that was wrong, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// A file or directory could not be read or written.
    #[error("cannot read or write {}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Underlying error (printed by error chains, e.g. `anyhow`'s `{:#}`).
        #[source]
        source: std::io::Error,
    },
    /// The file is not a decodable PNG / JPEG (corrupt, truncated or another format).
    #[error("{}: cannot decode image (expected a PNG or JPEG file)", .path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Underlying error (printed by error chains).
        #[source]
        source: ::image::ImageError,
    },
    /// The decoded image has a colour layout we do not convert.
    #[error("{}: unsupported colour type {color}; expected grey, grey+alpha, RGB or RGBA", .path.display())]
    UnsupportedColor {
        /// The file.
        path: PathBuf,
        /// The colour type as the `image` crate names it.
        color: String,
    },
    /// An image-folder root is missing or is not a directory.
    #[error("{}: image folder not found or not a directory (expected ROOT/<class>/<image>.png|jpg|jpeg)", .path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// An image-folder root has no (non-hidden) class sub-folder.
    #[error("{}: no class folders found (expected one sub-folder per class: ROOT/<class>/<image>.png|jpg|jpeg)", .root.display())]
    NoClasses {
        /// The root.
        root: PathBuf,
    },
    /// A class folder holds no PNG / JPEG file.
    #[error("{}: class folder '{class}' holds no image (.png, .jpg or .jpeg); add images or remove the folder", .path.display())]
    EmptyClass {
        /// The class name (folder name).
        class: String,
        /// The class folder.
        path: PathBuf,
    },
    /// An image has a shape that does not fit the operation.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// What was being checked (e.g. `"Image::from_gray_u8 data"`).
        what: String,
        /// The expected shape or value.
        expected: String,
        /// The shape or value found.
        found: String,
    },
    /// No channel conversion exists between these counts.
    #[error("cannot convert an image with {from} channel(s) to {to} channel(s); supported: 1 -> 3 (replicate), 3 -> 1 (luma 0.299/0.587/0.114), or equal counts")]
    Channels {
        /// Channels of the image.
        from: usize,
        /// Channels asked for.
        to: usize,
    },
    /// A preprocessor config field is missing its expected form or value.
    #[error("{source_name}: field `{field}`: {message}")]
    Config {
        /// The config file (or `<string>` for [`crate::vision::preprocess::ImageProcessor::from_json_str`]).
        source_name: String,
        /// The JSON field.
        field: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A preprocessor config is not valid JSON (or not a JSON object).
    #[error("{source_name}: not a valid preprocessor_config.json: {message}")]
    Json {
        /// The config file (or `<string>`).
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// Bad arguments to the patch-survival grid (lengths that do not match, indices out of range).
    #[error("patch-survival grid: {0}")]
    Grid(String),
    /// The embedded font could not be registered, or plotters failed to draw text.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// PNG encoding failed.
    #[error("{}: encoding PNG failed", .path.display())]
    Encode {
        /// The output file.
        path: PathBuf,
        /// Underlying error.
        source: ::image::ImageError,
    },
}

fn shape_err(what: &str, expected: impl ToString, found: impl ToString) -> VisionError {
    VisionError::Shape { what: what.to_string(), expected: expected.to_string(), found: found.to_string() }
}

/// A float image, channel-major: `data[(c * height + y) * width + x]`, shape
/// `[channels, height, width]`.
///
/// Raw images (from [`read_image`], [`Image::from_gray_u8`], [`images_from_idx`]) hold
/// `pixel / 255` in `[0, 1]`; preprocessed images ([`crate::vision::preprocess::ImageProcessor::apply`])
/// hold normalised values.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Number of channels (1 = grey, 3 = RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `channels * height * width` values, CHW order.
    pub data: Vec<f32>,
}

impl Image {
    /// An image from CHW data. Errors ([`VisionError::Shape`]) if `data.len()` is not
    /// `channels * height * width` or any dimension is zero.
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Image, VisionError> {
        if channels == 0 || height == 0 || width == 0 {
            return Err(shape_err(
                "Image::new dimensions",
                "channels, height and width all > 0",
                format!("[{channels}, {height}, {width}]"),
            ));
        }
        let n = channels.checked_mul(height).and_then(|n| n.checked_mul(width));
        if n != Some(data.len()) {
            return Err(shape_err(
                "Image::new data length",
                format!("{channels} x {height} x {width} values"),
                format!("{} values", data.len()),
            ));
        }
        Ok(Image { channels, height, width, data })
    }

    /// A constant image `[channels, height, width]` filled with `value`. Errors like [`Image::new`].
    pub fn filled(channels: usize, height: usize, width: usize, value: f32) -> Result<Image, VisionError> {
        let n = channels.checked_mul(height).and_then(|n| n.checked_mul(width)).ok_or_else(|| {
            shape_err("Image::filled dimensions", "a size that fits in memory", format!("[{channels}, {height}, {width}]"))
        })?;
        Image::new(channels, height, width, vec![value; n])
    }

    /// A 1-channel image from `height * width` row-major bytes; each value becomes `byte / 255`.
    /// Errors if the length does not match or a dimension is zero.
    pub fn from_gray_u8(height: usize, width: usize, pixels: &[u8]) -> Result<Image, VisionError> {
        if height.checked_mul(width) != Some(pixels.len()) {
            return Err(shape_err(
                "Image::from_gray_u8 data length",
                format!("{height} x {width} = {} bytes", height.saturating_mul(width)),
                format!("{} bytes", pixels.len()),
            ));
        }
        Image::new(1, height, width, pixels.iter().map(|&p| p as f32 / 255.0).collect())
    }

    /// A 3-channel image from `height * width * 3` interleaved (HWC, RGB) bytes; each value
    /// becomes `byte / 255`. Errors if the length does not match or a dimension is zero.
    pub fn from_rgb_u8(height: usize, width: usize, pixels: &[u8]) -> Result<Image, VisionError> {
        let expected = height.checked_mul(width).and_then(|n| n.checked_mul(3));
        if expected != Some(pixels.len()) {
            return Err(shape_err(
                "Image::from_rgb_u8 data length",
                format!("{height} x {width} x 3 bytes"),
                format!("{} bytes", pixels.len()),
            ));
        }
        Ok(from_interleaved(height, width, 3, pixels, |p| p as f32 / 255.0))
    }

    /// Checks that the (public) fields agree: every dimension > 0 and
    /// `data.len() == channels * height * width`. `what` names the caller in the error.
    pub fn validate(&self, what: &str) -> Result<(), VisionError> {
        let n = self.channels.checked_mul(self.height).and_then(|n| n.checked_mul(self.width));
        if self.channels == 0 || self.height == 0 || self.width == 0 || n != Some(self.data.len()) {
            return Err(shape_err(
                what,
                "an image with channels, height, width > 0 and channels * height * width values",
                format!("[{}, {}, {}] with {} values", self.channels, self.height, self.width, self.data.len()),
            ));
        }
        Ok(())
    }

    /// Values of channel `c` (`height * width`, row-major). Panics if `c >= channels`.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }

    /// The value at channel `c`, row `y`, column `x`. Panics when out of range.
    pub fn get(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// This image with `channels` channels: the same image when equal; 1 -> 3 replicates the grey
    /// plane; 3 -> 1 takes the luma `0.299 R + 0.587 G + 0.114 B` (ITU-R 601-2, as PIL's `"L"`
    /// conversion). Any other pair is [`VisionError::Channels`].
    pub fn to_channels(&self, channels: usize) -> Result<Image, VisionError> {
        match (self.channels, channels) {
            (a, b) if a == b => Ok(self.clone()),
            (1, 3) => {
                let mut data = Vec::with_capacity(self.data.len() * 3);
                for _ in 0..3 {
                    data.extend_from_slice(&self.data);
                }
                Ok(Image { channels: 3, height: self.height, width: self.width, data })
            }
            (3, 1) => {
                let (r, g, b) = (self.plane(0), self.plane(1), self.plane(2));
                let data = r.iter().zip(g).zip(b).map(|((&r, &g), &b)| 0.299 * r + 0.587 * g + 0.114 * b).collect();
                Ok(Image { channels: 1, height: self.height, width: self.width, data })
            }
            (from, to) => Err(VisionError::Channels { from, to }),
        }
    }
}

/// HWC interleaved samples -> CHW floats.
fn from_interleaved<T: Copy>(height: usize, width: usize, channels: usize, samples: &[T], f: impl Fn(T) -> f32) -> Image {
    let n = height * width;
    let mut data = vec![0.0f32; n * channels];
    for (i, px) in samples.chunks_exact(channels).enumerate() {
        for (c, &s) in px.iter().enumerate() {
            data[c * n + i] = f(s);
        }
    }
    Image { channels, height, width, data }
}

/// Every image of an IDX data set (e.g. Fashion-MNIST) as a 1-channel raw [`Image`]
/// (`[1, rows, cols]`, `byte / 255`), in file order. The labels stay in `set.labels`.
pub fn images_from_idx(set: &LabelledImages) -> Vec<Image> {
    let (rows, cols) = (set.images.rows, set.images.cols);
    let len = rows * cols;
    if len == 0 {
        return Vec::new();
    }
    set.images
        .pixels
        .chunks_exact(len)
        .take(set.images.count)
        .map(|px| Image { channels: 1, height: rows, width: cols, data: px.iter().map(|&p| p as f32 / 255.0).collect() })
        .collect()
}

/// Reads a PNG or JPEG file (format from the content, falling back to the extension) as a raw
/// [`Image`] in `[0, 1]`: 8-bit files give `value / 255`, 16-bit files `value / 65535`.
///
/// Grey files (L8, L16, LA8, LA16) give 1 channel, alpha dropped; colour files (RGB, RGBA, 8 or
/// 16 bit, or float) give 3 channels, alpha dropped. Errors: [`VisionError::Io`] if the file
/// cannot be opened, [`VisionError::Decode`] if it is corrupt or not an image, both naming it.
pub fn read_image(path: &Path) -> Result<Image, VisionError> {
    let io = |source| VisionError::Io { path: path.to_path_buf(), source };
    let reader = ::image::ImageReader::open(path).map_err(io)?.with_guessed_format().map_err(io)?;
    let img = reader.decode().map_err(|source| VisionError::Decode { path: path.to_path_buf(), source })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(shape_err(&format!("{}: image size", path.display()), "width and height > 0", format!("{w} x {h}")));
    }
    let color = img.color();
    let bytes_per_sample = color.bytes_per_pixel() as usize / (color.channel_count().max(1) as usize);
    let grey = !color.has_color();
    let out = match (grey, bytes_per_sample) {
        (true, 1) => from_interleaved(h, w, 1, img.to_luma8().as_raw(), |p| p as f32 / 255.0),
        (true, 2) => from_interleaved(h, w, 1, img.to_luma16().as_raw(), |p| p as f32 / 65535.0),
        (true, _) => from_interleaved(h, w, 1, img.to_luma32f().as_raw(), |p| p),
        (false, 1) => from_interleaved(h, w, 3, img.to_rgb8().as_raw(), |p| p as f32 / 255.0),
        (false, 2) => from_interleaved(h, w, 3, img.to_rgb16().as_raw(), |p| p as f32 / 65535.0),
        (false, 4) => from_interleaved(h, w, 3, img.to_rgb32f().as_raw(), |p| p),
        _ => return Err(VisionError::UnsupportedColor { path: path.to_path_buf(), color: format!("{color:?}") }),
    };
    Ok(out)
}

/// File extensions an [`ImageFolder`] reads (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// An image-classification data set laid out as torchvision's `ImageFolder`:
/// `root/<class>/**/<image>.png|jpg|jpeg`, one sub-folder per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// The root directory.
    pub root: PathBuf,
    /// Class names (sub-folder names) sorted by name (byte order, as Python's `sorted`); a
    /// label is an index into this list.
    pub classes: Vec<String>,
    /// `(file, label)` for every image: classes in order, and within a class the files of each
    /// folder sorted by name, then its sub-folders (sorted, recursively).
    pub items: Vec<(PathBuf, usize)>,
    /// Files that were not read because their extension is not png/jpg/jpeg (hidden files and
    /// files directly in the root are not counted).
    pub skipped: usize,
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .map(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            IMAGE_EXTENSIONS.contains(&e.as_str())
        })
        .unwrap_or(false)
}

/// Non-hidden entries of `dir`, sorted by file name, as (path, is_dir). Symlinks are followed.
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>, VisionError> {
    let io = |source| VisionError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|source| VisionError::Io { path: path.clone(), source })?;
        out.push((path, meta.is_dir()));
    }
    out.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    Ok(out)
}

/// Collects images under `dir` (its files sorted by name, then its sub-folders, recursively).
fn collect_images(dir: &Path, label: usize, items: &mut Vec<(PathBuf, usize)>, skipped: &mut usize) -> Result<(), VisionError> {
    let entries = sorted_entries(dir)?;
    for (path, is_dir) in &entries {
        if !is_dir {
            if has_image_extension(path) {
                items.push((path.clone(), label));
            } else {
                *skipped += 1;
            }
        }
    }
    for (path, is_dir) in entries {
        if is_dir {
            collect_images(&path, label, items, skipped)?;
        }
    }
    Ok(())
}

/// Scans an image folder (torchvision `ImageFolder` convention): each non-hidden sub-folder of
/// `root` is a class, classes sorted by name; its `.png`, `.jpg`, `.jpeg` files (any case, also in
/// nested folders) are its images; other files are skipped and counted in
/// [`ImageFolder::skipped`]; hidden files and folders (name starting with `.`) are ignored.
/// Nothing is decoded here: see [`ImageFolder::load_all`].
///
/// Errors: [`VisionError::NotADirectory`] (root missing or a file), [`VisionError::NoClasses`]
/// (no sub-folder), [`VisionError::EmptyClass`] naming the first class folder with no image,
/// [`VisionError::Io`] for unreadable directories.
pub fn load_image_folder(root: &Path) -> Result<ImageFolder, VisionError> {
    if !root.is_dir() {
        return Err(VisionError::NotADirectory { path: root.to_path_buf() });
    }
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|(_, d)| *d).map(|(p, _)| p).collect();
    if class_dirs.is_empty() {
        return Err(VisionError::NoClasses { root: root.to_path_buf() });
    }
    let mut classes = Vec::with_capacity(class_dirs.len());
    let mut items = Vec::new();
    let mut skipped = 0usize;
    for (label, dir) in class_dirs.iter().enumerate() {
        let class = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let before = items.len();
        collect_images(dir, label, &mut items, &mut skipped)?;
        if items.len() == before {
            return Err(VisionError::EmptyClass { class, path: dir.clone() });
        }
        classes.push(class);
    }
    Ok(ImageFolder { root: root.to_path_buf(), classes, items, skipped })
}

impl ImageFolder {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no images (never true for a folder from [`load_image_folder`]).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Labels of all items, in order.
    pub fn labels(&self) -> Vec<usize> {
        self.items.iter().map(|(_, l)| *l).collect()
    }

    /// Reads image `i` with [`read_image`]. Errors name the file; an out-of-range `i` is
    /// [`VisionError::Shape`].
    pub fn load(&self, i: usize) -> Result<Image, VisionError> {
        let (path, _) = self.items.get(i).ok_or_else(|| shape_err("ImageFolder::load index", format!("< {}", self.items.len()), i))?;
        read_image(path)
    }

    /// Reads every image (in parallel, results in item order) as raw [`Image`]s, with their
    /// labels. Images keep their own size and channel count (1 or 3); preprocess them with
    /// [`crate::vision::preprocess::ImageProcessor::apply`]. The error is the one of the first
    /// file (in item order) that fails, naming it.
    pub fn load_all(&self) -> Result<(Vec<Image>, Vec<usize>), VisionError> {
        let results: Vec<Result<Image, VisionError>> = self.items.par_iter().map(|(p, _)| read_image(p)).collect();
        let images = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok((images, self.labels()))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file and an existing file is kept if writing fails.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VisionError> {
    crate::model::checkpoint::write_atomic_io(path, bytes).map_err(|(path, source)| VisionError::Io { path, source })
}
