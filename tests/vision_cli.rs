//! End to end on real images through the command line: `sttabt demo --vision --fast` (a DeiT
//! trained from scratch on Fashion-MNIST, its ApproxNet, concrete masks, the table, plots and the
//! patch picture), and a user's image folder (finetune --image-folder, classify --image).

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;

fn sttabt(args: &[&str], extra: &[&Path]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sttabt")).args(args).args(extra).output().expect("run sttabt");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn vision_demo_fast_on_fashion_mnist() {
    common::ensure_assets(true);
    let dir = TempDir::new("vision-demo");
    let (ok, stdout, stderr) = sttabt(&["demo", "--vision", "--fast", "--quiet", "--out"], &[dir.path()]);
    assert!(ok, "demo --vision --fast failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let ft = common::read_json(dir.path().join("teacher/finetune.json"));
    let dev_acc = ft["report"]["best_dev_accuracy"].as_f64().unwrap();
    // 4 096 training images, one epoch from scratch: far above chance (10%), far below the full demo
    assert!(dev_acc >= 0.25, "DeiT dev accuracy {dev_acc} after the fast run (chance is 0.10)");
    // the saved teacher is an HF DeiT with its image processor
    let cfg = common::read_json(dir.path().join("teacher/config.json"));
    assert_eq!(cfg["model_type"], "deit");
    assert_eq!(cfg["architectures"][0], "DeiTForImageClassificationWithTeacher");
    assert!(dir.path().join("teacher/preprocessor_config.json").exists());
    let res = common::read_json(dir.path().join("results/results.json"));
    let points = res["results"]["points"].as_array().unwrap();
    for fam in ["dense", "abt", "abt-actual", "topk", "concrete"] {
        assert!(points.iter().any(|p| p["family"] == fam), "results.json lacks mode {fam}");
    }
    for p in points {
        let r = p["retention"].as_f64().unwrap();
        assert!(r > 0.0 && r <= 1.0, "retention {r}");
        if p["family"] == "abt" && p["mode"]["k"].as_f64() == Some(0.1) {
            assert!(r < 0.4, "ABT k = 0.1 keeps {r} of the tokens");
        }
    }
    for f in ["accuracy_vs_retention.png", "patch_survival.png"] {
        let img = image::open(dir.path().join("results").join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(img.width() > 200 && img.height() > 200, "{f} is {}x{}", img.width(), img.height());
    }
}

/// Two classes a ViT can tell apart from a handful of examples: reddish vs bluish noisy images
/// (20x20, resized to the model's 32x32 by the image processor).
fn write_folder(root: &Path, per_class: usize) {
    let mut rng = fastrand::Rng::with_seed(3);
    for (class, red) in [("red", true), ("blue", false)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(20, 20, |_, _| {
                let (hi, lo, mid) = (rng.u8(150..255), rng.u8(0..90), rng.u8(0..255));
                if red {
                    image::Rgb([hi, mid, lo])
                } else {
                    image::Rgb([lo, mid, hi])
                }
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("red").join("notes.txt"), "not an image").unwrap();
}

#[test]
fn image_folder_finetune_then_classify() {
    let data = TempDir::new("img-folder");
    write_folder(data.path(), 40);
    let out = TempDir::new("img-model");
    let model = out.path().join("m");
    let (ok, stdout, stderr) = sttabt(
        &["finetune", "--quiet", "--epochs", "4", "--batch-size", "8", "--image-folder"],
        &[data.path(), Path::new("--out"), &model],
    );
    assert!(ok, "finetune --image-folder failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    let cfg = common::read_json(model.join("config.json"));
    assert_eq!(cfg["id2label"]["0"], "blue");
    assert_eq!(cfg["image_size"], 32);
    let ft = common::read_json(model.join("finetune.json"));
    assert!(ft["test_accuracy"].as_f64().unwrap() >= 0.75, "two trivially separable classes: {}", ft["test_accuracy"]);
    // refuse to overwrite the finished run
    let (ok, _, stderr) = sttabt(&["finetune", "--quiet", "--image-folder"], &[data.path(), Path::new("--out"), &model]);
    assert!(!ok && stderr.contains("--resume"), "{stderr}");
    // classify two files, pruned, as JSON lines
    let a = data.path().join("red/000.png");
    let b = data.path().join("blue/001.png");
    let (ok, stdout, stderr) = sttabt(
        &["classify", "--mode", "abt-actual", "--keep", "0.3", "--json", "--model"],
        &[&model, Path::new("--image"), &a, Path::new("--image"), &b],
    );
    assert!(ok, "classify --image failed:\n{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["retention"].as_f64().unwrap() < 0.8), "{stdout}");
    // eval on the folder: every mode, and the patch picture drawn from the 20x20 images as the
    // model sees them (resized to 32x32)
    let ev = out.path().join("eval");
    let (ok, stdout, stderr) = sttabt(
        &["eval", "--quiet", "--ks", "0.3,0.5", "--timing-examples", "4", "--image-folder"],
        &[data.path(), Path::new("--model"), &model, Path::new("--out"), &ev],
    );
    assert!(ok, "eval --image-folder failed:\n{stdout}\n{stderr}");
    let pic = image::open(ev.join("patch_survival.png")).expect("patch picture");
    assert!(pic.width() > 100, "{}", pic.width());
    let csv = std::fs::read_to_string(ev.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let unique: std::collections::HashSet<&&str> = header.iter().collect();
    assert_eq!(unique.len(), header.len(), "duplicate CSV columns: {header:?}");
    // a folder with train/ but no test/ says so
    let half = TempDir::new("img-half");
    write_folder(&half.path().join("train"), 3);
    let (ok, _, stderr) = sttabt(&["finetune", "--quiet", "--image-folder"], &[half.path(), Path::new("--out"), &out.path().join("h")]);
    assert!(!ok && stderr.contains("no test/"), "{stderr}");
    // a corrupt image is named in the error
    let bad = data.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let (ok, _, stderr) = sttabt(&["classify", "--mode", "dense", "--model"], &[&model, Path::new("--image"), &bad]);
    assert!(!ok && stderr.contains("broken.png"), "{stderr}");
    // an image flag with a text model, and a missing folder, are clear errors
    let (ok, _, stderr) =
        sttabt(&["finetune", "--quiet", "--image-folder"], &[&data.path().join("nope"), Path::new("--out"), &out.path().join("x")]);
    assert!(!ok && stderr.contains("nope"), "{stderr}");
}

/// `finetune --image-folder --dev-limit N`: the per-epoch dev evaluation uses the first N dev
/// images only (40 images split 32/4/4: 3 of the 4), and finetune.json records N; the test
/// split is not limited.
#[test]
fn image_folder_finetune_dev_limit() {
    let data = TempDir::new("img-dev-limit");
    write_folder(data.path(), 20);
    let out = TempDir::new("img-dev-limit-model");
    let model = out.path().join("m");
    let (ok, stdout, stderr) = sttabt(
        &["finetune", "--quiet", "--epochs", "1", "--batch-size", "8", "--train-limit", "8", "--dev-limit", "3", "--image-folder"],
        &[data.path(), Path::new("--out"), &model],
    );
    assert!(ok, "finetune --image-folder --dev-limit failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("training on 8 images, dev 3 "), "{stderr}");
    let ft = common::read_json(model.join("finetune.json"));
    assert_eq!(ft["dev_examples"], 3, "{ft}");
    assert_eq!(ft["test_examples"], 4, "{ft}");
    let acc = ft["report"]["dev_accuracy"][0].as_f64().expect("epoch 1 dev accuracy");
    assert!((acc * 3.0 - (acc * 3.0).round()).abs() < 1e-9, "{acc} is not a count over 3 dev images");
}
