//! `sttabt eval --compare-precision`: int8 vs fp32 accuracy per mode on the test split (issue 17).

use super::*;
use sttabt::model::Precision;
use sttabt::precision_eval::{compare_modes, format_comparison, int8_kernels_here, ModelSet, PrecisionComparison};

/// The model directories of an `eval --compare-precision` run.
pub(crate) struct RunPaths<'a> {
    pub model: &'a std::path::Path,
    pub approx: Option<&'a std::path::Path>,
    pub concrete: &'a [PathBuf],
    pub ltp: &'a [PathBuf],
}

/// Load every model once in fp32, copy it to int8 (the teachers: `--precision int8-w7` gives
/// 7-bit weights, anything else `int8`; the ApproxNets too with `--approx-precision int8` or
/// `int8-w7`: then the int8 run is the whole int8 pipeline and its plans can
/// differ from the fp32 run's, which the plan agreement column measures), compare the modes on
/// the test split, print the table and write `out/precision_comparison.json`. The fp32 run is
/// always fp32 throughout.
pub(crate) fn compare(
    data: &DataArgs,
    paths: RunPaths,
    out: &std::path::Path,
    opts: &sttabt::eval::EvalOptions,
    max_length: usize,
    precision: &PrecisionArgs,
    peer_json: Option<&std::path::Path>,
) -> Result<()> {
    let peer = match peer_json {
        Some(p) => Some(
            serde_json::from_str::<serde_json::Value>(
                &std::fs::read_to_string(p).with_context(|| format!("reading --peer-json {}", p.display()))?,
            )
            .with_context(|| format!("--peer-json {} is not valid JSON", p.display()))?,
        ),
        None => None,
    };
    let fp32_args = PrecisionArgs { precision_flag: Some(Precision::Fp32), approx_precision: Precision::Fp32 };
    let teacher_int8 = if precision.precision().is_int8() { precision.precision() } else { Precision::Int8 };
    let int8_args = PrecisionArgs { precision_flag: Some(teacher_int8), approx_precision: precision.approx_precision };
    let needs = DataNeeds::eval("eval").with_eval_limit(opts.limit);
    let mut source = data.source(&needs)?;
    let model = paths.model;
    let teacher = Encoder::load(model).with_context(|| format!("loading {}", model.display()))?;
    anyhow::ensure!(teacher.classifier.is_some(), "{} has no classification head; fine-tune one with `sttabt finetune`", model.display());
    let approx =
        match paths.approx {
            Some(a) => Some(fp32_args.approx(
                sttabt::approx::ApproxNet::load(a, &teacher.config).with_context(|| format!("loading ApproxNet {}", a.display()))?,
            )?),
            None => None,
        };
    let concrete: Vec<_> = paths
        .concrete
        .iter()
        .map(|d| {
            fp32_args
                .concrete(sttabt::train::concrete::ConcreteModel::load(d).with_context(|| format!("loading concrete run {}", d.display()))?)
        })
        .collect::<Result<_>>()?;
    let ltp: Vec<_> = paths
        .ltp
        .iter()
        .map(|d| sttabt::train::ltp::LtpModel::load(d).with_context(|| format!("loading LTP run {}", d.display())))
        .collect::<Result<_>>()?;
    let teacher8 = int8_args.teacher(teacher.clone())?;
    let concrete8: Vec<_> = concrete.iter().map(|c| int8_args.concrete(c.clone())).collect::<Result<_>>()?;
    let ltp8: Vec<_> = ltp.iter().map(|m| int8_args.ltp(m.clone())).collect::<Result<_>>()?;
    if let sttabt::pipeline::DataSource::Table { train: None, spec, .. } = &mut source {
        if spec.label_names.is_none() && !teacher.config.labels.is_empty() {
            spec.label_names = Some(teacher.config.labels.clone());
        }
    }
    let tok = text_tokenizer(model, &teacher, max_length)?;
    let splits = data.load(&source, &needs, opts.quiet)?;
    let (test, _) = sttabt::pipeline::tokenize(&tok, &splits.test, opts.limit)?;
    // the int8 run's ApproxNet: the fp32 one itself (no copy) unless --approx-precision int8
    let approx8 = approx
        .as_ref()
        .map(|a| a.model.at_precision(precision.approx_precision))
        .transpose()
        .with_context(|| format!("switching the ApproxNet to --approx-precision {}", precision.approx_precision))?;
    let fp32 = ModelSet { teacher: &teacher, approx: approx.as_ref().map(|a| &a.model), concrete: &concrete, ltp: &ltp };
    let int8 = ModelSet { teacher: &teacher8, approx: approx8.as_deref(), concrete: &concrete8, ltp: &ltp8 };
    let boot = sttabt::data::bootstrap::Bootstrap::default();
    if !opts.quiet {
        eprintln!("comparing fp32 and {teacher_int8} on {} test examples ...", test.len());
    }
    let (modes, skipped) = compare_modes(&fp32, &int8, &opts.ks, &test, &boot)?;
    let report = PrecisionComparison {
        teacher_precision: teacher_int8,
        approx_precision_fp32_run: Precision::Fp32,
        approx_precision_int8_run: precision.approx_precision,
        split: "test".into(),
        data: splits.description.clone(),
        examples: test.len(),
        int8_kernels: int8_kernels_here(),
        bootstrap_resamples: boot.resamples,
        bootstrap_level: boot.level,
        bootstrap_seed: boot.seed,
        modes,
        skipped,
        peer,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("precision_comparison.json");
    sttabt::model::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    print!("{}", format_comparison(&report));
    println!("results: {}", path.display());
    Ok(())
}
