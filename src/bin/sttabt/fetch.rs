//! `sttabt fetch`.

use super::*;

// The options of `sttabt fetch` (the about text is on `Command::Fetch`).
#[derive(clap::Args)]
pub struct FetchArgs {
    /// Also fetch Fashion-MNIST.
    #[arg(long)]
    pub vision: bool,
}

/// Run `sttabt fetch`.
pub fn run(args: FetchArgs) -> Result<()> {
    let FetchArgs { vision } = args;
    fetch(vision)
}

/// `sttabt fetch`: fill the asset cache (the library's [`assets::fetch`], which runs
/// `scripts/fetch-assets` under a lock).
pub(crate) fn fetch(vision: bool) -> Result<()> {
    assets::fetch(vision)?;
    Ok(())
}
