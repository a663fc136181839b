//! The bench's modes ([`BMode`]): each maps to a [`Planner`] and the models it runs on, and one
//! batch runs through the planner interface with its stages timed apart.

use super::*;

#[derive(Clone)]
pub(super) enum BMode {
    /// The full plan: every row of every layer (section 1).
    Dense,
    /// Every input, only `O_L` (CLS) at the top layer.
    DenseCls,
    /// The full plan on the teacher in fp32 ([`Ctx::teacher_fp32`]), beside an int8 bench: the
    /// reference a bundle's headline speed-up is measured against.
    DenseFp32,
    Abt(f64),
    /// ABT with the keep fraction found by [`calibrate_abt_keep`] for a mean retention (section 5).
    AbtAt {
        k: f64,
        retention: f64,
    },
    TopK(f64),
    Fixed(f64),
    /// The i-th concrete-mask run (its own teacher and ApproxNet).
    Concrete(usize),
    /// The i-th LTP run (its own teacher).
    Ltp(usize),
    /// Any [`crate::infer::Mode`] on the bench's teacher and ApproxNet (e.g. a bundle's planner).
    Planned(crate::infer::Mode),
}

impl BMode {
    pub(super) fn label(&self) -> String {
        match self {
            BMode::Dense => "dense".into(),
            BMode::DenseCls => "dense-cls".into(),
            BMode::DenseFp32 => "dense fp32".into(),
            BMode::Abt(k) => format!("abt k={k:.2}"),
            BMode::AbtAt { k, retention } => format!("abt@{retention:.2} k={k:.3}"),
            BMode::TopK(k) => format!("topk k_min={k:.2}"),
            BMode::Fixed(k) => format!("fixed keep={k:.2}"),
            BMode::Concrete(i) => format!("concrete #{i}"),
            BMode::Ltp(i) => format!("ltp #{i}"),
            BMode::Planned(m) => m.label(),
        }
    }

    /// The models and planner this mode runs (concrete and LTP runs bring their own teacher).
    fn planner<'a>(&self, cx: &Ctx<'a>, layers: usize) -> anyhow::Result<(Models<'a>, Box<dyn Planner>)> {
        let models = Models { teacher: cx.teacher, approx: cx.approx };
        Ok(match self {
            BMode::Dense => (models, Box::new(Dense)),
            BMode::DenseCls => (models, Box::new(DenseCls)),
            BMode::DenseFp32 => {
                let teacher = cx.teacher_fp32.ok_or_else(|| anyhow::anyhow!("dense fp32 needs the fp32 teacher"))?;
                (Models { teacher, approx: None }, Box::new(Dense))
            }
            BMode::Fixed(k) => (models, Box::new(KeepFirst { keep: *k })),
            BMode::Abt(k) | BMode::AbtAt { k, .. } => {
                cx.approx.ok_or_else(|| anyhow::anyhow!("abt needs an ApproxNet"))?;
                (models, Box::new(Abt::topk(vec![*k], AttentionSource::ApproxNet)))
            }
            BMode::Concrete(i) => {
                let m = &cx.concrete[*i];
                let models = Models { teacher: &m.teacher, approx: Some(&m.approx.model) };
                (models, Box::new(Concrete { theta0: m.theta0, theta: m.theta.clone() }))
            }
            BMode::TopK(k) => (models, Box::new(ManualTopK { k_min: *k, layers })),
            BMode::Planned(m) => {
                if m.needs_approx() {
                    cx.approx.ok_or_else(|| anyhow::anyhow!("{} needs an ApproxNet", m.label()))?;
                }
                (models, m.planner(layers))
            }
            BMode::Ltp(i) => {
                let m = &cx.ltp[*i];
                (
                    Models { teacher: &m.teacher, approx: None },
                    Box::new(Ltp { lambda: m.lambda, thresholds: LtpPlanner { theta: m.theta.clone(), score: m.score } }),
                )
            }
        })
    }

    pub(super) fn label_in(&self, cx: &Ctx) -> String {
        match self {
            BMode::Concrete(i) => format!("concrete θ0={}", cx.concrete[*i].theta0),
            BMode::Ltp(i) => format!("ltp λ={}", cx.ltp[*i].lambda),
            _ => self.label(),
        }
    }
}

