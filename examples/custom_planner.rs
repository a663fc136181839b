//! A planner of your own: implement [`Planner`] and run it through the same executor as ABT,
//! concrete masking and the rest. This one is ahead-of-time and needs no ApproxNet: it keeps the
//! first half of the tokens (and always the last, `[SEP]`) in the upper half of the layers.
//!
//! `cargo run --release --example custom_planner` (uses all-MiniLM-L6-v2 from the asset cache).
use sttabt::error::ModelError;
use sttabt::planners::{run, Cost, Models, Planner, Schedule};
use sttabt::text::tokenizer::TextTokenizer;
use sttabt::{EncodedInput, Encoder, RunOptions, TokenPlan};

/// Keep the first `keep` fraction of the tokens (plus the last) in layers L/2+1..L.
struct FirstHalf {
    keep: f64,
}

impl Planner for FirstHalf {
    fn label(&self) -> String {
        format!("first-half keep={:.2}", self.keep)
    }
    fn family(&self) -> &'static str {
        "first-half"
    }
    fn cost(&self) -> Cost {
        Cost::default() // only the teacher's planned rows (section 5)
    }
    fn schedule<'a>(&'a self, models: &Models<'a>, inputs: &[EncodedInput]) -> Result<Schedule<'a>, ModelError> {
        let layers = models.teacher.layers.len();
        let plans = inputs
            .iter()
            .map(|x| {
                let n = x.len();
                let c = ((self.keep * n as f64).ceil() as usize).clamp(1, n);
                let mut upper: Vec<usize> = (0..c).collect();
                if !upper.contains(&(n - 1)) {
                    upper.push(n - 1);
                }
                let per_layer = (0..layers).map(|l| if l < layers / 2 { (0..n).collect() } else { upper.clone() }).collect();
                TokenPlan::from_inputs(n, per_layer, vec![0]).map_err(|e| ModelError::Input(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule::Plans { plans, timing: None })
    }
}

fn main() -> anyhow::Result<()> {
    sttabt::assets::ensure(false)?;
    let dir = sttabt::assets::default_model_dir();
    let teacher = Encoder::load(&dir)?;
    let tok = TextTokenizer::from_dir(&dir, 128)?;
    let inputs = vec![tok.encode("the plot is thin but the acting carries every scene", None)?.input];
    let planner = FirstHalf { keep: 0.5 };
    let out = run(&planner, &Models { teacher: &teacher, approx: None }, &inputs, RunOptions::default())?;
    let plan = &out.plans[0];
    let flops = planner.cost().flops(&teacher.config, None, plan);
    println!(
        "{}: retention {:.3}, {:.3} GFLOPs, inputs per layer {:?}",
        planner.label(),
        plan.retention(),
        flops as f64 / 1e9,
        plan.input_sets().iter().map(Vec::len).collect::<Vec<_>>()
    );
    Ok(())
}
