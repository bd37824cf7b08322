//! `nectar restore`: brings entries of the trash back (see `nectar_meta::trash`).

use anyhow::{bail, Result};
use clap::Args;
use nectar_meta::Meta;

#[derive(Args)]
pub struct RestoreArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Hours of the trash to restore from (`YYYY-MM-DD-HH`, UTC, as `ls .trash` lists
    /// them).
    #[arg(required = true)]
    hours: Vec<String>,
    /// Move the entries back into their original directories; without it, only the
    /// removed trees are rebuilt inside the trash.
    #[arg(long)]
    put_back: bool,
    /// Entries moved at a time.
    #[arg(long, default_value_t = 10)]
    threads: usize,
}

pub fn run(a: RestoreArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("only root can restore files from the trash (run nectar restore as root)");
    }
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    meta.load()?;
    let mut reports = serde_json::Map::new();
    for hour in &a.hours {
        let r = meta.restore_hour(hour, a.put_back, a.threads)?;
        tracing::info!(
            "{hour}: {} restored, {} need --put-back, {} conflicts, {} failed",
            r.restored,
            r.need_put_back,
            r.conflicts,
            r.failed
        );
        reports.insert(hour.clone(), serde_json::to_value(r)?);
    }
    println!("{}", serde_json::to_string_pretty(&reports)?);
    Ok(())
}