pub(super) struct Ctx<'a> {
    pub(super) teacher: &'a Encoder,
    /// The teacher in fp32 when the bench runs it in another precision and times `dense fp32`.
    pub(super) teacher_fp32: Option<&'a Encoder>,
    pub(super) approx: Option<&'a Encoder>,
    pub(super) concrete: &'a [crate::train::concrete::ConcreteModel],
    pub(super) ltp: &'a [crate::train::ltp::LtpModel],
}

/// One batch end to end from token ids; adds its stage seconds to `st` and returns the sums over
/// its examples of (retention, the teacher's executed FLOPs, total section-5 FLOPs).
pub(super) fn run_batch(cx: &Ctx, inputs: &[EncodedInput], mode: &BMode, st: &mut Stages) -> anyhow::Result<(f64, f64, f64)> {
    let (models, planner) = mode.planner(cx, cx.teacher.layers.len())?;
    run_planned(&models, planner.as_ref(), inputs, st)
}

/// [`run_batch`] for any planner on its models.
pub(super) fn run_planned(
    models: &Models,
    planner: &dyn Planner,
    inputs: &[EncodedInput],
    st: &mut Stages,
) -> anyhow::Result<(f64, f64, f64)> {
    let c = &models.teacher.config;
    // The executor's clock starts here, or after the planning of the planners that run an
    // attention pass (their ApproxNet pass goes to `approx`/`planning`, and its layers are not
    // the executor's stages).
    let mut te = Instant::now();
    let schedule = planner.schedule(models, inputs)?;
    if let Schedule::Plans { timing: Some(timing), .. } = &schedule {
        st.approx += timing.approx;
        st.planning += timing.planning;
        crate::profile::take();
        te = Instant::now();
    }
    let model = models.teacher;
    let (outs, plans) = crate::planners::execute(models, inputs, schedule, RunOptions::default())?;
    st.executor += te.elapsed().as_secs_f64();
    st.add_executor_stages(crate::profile::take());
    let th = Instant::now();
    for x in &outs {
        std::hint::black_box(model.logits_of(x)?);
    }
    st.head += th.elapsed().as_secs_f64();
    let approx_cfg = models.approx.map(|a| &a.config);
    let cost = planner.cost();
    let executed = Cost { approx_pass: false, dense_teacher_pass: false, ..cost };
    let mut sums = (0.0, 0.0, 0.0);
    for p in &plans {
        sums.0 += p.retention();
        sums.1 += executed.flops(c, None, p) as f64;
        sums.2 += cost.flops(c, approx_cfg, p) as f64;
    }
    Ok(sums)
}

/// The ABT keep fraction `k` (top-k form, ALGORITHM.md section 3) whose plans on `inputs` have a
/// mean retention (section 5) closest to `target` (0..1): bisection over `k`, retention being
/// non-decreasing in `k`. Lets the bench compare ABT and the fixed plan at the same retention (ABT
/// keeps more tokens in early layers than its final `k`: k = 0.3 gives ~41% retention).
///
/// Errors: the ApproxNet pass fails (bad input).
pub fn calibrate_abt_keep(approx: &Encoder, inputs: &[EncodedInput], target: f64) -> anyhow::Result<f64> {
    let retention = |k: f64| -> anyhow::Result<f64> {
        let plans = crate::planners::abt::abt_plans(approx, inputs, &AbtConfig::topk(k))?;
        Ok(plans.iter().map(|p| p.retention()).sum::<f64>() / plans.len().max(1) as f64)
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut best = (f64::INFINITY, 1.0);
    for _ in 0..14 {
        let k = 0.5 * (lo + hi);
        let r = retention(k)?;
        if (r - target).abs() < best.0 {
            best = ((r - target).abs(), k);
        }
        if r < target {
            lo = k;
        } else {
            hi = k;
        }
    }
    Ok(best.1)
}
