//! MNIST-family IDX files (Fashion-MNIST, MNIST), raw or gzip-compressed.
//!
//! Layout (big-endian): a magic number `0x0000_08DD` (`08` = unsigned bytes, `DD` = number
//! of dimensions), one `u32` per dimension, then the data. Images use magic 2051
//! (3 dimensions: count, rows, cols); labels use magic 2049 (1 dimension: count).
//! Gzip is detected from the content (bytes `1f 8b`), not the file name.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Magic number of an IDX image file (`u8`, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX label file (`u8`, 1 dimension).
pub const LABELS_MAGIC: u32 = 2049;

/// Fashion-MNIST class names, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// MNIST class names (the digits), indexed by label.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// A block of equally sized greyscale images, stored row-major, image after image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// Number of images.
    pub count: usize,
    /// Rows (height) per image.
    pub rows: usize,
    /// Columns (width) per image.
    pub cols: usize,
    /// `count * rows * cols` pixel values (0 = background for (Fashion-)MNIST).
    pub pixels: Vec<u8>,
}

impl ImageSet {
    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`, or `None` if out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let len = self.image_len();
        let start = i.checked_mul(len)?;
        self.pixels.get(start..start.checked_add(len)?)
    }
}

/// Which part of an MNIST-style dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum VisionSplit {
    /// `train-*` files (60 000 images).
    Train,
    /// `t10k-*` files (10 000 images).
    Test,
}

impl VisionSplit {
    fn prefix(&self) -> &'static str {
        match self {
            VisionSplit::Train => "train",
            VisionSplit::Test => "t10k",
        }
    }
}

/// Images with their labels and class names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImages {
    /// The images.
    pub images: ImageSet,
    /// One label per image, each `< class_names.len()`.
    pub labels: Vec<u8>,
    /// Class names indexed by label.
    pub class_names: Vec<String>,
}

/// Errors reading IDX files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be read or decompressed.
    #[error("{}: cannot read IDX file: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// None of the candidate files exist.
    #[error("IDX file not found: tried {}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// The paths tried.
        tried: Vec<PathBuf>,
    },
    /// Wrong magic number.
    #[error("{}: expected IDX magic number {expected} ({what}), found {found}", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Expected magic.
        expected: u32,
        /// Found magic (first 4 bytes, big-endian; fewer bytes are zero-padded).
        found: u32,
        /// `"images"` or `"labels"`.
        what: &'static str,
    },
    /// The file is shorter than its header says.
    #[error("{}: truncated IDX file: expected {expected_bytes} bytes (after decompression) for {dims:?}, found {found_bytes}", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies (header included).
        expected_bytes: u64,
        /// Bytes present.
        found_bytes: u64,
        /// Dimensions read from the header (empty if the header itself is cut short).
        dims: Vec<u32>,
    },
    /// The file is longer than its header says.
    #[error("{}: IDX file has trailing data: expected {expected_bytes} bytes for {dims:?}, found {found_bytes}", .path.display())]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected_bytes: u64,
        /// Bytes present.
        found_bytes: u64,
        /// Dimensions read from the header.
        dims: Vec<u32>,
    },
    /// The dimensions multiply to more than fits in memory addresses.
    #[error("{}: IDX dimensions {dims:?} overflow", .path.display())]
    Overflow {
        /// The file.
        path: PathBuf,
        /// The dimensions.
        dims: Vec<u32>,
    },
    /// Image and label files disagree on the number of items.
    #[error("{} has {images} images but {} has {labels} labels; expected equal counts", .images_path.display(), .labels_path.display())]
    CountMismatch {
        /// Image file.
        images_path: PathBuf,
        /// Label file.
        labels_path: PathBuf,
        /// Images found.
        images: usize,
        /// Labels found.
        labels: usize,
    },
    /// A label is outside the class range.
    #[error("{}: label #{index}: expected a class below {classes}, found {found}", .path.display())]
    BadLabel {
        /// Label file.
        path: PathBuf,
        /// 0-based position.
        index: usize,
        /// Number of classes.
        classes: usize,
        /// The label value.
        found: u8,
    },
}

/// Reads the whole file, gunzipping when it starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX buffer with `magic` and returns (dims, data).
fn parse_idx<'a>(path: &Path, bytes: &'a [u8], magic: u32, what: &'static str) -> Result<(Vec<usize>, &'a [u8]), IdxError> {
    let mut first = [0u8; 4];
    for (dst, src) in first.iter_mut().zip(bytes) {
        *dst = *src;
    }
    let found = u32::from_be_bytes(first);
    if bytes.len() < 4 || found != magic {
        return Err(IdxError::BadMagic { path: path.to_path_buf(), expected: magic, found, what });
    }
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: header_len as u64,
            found_bytes: bytes.len() as u64,
            dims: Vec::new(),
        });
    }
    let dims32: Vec<u32> = bytes[4..header_len].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
    let data_len = dims32
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .and_then(|n| n.checked_add(header_len))
        .ok_or_else(|| IdxError::Overflow { path: path.to_path_buf(), dims: dims32.clone() })?;
    if bytes.len() < data_len {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: data_len as u64,
            found_bytes: bytes.len() as u64,
            dims: dims32,
        });
    }
    if bytes.len() > data_len {
        return Err(IdxError::TrailingData {
            path: path.to_path_buf(),
            expected_bytes: data_len as u64,
            found_bytes: bytes.len() as u64,
            dims: dims32,
        });
    }
    let dims = dims32.iter().map(|&d| d as usize).collect();
    Ok((dims, &bytes[header_len..]))
}

/// Reads an IDX image file (magic 2051), raw or gzip. The file length must match the
/// header exactly.
pub fn read_idx_images(path: &Path) -> Result<ImageSet, IdxError> {
    let bytes = read_maybe_gzip(path)?;
    let (dims, data) = parse_idx(path, &bytes, IMAGES_MAGIC, "images")?;
    Ok(ImageSet { count: dims[0], rows: dims[1], cols: dims[2], pixels: data.to_vec() })
}

/// Reads an IDX label file (magic 2049), raw or gzip. The file length must match the
/// header exactly.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    let bytes = read_maybe_gzip(path)?;
    let (_dims, data) = parse_idx(path, &bytes, LABELS_MAGIC, "labels")?;
    Ok(data.to_vec())
}

/// Writes images in IDX format (uncompressed); the inverse of [`read_idx_images`]. Useful
/// for fixtures and caches.
pub fn write_idx_images(path: &Path, images: &ImageSet) -> Result<(), IdxError> {
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for d in [images.count, images.rows, images.cols] {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    std::fs::write(path, out).map_err(|source| IdxError::Io { path: path.to_path_buf(), source })
}

/// Writes labels in IDX format (uncompressed); the inverse of [`read_idx_labels`].
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<(), IdxError> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    std::fs::write(path, out).map_err(|source| IdxError::Io { path: path.to_path_buf(), source })
}

/// `dir/<name>.gz` if it exists, else `dir/<name>`, else [`IdxError::NotFound`].
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    let gz = dir.join(format!("{name}.gz"));
    let raw = dir.join(name);
    if gz.is_file() {
        Ok(gz)
    } else if raw.is_file() {
        Ok(raw)
    } else {
        Err(IdxError::NotFound { tried: vec![gz, raw] })
    }
}

/// Loads `{train,t10k}-images-idx3-ubyte[.gz]` and `{train,t10k}-labels-idx1-ubyte[.gz]`
/// from `dir`, checking that the counts agree and labels are below the class count.
pub fn load_idx_dataset(dir: &Path, split: VisionSplit, class_names: &[&str]) -> Result<LabelledImages, IdxError> {
    let images_path = find_file(dir, &format!("{}-images-idx3-ubyte", split.prefix()))?;
    let labels_path = find_file(dir, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.count != labels.len() {
        return Err(IdxError::CountMismatch { images_path, labels_path, images: images.count, labels: labels.len() });
    }
    if let Some((index, &found)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= class_names.len()) {
        return Err(IdxError::BadLabel { path: labels_path, index, classes: class_names.len(), found });
    }
    Ok(LabelledImages { images, labels, class_names: class_names.iter().map(|s| s.to_string()).collect() })
}

/// Loads Fashion-MNIST from `dir` (e.g. `~/.cache/sttabt/data/fashion-mnist`) with
/// [`FASHION_MNIST_CLASSES`].
pub fn load_fashion_mnist(dir: &Path, split: VisionSplit) -> Result<LabelledImages, IdxError> {
    load_idx_dataset(dir, split, &FASHION_MNIST_CLASSES)
}

/// Loads MNIST (same file names) from `dir` with [`MNIST_CLASSES`].
pub fn load_mnist(dir: &Path, split: VisionSplit) -> Result<LabelledImages, IdxError> {
    load_idx_dataset(dir, split, &MNIST_CLASSES)
}
