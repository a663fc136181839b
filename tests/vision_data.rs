//! Vision data path: the image reader and image-folder data set, the HF image-processor
//! pipeline (resize, center crop, rescale, normalise, config parsing), patchify, and the
//! patch-survival grid. Resampling values are checked against hand computations and against
//! Pillow 13 (`Image.resize` on mode "F" images, which does not round to `uint8`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::{GrayAlphaImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use sttabt::vision::grid::{patch_survival_layout, render_patch_survival, GAP};
use sttabt::vision::idx::{load_fashion_mnist, VisionSplit};
use sttabt::vision::image::{images_from_idx, load_image_folder, read_image, Image, VisionError};
use sttabt::vision::preprocess::{center_crop, patchify, resize, ImageProcessor, Resample, Size};

/// A fresh temporary directory, removed on drop (kept local so this test does not depend on the
/// BERT helpers in `tests/common`).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir =
            std::env::temp_dir().join(format!("sttabt-vision-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkdir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

fn assert_close(found: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: length");
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        assert!((f - e).abs() <= tol, "{what}[{i}]: found {f}, expected {e} (tol {tol})");
    }
}

fn img(c: usize, h: usize, w: usize, data: Vec<f32>) -> Image {
    Image::new(c, h, w, data).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Reader and image folder

/// root/cat: grey PNG, RGBA PNG (upper-case extension), grey+alpha PNG, 16-bit grey PNG, a
/// text file (skipped), a hidden PNG (ignored); root/dog: RGB JPEG, grey JPEG (`.JPEG`), and a
/// nested folder with a PNG; root/.hidden folder and a root-level file (both ignored).
fn write_folder(root: &Path) {
    let cat = root.join("cat");
    let dog = root.join("dog");
    mkdir(&cat);
    mkdir(&dog.join("sub"));
    mkdir(&root.join(".cache"));
    std::fs::write(root.join(".cache").join("x.png"), b"not an image").unwrap();
    std::fs::write(root.join("README.txt"), b"read me").unwrap();

    // 5 wide, 4 high, value = 10 * y + x.
    GrayImage::from_fn(5, 4, |x, y| Luma([(10 * y + x) as u8])).save(cat.join("a_grey.png")).unwrap();
    RgbaImage::from_fn(3, 2, |x, y| Rgba([x as u8 * 100, y as u8 * 200, 7, 13])).save(cat.join("B_rgba.PNG")).unwrap();
    GrayAlphaImage::from_fn(2, 2, |x, y| image::LumaA([(x + 2 * y) as u8 * 60, 255])).save(cat.join("c_la.png")).unwrap();
    ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(2, 1, |x, _| Luma([if x == 0 { 0 } else { 65535 }])).save(cat.join("d_16bit.png")).unwrap();
    std::fs::write(cat.join("notes.txt"), b"not an image").unwrap();
    std::fs::write(cat.join(".hidden.png"), b"not an image either").unwrap();

    RgbImage::from_pixel(8, 8, Rgb([200, 40, 90])).save(dog.join("x.jpg")).unwrap();
    GrayImage::from_pixel(8, 8, Luma([120])).save_with_format(dog.join("y.JPEG"), image::ImageFormat::Jpeg).unwrap();
    GrayImage::from_pixel(1, 1, Luma([255])).save(dog.join("sub").join("z.png")).unwrap();
}

#[test]
fn image_folder_lists_classes_labels_and_skips_other_files() {
    let dir = TempDir::new("folder");
    write_folder(dir.path());
    let folder = load_image_folder(dir.path()).unwrap();
    assert_eq!(folder.classes, vec!["cat".to_string(), "dog".to_string()]);
    let names: Vec<(String, usize)> =
        folder.items.iter().map(|(p, l)| (p.strip_prefix(dir.path()).unwrap().to_string_lossy().replace('\\', "/"), *l)).collect();
    // Byte order: upper-case 'B' sorts before 'a'; a folder's own files before its sub-folders.
    let expected: Vec<(String, usize)> = [
        ("cat/B_rgba.PNG", 0),
        ("cat/a_grey.png", 0),
        ("cat/c_la.png", 0),
        ("cat/d_16bit.png", 0),
        ("dog/x.jpg", 1),
        ("dog/y.JPEG", 1),
        ("dog/sub/z.png", 1),
    ]
    .iter()
    .map(|(n, l)| (n.to_string(), *l))
    .collect();
    assert_eq!(names, expected);
    assert_eq!(folder.skipped, 1, "notes.txt is skipped; hidden and root-level files are not counted");
    assert_eq!(folder.len(), 7);
    assert_eq!(folder.labels(), vec![0, 0, 0, 0, 1, 1, 1]);

    let (images, labels) = folder.load_all().unwrap();
    assert_eq!(labels, folder.labels());

    // RGBA: 3 channels, alpha dropped, exact /255.
    let rgba = &images[0];
    assert_eq!((rgba.channels, rgba.height, rgba.width), (3, 2, 3));
    assert_eq!(rgba.get(0, 1, 2), 200.0 / 255.0);
    assert_eq!(rgba.get(1, 1, 2), 200.0 / 255.0);
    assert_eq!(rgba.get(1, 0, 2), 0.0);
    assert_eq!(rgba.get(2, 0, 0), 7.0 / 255.0);

    // Grey PNG: 1 channel, row-major, exact /255 (equal to Image::from_gray_u8).
    let grey = &images[1];
    assert_eq!((grey.channels, grey.height, grey.width), (1, 4, 5));
    assert_eq!(grey.get(0, 3, 4), 34.0 / 255.0);
    let bytes: Vec<u8> = (0..4).flat_map(|y| (0..5).map(move |x| (10 * y + x) as u8)).collect();
    assert_eq!(grey, &Image::from_gray_u8(4, 5, &bytes).unwrap());

    // Grey + alpha: 1 channel.
    assert_eq!((images[2].channels, images[2].data.clone()), (1, vec![0.0, 60.0 / 255.0, 120.0 / 255.0, 180.0 / 255.0]));
    // 16-bit grey: /65535.
    assert_eq!((images[3].channels, images[3].data.clone()), (1, vec![0.0, 1.0]));

    // RGB JPEG (lossy): 3 channels near the written colour.
    let jpg = &images[4];
    assert_eq!((jpg.channels, jpg.height, jpg.width), (3, 8, 8));
    for (c, v) in [200.0f32, 40.0, 90.0].iter().enumerate() {
        let mean = jpg.plane(c).iter().sum::<f32>() / 64.0;
        assert!((mean - v / 255.0).abs() < 4.0 / 255.0, "JPEG channel {c}: mean {mean}, wrote {}", v / 255.0);
    }
    // Grey JPEG: 1 channel.
    assert_eq!(images[5].channels, 1);
    assert!((images[5].data[0] - 120.0 / 255.0).abs() < 3.0 / 255.0);
    assert_eq!(images[6].data, vec![1.0]);
}

#[test]
fn image_folder_errors_name_the_path() {
    // Missing root.
    let dir = TempDir::new("errors");
    let missing = dir.path().join("nope");
    let e = load_image_folder(&missing).unwrap_err();
    assert!(matches!(e, VisionError::NotADirectory { .. }), "{e}");
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");

    // A root with files only: no class folders.
    let flat = dir.path().join("flat");
    mkdir(&flat);
    GrayImage::from_pixel(2, 2, Luma([1])).save(flat.join("a.png")).unwrap();
    let e = load_image_folder(&flat).unwrap_err();
    assert!(matches!(e, VisionError::NoClasses { .. }), "{e}");

    // A class folder without images (only a text file).
    let root = dir.path().join("empty_class");
    mkdir(&root.join("full"));
    mkdir(&root.join("hollow"));
    GrayImage::from_pixel(2, 2, Luma([1])).save(root.join("full").join("a.png")).unwrap();
    std::fs::write(root.join("hollow").join("readme.md"), b"x").unwrap();
    let e = load_image_folder(&root).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, VisionError::EmptyClass { ref class, .. } if class == "hollow"), "{msg}");
    assert!(msg.contains(&root.join("hollow").display().to_string()), "{msg}");

    // A corrupt PNG: the folder scans, loading names the file.
    let root = dir.path().join("corrupt");
    mkdir(&root.join("a"));
    GrayImage::from_pixel(2, 2, Luma([1])).save(root.join("a").join("good.png")).unwrap();
    let bad = root.join("a").join("zz_bad.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a PNG body").unwrap();
    let folder = load_image_folder(&root).unwrap();
    assert_eq!(folder.len(), 2);
    let e = folder.load_all().unwrap_err();
    assert!(matches!(e, VisionError::Decode { .. }), "{e}");
    assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    let e = read_image(&bad).unwrap_err();
    assert!(e.to_string().contains("zz_bad.png"), "{e}");
    let e = read_image(&root.join("a").join("missing.png")).unwrap_err();
    assert!(matches!(e, VisionError::Io { .. }) && e.to_string().contains("missing.png"), "{e}");
}

