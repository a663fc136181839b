//! Labelled image data for the vision jobs: Fashion-MNIST from the asset cache, or an image
//! folder (class per sub-folder) that users bring, split into train / dev / test and encoded for
//! a model through its image processor.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::split::SplitMix64;
use crate::model::config::EncoderConfig;
use crate::train::finetune::LabeledInput;
use crate::vision::idx::{load_fashion_mnist, VisionSplit};
use crate::vision::image::{images_from_idx, load_image_folder, Image};
use crate::vision::model::encode_images;
use crate::vision::preprocess::ImageProcessor;

/// Fashion-MNIST pixel mean over the training set (pixel / 255).
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Fashion-MNIST pixel standard deviation over the training set (pixel / 255).
pub const FASHION_MNIST_STD: f32 = 0.3530;
/// Images held out of Fashion-MNIST's 60 000 training images as the dev split (seeded).
pub const FASHION_MNIST_DEV: usize = 5000;

/// Where labelled images come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSource {
    /// Fashion-MNIST IDX files in this directory (train: 55 000 after holding out 5 000 dev
    /// images with the seed; test: the official 10 000).
    FashionMnist { dir: PathBuf, seed: u64 },
    /// A folder with `train/` and `test/` (and optionally `val/` or `dev/`) sub-folders, each
    /// holding one folder per class; or one folder of class folders, split 80/10/10 with the seed.
    Folder { dir: PathBuf, seed: u64 },
}

/// Raw labelled images of the three splits.
#[derive(Debug, Clone)]
pub struct ImageSplits {
    pub train: Vec<Image>,
    pub train_labels: Vec<usize>,
    pub dev: Vec<Image>,
    pub dev_labels: Vec<usize>,
    pub test: Vec<Image>,
    pub test_labels: Vec<usize>,
    pub classes: Vec<String>,
    /// One line describing the data and split.
    pub description: String,
}

fn take<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
    idx.iter().map(|&i| v[i].clone()).collect()
}

impl ImageSource {
    /// Load every split. Errors name the missing or corrupt file.
    pub fn load(&self) -> Result<ImageSplits> {
        match self {
            ImageSource::FashionMnist { dir, seed } => {
                let tr = load_fashion_mnist(dir, VisionSplit::Train)
                    .with_context(|| format!("Fashion-MNIST in {} (run `sttabt fetch --vision`)", dir.display()))?;
                let te = load_fashion_mnist(dir, VisionSplit::Test).with_context(|| format!("Fashion-MNIST in {}", dir.display()))?;
                let images = images_from_idx(&tr);
                let labels: Vec<usize> = tr.labels.iter().map(|&l| l as usize).collect();
                let mut order: Vec<usize> = (0..images.len()).collect();
                SplitMix64::new(*seed ^ 0xF0F0).shuffle(&mut order);
                let n_dev = FASHION_MNIST_DEV.min(images.len() / 5);
                let (dev_idx, train_idx) = order.split_at(n_dev);
                let test = images_from_idx(&te);
                Ok(ImageSplits {
                    train: take(&images, train_idx),
                    train_labels: take(&labels, train_idx),
                    dev: take(&images, dev_idx),
                    dev_labels: take(&labels, dev_idx),
                    test_labels: te.labels.iter().map(|&l| l as usize).collect(),
                    test,
                    classes: tr.class_names.clone(),
                    description: format!(
                        "Fashion-MNIST ({} train / {} dev held out with seed {seed} / {} test)",
                        train_idx.len(),
                        dev_idx.len(),
                        te.labels.len()
                    ),
                })
            }
            ImageSource::Folder { dir, seed } => load_folder(dir, *seed),
        }
    }
}

