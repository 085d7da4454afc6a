//! `gpufleet bench ingest` (placeholder until the pipeline lands).

use crate::config::Settings;
use anyhow::Result;

/// Flags of `bench ingest`.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestBenchArgs {
    /// Rows of synthetic DCGM CSV.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark.
pub async fn ingest(_args: &IngestBenchArgs, _settings: &Settings) -> Result<()> {
    anyhow::bail!("not built yet")
}
