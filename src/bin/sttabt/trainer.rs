//! `--trainer` of the training commands (finetune, distill, concrete, ltp): which
//! implementation trains, and the default (issue 15: native wherever it covers the model).

use sttabt::model::config::EncoderConfig;
use sttabt::train::native::NativeBert;

/// `--trainer`: `burn` (autodiff on burn's Flex backend, the reference) or `native`
/// (forward/backward on the crate's own kernels; post-LayerNorm BERT text models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainerArg {
    Burn,
    Native,
}

impl TrainerArg {
    /// `"burn"` or `"native"`, as reports and checkpoints name the trainer.
    pub fn name(self) -> &'static str {
        match self {
            Self::Burn => "burn",
            Self::Native => "native",
        }
    }

    /// The trainer of `job` on a model of `config`: `asked` (`--trainer`) when given; else
    /// native where the native trainer covers the model ([`NativeBert::covers`]: post-LayerNorm
    /// BERT text encoders), else burn, which is said on stderr unless `quiet`.
    pub fn resolve(asked: Option<Self>, config: &EncoderConfig, job: &str, quiet: bool) -> Self {
        match asked {
            Some(t) => t,
            None if NativeBert::covers(config) => Self::Native,
            None => {
                if !quiet {
                    eprintln!(
                        "{job}: the native trainer covers post-LayerNorm BERT text models only, not this {} model; training on burn (the reference)",
                        config.model_type()
                    );
                }
                Self::Burn
            }
        }
    }

    /// The trainer of `job` on images: burn (the native trainer covers text models only),
    /// said on stderr unless `quiet` or asked for.
    ///
    /// Errors: `--trainer native`.
    pub fn for_images(asked: Option<Self>, job: &str, quiet: bool) -> anyhow::Result<Self> {
        match asked {
            Some(Self::Native) => anyhow::bail!("--trainer native covers text BERT models only; {job} images with --trainer burn"),
            Some(Self::Burn) => Ok(Self::Burn),
            None => {
                if !quiet {
                    eprintln!("{job}: the native trainer covers text BERT models only; training the image model on burn (the reference)");
                }
                Ok(Self::Burn)
            }
        }
    }
}