fn load_folder(dir: &Path, seed: u64) -> Result<ImageSplits> {
    let sub = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_dir());
    if sub(&["train"]).is_some() != sub(&["test"]).is_some() {
        anyhow::bail!(
            "{}: found {} but no {} folder; give both train/ and test/ (each with one folder per class), or put the class folders directly in {}",
            dir.display(),
            if sub(&["train"]).is_some() { "train/" } else { "test/" },
            if sub(&["train"]).is_some() { "test/" } else { "train/" },
            dir.display()
        );
    }
    if let (Some(train_dir), Some(test_dir)) = (sub(&["train"]), sub(&["test"])) {
        let tr = load_image_folder(&train_dir)?;
        let (train, train_labels) = tr.load_all()?;
        let te = load_image_folder(&test_dir)?;
        anyhow::ensure!(
            te.classes == tr.classes,
            "{}: the test classes {:?} differ from the train classes {:?}",
            test_dir.display(),
            te.classes,
            tr.classes
        );
        let (test, test_labels) = te.load_all()?;
        let (dev, dev_labels) = match sub(&["val", "dev", "validation"]) {
            Some(d) => {
                let f = load_image_folder(&d)?;
                anyhow::ensure!(f.classes == tr.classes, "{}: the classes differ from train's", d.display());
                f.load_all()?
            }
            None => (test.clone(), test_labels.clone()),
        };
        return Ok(ImageSplits {
            description: format!(
                "image folder {} ({} train / {} dev / {} test, {} classes)",
                dir.display(),
                train.len(),
                dev.len(),
                test.len(),
                tr.classes.len()
            ),
            train,
            train_labels,
            dev,
            dev_labels,
            test,
            test_labels,
            classes: tr.classes,
        });
    }
    let f = load_image_folder(dir)?;
    let (images, labels) = f.load_all()?;
    anyhow::ensure!(images.len() >= 3, "{}: need at least 3 images to split into train/dev/test, found {}", dir.display(), images.len());
    let mut order: Vec<usize> = (0..images.len()).collect();
    SplitMix64::new(seed ^ 0xF01D).shuffle(&mut order);
    let n_test = (images.len() / 10).max(1);
    let n_dev = (images.len() / 10).max(1);
    let (test_idx, rest) = order.split_at(n_test);
    let (dev_idx, train_idx) = rest.split_at(n_dev);
    Ok(ImageSplits {
        description: format!(
            "image folder {} split 80/10/10 with seed {seed} ({} train / {} dev / {} test, {} classes)",
            dir.display(),
            train_idx.len(),
            dev_idx.len(),
            test_idx.len(),
            f.classes.len()
        ),
        train: take(&images, train_idx),
        train_labels: take(&labels, train_idx),
        dev: take(&images, dev_idx),
        dev_labels: take(&labels, dev_idx),
        test: take(&images, test_idx),
        test_labels: take(&labels, test_idx),
        classes: f.classes,
    })
}

/// Preprocess and patchify `images` for `config` and pair them with `labels` (first `limit`).
pub fn encode_labeled(
    config: &EncoderConfig,
    processor: &ImageProcessor,
    images: &[Image],
    labels: &[usize],
    limit: Option<usize>,
) -> Result<Vec<LabeledInput>> {
    let n = limit.unwrap_or(images.len()).min(images.len());
    let inputs = encode_images(config, processor, &images[..n])?;
    Ok(inputs.into_iter().zip(labels).map(|(input, &label)| LabeledInput { input, label }).collect())
}

/// The image processor for a model trained on Fashion-MNIST (28x28 grey, its mean and std).
pub fn fashion_mnist_processor(image_size: usize) -> Result<ImageProcessor> {
    Ok(ImageProcessor::for_model(image_size, 1, &[FASHION_MNIST_MEAN], &[FASHION_MNIST_STD])?)
}

/// Encoded splits for one model, plus the raw test images (for pictures).
#[derive(Debug, Clone)]
pub struct VisionData {
    pub train: Vec<LabeledInput>,
    pub dev: Vec<LabeledInput>,
    pub test: Vec<LabeledInput>,
    /// The raw (unprocessed) test images, aligned with `test`.
    pub test_images: Vec<Image>,
    pub classes: Vec<String>,
    pub description: String,
}

/// Load `source` and encode it for `config` with `processor`: at most `train_limit` training
/// images and `eval_limit` dev/test images. Errors: unreadable data, or a model whose label count
/// differs from the data's classes (when the model has a head).
pub fn prepare(
    source: &ImageSource,
    config: &EncoderConfig,
    processor: &ImageProcessor,
    train_limit: Option<usize>,
    eval_limit: Option<usize>,
) -> Result<VisionData> {
    let s = source.load()?;
    if !config.labels.is_empty() && config.labels.len() != s.classes.len() {
        anyhow::bail!(
            "the model has {} label(s) {:?} but the data has {} class(es) {:?}",
            config.labels.len(),
            config.labels,
            s.classes.len(),
            s.classes
        );
    }
    let train = encode_labeled(config, processor, &s.train, &s.train_labels, train_limit)?;
    let dev = encode_labeled(config, processor, &s.dev, &s.dev_labels, eval_limit)?;
    let test = encode_labeled(config, processor, &s.test, &s.test_labels, eval_limit)?;
    let n_test = test.len();
    Ok(VisionData {
        train,
        dev,
        test,
        test_images: s.test.into_iter().take(n_test).collect(),
        classes: s.classes,
        description: s.description,
    })
}