#[test]
fn to_channels_replicates_and_takes_luma() {
    let grey = img(1, 1, 2, vec![0.25, 1.0]);
    let rgb = grey.to_channels(3).unwrap();
    assert_eq!((rgb.channels, rgb.data.clone()), (3, vec![0.25, 1.0, 0.25, 1.0, 0.25, 1.0]));
    assert_eq!(grey.to_channels(1).unwrap(), grey);

    // Two pixels: pure red and (0.2, 0.4, 0.6).
    let colour = img(3, 1, 2, vec![1.0, 0.2, 0.0, 0.4, 0.0, 0.6]);
    let luma = colour.to_channels(1).unwrap();
    assert_eq!(luma.channels, 1);
    assert_close(&luma.data, &[0.299, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6], 1e-6, "luma");
    assert!(matches!(img(2, 1, 1, vec![0.0, 0.0]).to_channels(3), Err(VisionError::Channels { from: 2, to: 3 })));
    assert!(Image::from_gray_u8(2, 2, &[0, 1, 2]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Resize

#[test]
fn resize_keeps_a_constant_image_constant() {
    let c = Image::filled(3, 7, 5, 0.625).unwrap();
    for resample in [Resample::Nearest, Resample::Bilinear, Resample::Bicubic] {
        for (h, w) in [(3, 11), (14, 10), (2, 2), (7, 5), (1, 1), (20, 3)] {
            let r = resize(&c, h, w, resample).unwrap();
            assert_eq!((r.channels, r.height, r.width), (3, h, w));
            assert!(r.data.iter().all(|v| (v - 0.625).abs() < 1e-6), "{resample:?} {h}x{w}: {:?}", r.data);
        }
    }
}

#[test]
fn bilinear_upscale_matches_hand_computed_values() {
    // [[a, b], [c, d]] = [[0, 0.4], [0.8, 1]] -> 4x4. Upscaling keeps the triangle filter's
    // support at 1, so each output is linear interpolation at the pixel centre
    // (x + 0.5) / 2 - 0.5 with edge clamping: per row [a, .75a + .25b, .25a + .75b, b].
    // Row 0: [0, .1, .3, .4]; row 3: [.8, .85, .95, 1]; rows 1 and 2 mix them .75/.25 and
    // .25/.75. (Pillow gives the same.)
    let src = img(1, 2, 2, vec![0.0, 0.4, 0.8, 1.0]);
    let out = resize(&src, 4, 4, Resample::Bilinear).unwrap();
    #[rustfmt::skip]
    let expected = [
        0.0, 0.1, 0.3, 0.4,
        0.2, 0.2875, 0.4625, 0.55,
        0.6, 0.6625, 0.7875, 0.85,
        0.8, 0.85, 0.95, 1.0,
    ];
    assert_close(&out.data, &expected, 1e-6, "bilinear 2x2 -> 4x4");

    // Nearest: source index floor((i + 0.5) * in / out) (Pillow: [[0, .4, .4], [.8, 1, 1], [.8, 1, 1]]).
    let out = resize(&src, 3, 3, Resample::Nearest).unwrap();
    assert_eq!(out.data, vec![0.0, 0.4, 0.4, 0.8, 1.0, 1.0, 0.8, 1.0, 1.0]);

    // Bicubic overshoots; the result is clipped to [0, 1] like Pillow's 8-bit path.
    let out = resize(&src, 4, 4, Resample::Bicubic).unwrap();
    assert!(out.data.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(out.data[0], 0.0, "the -0.107 overshoot is clipped");
}

#[test]
fn bilinear_downscale_averages_like_pillow() {
    // Downscaling by 2 widens the triangle to support 2: an interior output pixel at centre
    // 2i + 1 weighs inputs 2i-1, 2i, 2i+1, 2i+2 by .25, .75, .75, .25 (normalised by 2), so a
    // checkerboard averages to exactly 0.5.
    let board = |n: usize| img(1, n, n, (0..n * n).map(|i| ((i / n + i % n + 1) % 2) as f32).collect());
    let out = resize(&board(8), 4, 4, Resample::Bilinear).unwrap();
    for y in 0..4 {
        for x in 0..4 {
            let v = out.get(0, y, x);
            if (1..3).contains(&y) || (1..3).contains(&x) {
                assert!((v - 0.5).abs() < 1e-6, "8x8 -> 4x4 at ({y}, {x}): {v}");
            }
        }
    }
    // At the border the filter is cut off (input 2i-1 = -1 does not exist) and Pillow
    // renormalises the remaining weights .75, .75, .25 (sum 1.75): along a row [1, 0, 1, 0]
    // gives 1/1.75 = 4/7 and 0.75/1.75 = 3/7; the vertical pass then gives
    // (.75 * 4/7 + .75 * 3/7 + .25 * 4/7) / 1.75 = 25/49 on the diagonal, 24/49 off it.
    // (Pillow 13: [[0.5102041, 0.48979592], [0.48979592, 0.5102041]].)
    let out = resize(&board(4), 2, 2, Resample::Bilinear).unwrap();
    assert_close(&out.data, &[25.0 / 49.0, 24.0 / 49.0, 24.0 / 49.0, 25.0 / 49.0], 1e-6, "4x4 -> 2x2");
}

/// 7x9 values from numpy's RandomState(0).rand(7, 9) (float32).
#[rustfmt::skip]
const RAND_7X9: [f32; 63] = [
    0.5488135, 0.71518934, 0.60276335, 0.5448832, 0.4236548, 0.6458941, 0.4375872, 0.891773, 0.96366274,
    0.3834415, 0.79172504, 0.5288949, 0.56804454, 0.92559665, 0.071036056, 0.0871293, 0.020218397, 0.83261985,
    0.77815676, 0.87001216, 0.9786183, 0.7991586, 0.46147937, 0.7805292, 0.11827443, 0.639921, 0.14335328,
    0.9446689, 0.5218483, 0.41466194, 0.2645556, 0.7742337, 0.45615032, 0.56843394, 0.0187898, 0.6176355,
    0.6120957, 0.616934, 0.94374806, 0.6818203, 0.3595079, 0.43703195, 0.6976312, 0.060225454, 0.6667667,
    0.67063785, 0.21038257, 0.1289263, 0.31542835, 0.36371076, 0.57019675, 0.43860152, 0.9883738, 0.10204481,
    0.20887676, 0.16130951, 0.6531083, 0.2532916, 0.46631077, 0.2444256, 0.15896958, 0.11037514, 0.6563296,
];

#[test]
fn resize_matches_pillow_on_random_values() {
    let src = img(1, 7, 9, RAND_7X9.to_vec());
    // Pillow: Image.fromarray(a, "F").resize((4, 3), Image.BICUBIC)  (width 4, height 3).
    #[rustfmt::skip]
    let bicubic = [
        0.6592052, 0.65301323, 0.40251085, 0.52826613,
        0.72272098, 0.59833086, 0.50091618, 0.35412934,
        0.38192028, 0.39110982, 0.40472695, 0.44281042,
    ];
    let out = resize(&src, 3, 4, Resample::Bicubic).unwrap();
    assert_close(&out.data, &bicubic, 2e-6, "bicubic 7x9 -> 3x4");
    // Pillow: .resize((13, 5), Image.BILINEAR): width up, height down.
    #[rustfmt::skip]
    let bilinear = [
        0.49368951, 0.62669581, 0.70318723, 0.59064525, 0.56242555, 0.5644083, 0.59096873, 0.49633446, 0.40292597, 0.34234381, 0.53652704, 0.74835956, 0.91998178,
        0.60272777, 0.72791475, 0.8221848, 0.78308558, 0.72809505, 0.68761432, 0.6677537, 0.52752346, 0.32644245, 0.12443719, 0.30448252, 0.40381902, 0.44969398,
        0.85392612, 0.71851009, 0.60496789, 0.61255401, 0.50522804, 0.50049692, 0.64196455, 0.55174834, 0.51104647, 0.48155251, 0.22483051, 0.32436979, 0.5403353,
        0.63811445, 0.52941525, 0.46978924, 0.57042348, 0.5430662, 0.47048602, 0.36137584, 0.45472693, 0.529405, 0.57406294, 0.49806762, 0.44644818, 0.4157792,
        0.36279711, 0.26311177, 0.24706268, 0.45524916, 0.35261044, 0.32265213, 0.43211076, 0.37735283, 0.31423301, 0.26378492, 0.36822724, 0.43466905, 0.47156799,
    ];
    let out = resize(&src, 5, 13, Resample::Bilinear).unwrap();
    assert_close(&out.data, &bilinear, 2e-6, "bilinear 7x9 -> 5x13");
}

// ---------------------------------------------------------------------------------------------
// Center crop, rescale, normalise

#[test]
fn center_crop_picks_the_hf_window() {
    // 5 rows x 6 columns, value = 10 * y + x.
    let src = img(1, 5, 6, (0..5).flat_map(|y| (0..6).map(move |x| (10 * y + x) as f32)).collect());
    // top = (5 - 3) // 2 = 1, left = (6 - 3) // 2 = 1.
    assert_eq!(center_crop(&src, 3, 3).unwrap().data, vec![11.0, 12.0, 13.0, 21.0, 22.0, 23.0, 31.0, 32.0, 33.0]);
    // Odd margins: top = 3 // 2 = 1, left = 1 // 2 = 0 (the extra row/column stays at the end).
    assert_eq!(center_crop(&src, 2, 5).unwrap().data, vec![10.0, 11.0, 12.0, 13.0, 14.0, 20.0, 21.0, 22.0, 23.0, 24.0]);
    // Larger than the image: HF pads with zeros, ceil(pad / 2) before. 2x3 -> 4x4: out[y][x] =
    // src[y - 1][x - 1].
    let small = img(1, 2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    #[rustfmt::skip]
    let expected = vec![
        0.0, 0.0, 0.0, 0.0,
        0.0, 1.0, 2.0, 3.0,
        0.0, 4.0, 5.0, 6.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(center_crop(&small, 4, 4).unwrap().data, expected);
    assert!(center_crop(&small, 0, 4).is_err());
}

#[test]
fn processor_rescales_relative_to_the_reader_and_normalises() {
    let p = ImageProcessor::for_model(2, 3, &[0.5, 0.25, 0.0], &[0.5, 0.25, 2.0]).unwrap();
    assert_eq!(p.size, Size::Exact { height: 2, width: 2 });
    assert!(!p.do_center_crop);
    assert_eq!(p.effective_scale(), 1.0, "1/255 was already applied by the reader");
    let x = img(3, 2, 2, vec![0.0, 0.5, 1.0, 0.25, 0.0, 0.5, 1.0, 0.25, 0.0, 0.5, 1.0, 0.25]);
    let out = p.apply(&x).unwrap();
    #[rustfmt::skip]
    let expected = [
        -1.0, 0.0, 1.0, -0.5,  // (x - 0.5) / 0.5
        -1.0, 1.0, 3.0, 0.0,   // (x - 0.25) / 0.25
        0.0, 0.25, 0.5, 0.125, // x / 2
    ];
    assert_close(&out.data, &expected, 1e-6, "normalised");

    // Grey input is replicated to the 3 channels the mean asks for.
    let grey = img(1, 2, 2, vec![0.5; 4]);
    let out = p.apply(&grey).unwrap();
    assert_close(&out.data, &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.25], 1e-6, "grey -> rgb");

    // do_rescale = false: HF would feed 0..255 values; factor 2/255: twice the raw value.
    let mut q = ImageProcessor::for_model(2, 1, &[0.0], &[1.0]).unwrap();
    q.do_rescale = false;
    assert_close(&q.apply(&grey.clone()).unwrap().data, &[127.5; 4], 1e-4, "no rescale");
    q.do_rescale = true;
    q.rescale_factor = 2.0 / 255.0;
    assert_close(&q.apply(&grey).unwrap().data, &[1.0; 4], 1e-6, "factor 2/255");

    // A 2-channel image cannot become 3 channels: the error says so.
    let e = p.apply(&img(2, 2, 2, vec![0.0; 8])).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("3 entries") && msg.contains("2 channels"), "{msg}");
    assert!(ImageProcessor::for_model(2, 3, &[0.5, 0.5], &[1.0]).is_err());
    assert!(ImageProcessor::for_model(2, 3, &[0.5], &[0.0]).is_err());
}

// ---------------------------------------------------------------------------------------------
// preprocessor_config.json

const VIT_JSON: &str = r#"{
  "do_normalize": true,
  "do_rescale": true,
  "do_resize": true,
  "image_mean": [0.5, 0.5, 0.5],
  "image_processor_type": "ViTImageProcessor",
  "image_std": [0.5, 0.5, 0.5],
  "resample": 2,
  "rescale_factor": 0.00392156862745098,
  "size": {"height": 224, "width": 224}
}"#;

const DEIT_JSON: &str = r#"{
  "crop_size": {"height": 224, "width": 224},
  "do_center_crop": true,
  "do_normalize": true,
  "do_rescale": true,
  "do_resize": true,
  "image_mean": [0.485, 0.456, 0.406],
  "image_processor_type": "DeiTImageProcessor",
  "image_std": [0.229, 0.224, 0.225],
  "resample": 3,
  "rescale_factor": 0.00392156862745098,
  "size": {"height": 256, "width": 256},
  "some_future_key": {"nested": [1, 2]}
}"#;

#[test]
fn parses_vit_and_deit_preprocessor_configs() {
    let vit = ImageProcessor::from_json_str(VIT_JSON).unwrap();
    assert!(vit.do_resize && vit.do_rescale && vit.do_normalize && !vit.do_center_crop);
    assert_eq!(vit.size, Size::Exact { height: 224, width: 224 });
    assert_eq!(vit.resample, Resample::Bilinear);
    assert_eq!(vit.image_mean, vec![0.5; 3]);
    assert_eq!(vit.image_std, vec![0.5; 3]);
    assert_eq!(vit.rescale_factor, 1.0 / 255.0);
    assert_eq!(vit, ImageProcessor::vit_default());

    let deit = ImageProcessor::from_json_str(DEIT_JSON).unwrap();
    assert!(deit.do_center_crop);
    assert_eq!(deit.crop_size, (224, 224));
    assert_eq!(deit.size, Size::Exact { height: 256, width: 256 });
    assert_eq!(deit.resample, Resample::Bicubic);
    assert_eq!(deit.image_mean, vec![0.485, 0.456, 0.406]);
    assert_eq!(deit.image_std, vec![0.229, 0.224, 0.225]);
    assert_eq!(deit, ImageProcessor::deit_default());
    // 300 x 400 RGB -> resize 256 x 256 -> crop 224 x 224.
    let out = deit.apply(&Image::filled(3, 300, 400, 0.485).unwrap()).unwrap();
    assert_eq!((out.channels, out.height, out.width), (3, 224, 224));
    assert!(out.plane(0).iter().all(|v| v.abs() < 1e-5), "mean-valued input normalises to 0");

    // Old feature-extractor forms: int size (a square for ViT/DeiT), int crop_size,
    // shortest_edge, DeiT defaults picked from feature_extractor_type.
    let old_vit = ImageProcessor::from_json_str(
        r#"{"do_normalize": true, "do_resize": true, "feature_extractor_type": "ViTFeatureExtractor",
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 224}"#,
    )
    .unwrap();
    assert_eq!(old_vit, ImageProcessor::vit_default());
    let old_deit = ImageProcessor::from_json_str(
        r#"{"crop_size": 224, "do_center_crop": true, "feature_extractor_type": "DeiTFeatureExtractor",
            "size": {"shortest_edge": 256}, "image_mean": 0.5, "image_std": [0.2, 0.3, 0.4]}"#,
    )
    .unwrap();
    assert_eq!(old_deit.size, Size::ShortestEdge(256));
    assert_eq!(old_deit.crop_size, (224, 224));
    assert_eq!(old_deit.resample, Resample::Bicubic, "DeiT default");
    assert_eq!(old_deit.image_mean, vec![0.5; 3], "a scalar mean applies to every channel");
    // shortest edge 256 of 300 x 400: 256 x floor(256 * 400 / 300) = 256 x 341.
    assert_eq!(old_deit.size.output_size(300, 400), (256, 341));
    assert_eq!(old_deit.size.output_size(400, 300), (341, 256));

    // Errors name the field.
    let e = ImageProcessor::from_json_str(r#"{"resample": 1}"#).unwrap_err().to_string();
    assert!(e.contains("resample") && e.contains("unsupported"), "{e}");
    let e = ImageProcessor::from_json_str(r#"{"size": {"longest_edge": 3}}"#).unwrap_err().to_string();
    assert!(e.contains("`size`"), "{e}");
    let e = ImageProcessor::from_json_str(r#"{"image_std": [0.5, 0.0, 0.5]}"#).unwrap_err().to_string();
    assert!(e.contains("image_std"), "{e}");
    let e = ImageProcessor::from_json_str(r#"{"do_resize": "yes"}"#).unwrap_err().to_string();
    assert!(e.contains("do_resize") && e.contains("true or false"), "{e}");
    assert!(matches!(ImageProcessor::from_json_str("[1, 2]"), Err(VisionError::Json { .. })));
    assert!(matches!(ImageProcessor::from_json_str("{"), Err(VisionError::Json { .. })));
}

#[test]
fn preprocessor_config_round_trips() {
    let mut custom = ImageProcessor::for_model(28, 1, &[0.2860], &[0.3530]).unwrap();
    custom.resample = Resample::Nearest;
    custom.rescale_factor = 0.5;
    let mut shortest = ImageProcessor::deit_default();
    shortest.size = Size::ShortestEdge(256);
    shortest.crop_size = (224, 192);
    for p in [ImageProcessor::vit_default(), ImageProcessor::deit_default(), custom, shortest] {
        let text = p.to_json();
        let back = ImageProcessor::from_json_str(&text).unwrap();
        assert_eq!(back, p, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let class = if p.do_center_crop { "DeiTImageProcessor" } else { "ViTImageProcessor" };
        assert_eq!(v["image_processor_type"], class);
    }
    // The ViT form on disk: sizes as {"height", "width"}, 1/255 written in full.
    let v = ImageProcessor::vit_default().to_json_value();
    assert_eq!(v["size"], serde_json::json!({"height": 224, "width": 224}));
    assert_eq!(v["rescale_factor"], serde_json::json!(1.0f64 / 255.0));
    assert_eq!(v["image_mean"], serde_json::json!([0.5, 0.5, 0.5]));
    assert_eq!(ImageProcessor::deit_default().to_json_value()["image_mean"], serde_json::json!([0.485, 0.456, 0.406]));

    let dir = TempDir::new("config");
    let path = dir.path().join("preprocessor_config.json");
    ImageProcessor::deit_default().save(&path).unwrap();
    assert_eq!(ImageProcessor::from_file(&path).unwrap(), ImageProcessor::deit_default());
    let e = ImageProcessor::from_file(&dir.path().join("missing.json")).unwrap_err();
    assert!(e.to_string().contains("missing.json"), "{e}");
    std::fs::write(&path, r#"{"resample": 5}"#).unwrap();
    let e = ImageProcessor::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("preprocessor_config.json") && e.contains("resample"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Patchify

#[test]
fn patchify_orders_patches_in_raster_and_values_as_conv_weights() {
    // 2 channels, 4 x 4, value = 100 c + 10 y + x; patch 2 -> 4 patches of 2 * 2 * 2 = 8.
    let mut data = Vec::new();
    for c in 0..2 {
        for y in 0..4 {
            for x in 0..4 {
                data.push((100 * c + 10 * y + x) as f32);
            }
        }
    }
    let im = img(2, 4, 4, data);
    let p = patchify(&im, 2).unwrap();
    // Patch order (row, col): (0,0), (0,1), (1,0), (1,1); inside: (c, ky, kx).
    #[rustfmt::skip]
    let expected: [f32; 32] = [
        0.0, 1.0, 10.0, 11.0, 100.0, 101.0, 110.0, 111.0,
        2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0,
        20.0, 21.0, 30.0, 31.0, 120.0, 121.0, 130.0, 131.0,
        22.0, 23.0, 32.0, 33.0, 122.0, 123.0, 132.0, 133.0,
    ];
    assert_eq!(p.len(), 32);
    for (i, (f, e)) in p.iter().zip(&expected).enumerate() {
        assert_eq!(f, e, "element {i} (patch {}, offset {})", i / 8, i % 8);
    }

    // patches @ W^T equals a stride-p convolution with weight [d, C, p, p].
    let (d, cch, ps) = (3usize, 2usize, 2usize);
    let mut rng = fastrand::Rng::with_seed(7);
    let weight: Vec<f32> = (0..d * cch * ps * ps).map(|_| rng.f32() - 0.5).collect();
    for (patch_i, row) in p.chunks_exact(cch * ps * ps).enumerate() {
        let (pr, pc) = (patch_i / 2, patch_i % 2);
        for o in 0..d {
            let via_patches: f32 = row.iter().zip(&weight[o * 8..(o + 1) * 8]).map(|(a, b)| a * b).sum();
            let mut conv = 0.0f32;
            for c in 0..cch {
                for ky in 0..ps {
                    for kx in 0..ps {
                        conv += weight[((o * cch + c) * ps + ky) * ps + kx] * im.get(c, pr * ps + ky, pc * ps + kx);
                    }
                }
            }
            assert!((via_patches - conv).abs() < 1e-3, "patch {patch_i}, out {o}: {via_patches} vs {conv}");
        }
    }

    let e = patchify(&img(1, 4, 6, vec![0.0; 24]), 4).unwrap_err();
    assert!(e.to_string().contains("divisible"), "{e}");
    assert!(patchify(&im, 0).is_err());
    assert!(patchify(&im, 3).is_err());
}

// ---------------------------------------------------------------------------------------------
// Fashion-MNIST and the patch-survival grid

#[test]
fn fashion_mnist_first_test_image_patchifies() {
    let dir = common::fashion_mnist_dir();
    let set = load_fashion_mnist(&dir, VisionSplit::Test).unwrap();
    let images = images_from_idx(&set);
    assert_eq!(images.len(), 10_000);
    assert_eq!(set.labels[0], 9, "the first test image is an ankle boot");
    let first = &images[0];
    assert_eq!((first.channels, first.height, first.width), (1, 28, 28));
    let p = patchify(first, 4).unwrap();
    assert_eq!(p.len(), 49 * 16);
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(p.iter().any(|&v| v > 0.5), "not blank");
    // Grey -> 3-channel ViT input at 32 x 32.
    let proc = ImageProcessor::for_model(32, 3, &[0.5], &[0.5]).unwrap();
    let x = proc.apply(first).unwrap();
    assert_eq!((x.channels, x.height, x.width), (3, 32, 32));
    assert!(x.data.iter().all(|v| (-1.0..=1.0).contains(v)));
}

/// Mean RGB brightness of PNG pixels in `[x0, x0 + w) x [y0, y0 + h)`.
fn mean_brightness(png: &RgbImage, x0: u32, y0: u32, w: u32, h: u32) -> f64 {
    let mut sum = 0.0;
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            let p = png.get_pixel(x, y).0;
            sum += (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0;
        }
    }
    sum / (w * h) as f64
}

/// Two images of 8x8 (patch 4: 4 patches each), 3 columns, n_special = 1.
fn grid_fixture() -> (Vec<Image>, Vec<Vec<Vec<usize>>>) {
    let a = img(1, 8, 8, (0..64).map(|i| 0.3 + 0.7 * ((i % 8) as f32 / 7.0)).collect());
    let b = img(3, 8, 8, (0..192).map(|i| if i < 64 { 0.9 } else { 0.6 }).collect());
    let kept = vec![vec![vec![0, 1, 2, 3, 4], vec![0, 1, 3, 4], vec![0, 4]], vec![vec![0, 1, 2, 3, 4], vec![0, 2, 3], vec![0]]];
    (vec![a, b], kept)
}

#[test]
fn patch_survival_grid_darkens_dropped_patches() {
    let dir = TempDir::new("grid");
    let (images, kept) = grid_fixture();
    let scale = 3u32;

    // Without titles the size is pure geometry.
    let plain = dir.path().join("plain.png");
    render_patch_survival(&plain, &images, &kept, &[], &[], 1, 4, scale).unwrap();
    let png = image::open(&plain).unwrap().to_rgb8();
    let cell = 8 * scale;
    assert_eq!(png.dimensions(), (GAP + 3 * (cell + GAP), GAP + 2 * (cell + GAP)));

    // With titles: the layout's size, wider and taller than without.
    let titles: Vec<String> = ["input", "layer 1", "layer 2"].iter().map(|s| s.to_string()).collect();
    let rows: Vec<String> = ["grey", "colour"].iter().map(|s| s.to_string()).collect();
    let path = dir.path().join("sub").join("grid.png");
    render_patch_survival(&path, &images, &kept, &titles, &rows, 1, 4, scale).unwrap();
    let layout = patch_survival_layout(&images, 3, &titles, &rows, scale).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (layout.width, layout.height));
    assert!(layout.left > 0 && layout.top > 0);
    assert!(layout.width > GAP + 3 * (cell + GAP) && layout.height > GAP + 2 * (cell + GAP));
    // Title text is drawn (dark pixels in the top band).
    assert!((0..layout.width).any(|x| (0..layout.top).any(|y| png.get_pixel(x, y).0[0] < 100)), "no column title drawn");

    // Image 0, patch 1 (token 2, top-right patch) is kept in column 0 and dropped in column 1.
    let patch_px = 4 * scale;
    let (x0, y0) = layout.image_origin(0, 0, &images[0]);
    let (x1, y1) = layout.image_origin(0, 1, &images[0]);
    let kept_b = mean_brightness(&png, x0 + patch_px, y0, patch_px, patch_px);
    let dropped_b = mean_brightness(&png, x1 + patch_px, y1, patch_px, patch_px);
    assert!(dropped_b < 0.5 * kept_b, "dropped {dropped_b} vs kept {kept_b}");
    // Patch 0 (token 1) is kept in both: identical pixels, equal to the image (nearest upscale).
    for dy in 0..patch_px {
        for dx in 0..patch_px {
            let a = png.get_pixel(x0 + dx, y0 + dy);
            assert_eq!(a, png.get_pixel(x1 + dx, y1 + dy));
            let v = images[0].get(0, (dy / scale) as usize, (dx / scale) as usize);
            assert_eq!(a.0[0], (v * 255.0).round() as u8);
        }
    }
    // The colour image keeps its colour where kept (row 1, column 0: R = 0.9, G = B = 0.6).
    let (x, y) = layout.image_origin(1, 0, &images[1]);
    assert_eq!(png.get_pixel(x, y).0, [230, 153, 153]);
    // No temporary files left.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    if let Some(out) = std::env::var_os("STTABT_KEEP_PLOTS") {
        std::fs::copy(&path, Path::new(&out).join("patch_survival_synthetic.png")).unwrap();
    }
}

#[test]
fn patch_survival_grid_rejects_mismatched_input() {
    let dir = TempDir::new("grid-bad");
    let path = dir.path().join("g.png");
    let (images, kept) = grid_fixture();
    let grid = |kept: &[Vec<Vec<usize>>], cols: &[String], rows: &[String], patch: usize| {
        render_patch_survival(&path, &images, kept, cols, rows, 1, patch, 2)
    };
    let msg = |r: Result<(), VisionError>| r.unwrap_err().to_string();
    assert!(msg(grid(&kept[..1], &[], &[], 4)).contains("1 kept-token lists for 2 images"));
    let mut ragged = kept.clone();
    ragged[1].pop();
    assert!(msg(grid(&ragged, &[], &[], 4)).contains("columns"));
    assert!(msg(grid(&kept, &["a".into()], &[], 4)).contains("1 column titles for 3 columns"));
    assert!(msg(grid(&kept, &[], &["a".into()], 4)).contains("1 row titles for 2 images"));
    let mut out_of_range = kept.clone();
    out_of_range[0][2].push(5);
    assert!(msg(grid(&out_of_range, &[], &[], 4)).contains("token index 5 out of range"));
    assert!(msg(grid(&kept, &[], &[], 3)).contains("not divisible"));
    assert!(!path.exists(), "nothing written on error");
}

#[test]
fn fashion_mnist_patch_survival_grid() {
    let dir = common::fashion_mnist_dir();
    let set = load_fashion_mnist(&dir, VisionSplit::Test).unwrap();
    let images: Vec<Image> = images_from_idx(&set).into_iter().take(2).collect();
    // 49 patches of 4 x 4; keep all, then the brightest half, then the brightest quarter.
    let kept: Vec<Vec<Vec<usize>>> = images
        .iter()
        .map(|im| {
            let p = patchify(im, 4).unwrap();
            let mut order: Vec<usize> = (0..49).collect();
            let energy = |i: usize| p[i * 16..(i + 1) * 16].iter().sum::<f32>();
            order.sort_by(|&a, &b| energy(b).total_cmp(&energy(a)));
            [49, 24, 12]
                .iter()
                .map(|&k| {
                    let mut t: Vec<usize> = std::iter::once(0).chain(order[..k].iter().map(|i| i + 1)).collect();
                    t.sort();
                    t
                })
                .collect()
        })
        .collect();
    let titles: Vec<String> = ["input", "layer 4", "layer 8"].iter().map(|s| s.to_string()).collect();
    let rows: Vec<String> = set.labels[..2].iter().map(|&l| set.class_names[l as usize].clone()).collect();
    let tmp = TempDir::new("fmnist-grid");
    let path = tmp.path().join("fmnist.png");
    render_patch_survival(&path, &images, &kept, &titles, &rows, 1, 4, 4).unwrap();
    let layout = patch_survival_layout(&images, 3, &titles, &rows, 4).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (layout.width, layout.height));
    assert!(layout.cell_width >= 28 * 4 && layout.cell_height == 28 * 4);
    // A patch kept in column 0 but dropped in column 2 is darker there (pick the 13th brightest).
    let p = patchify(&images[0], 4).unwrap();
    let dropped = (0..49)
        .find(|&i| !kept[0][2].contains(&(i + 1)) && p[i * 16..(i + 1) * 16].iter().sum::<f32>() > 4.0)
        .expect("a bright dropped patch");
    let (py, px) = ((dropped / 7) as u32 * 16, (dropped % 7) as u32 * 16);
    let (x0, y0) = layout.image_origin(0, 0, &images[0]);
    let (x2, y2) = layout.image_origin(0, 2, &images[0]);
    let kept_b = mean_brightness(&png, x0 + px, y0 + py, 16, 16);
    let dropped_b = mean_brightness(&png, x2 + px, y2 + py, 16, 16);
    assert!(dropped_b < kept_b * 0.6, "dropped {dropped_b} vs kept {kept_b}");
    if let Some(out) = std::env::var_os("STTABT_KEEP_PLOTS") {
        std::fs::copy(&path, Path::new(&out).join("patch_survival_fmnist.png")).unwrap();
    }
}
