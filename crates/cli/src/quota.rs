//! `nectar quota`: directory quotas, named and flagged as `juicefs quota` (see
//! `nectar_meta::quota` for how they are enforced across clients).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use nectar_meta::{Meta, Quota};

#[derive(Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    command: QuotaCommand,
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Set a directory's quota (a new one's usage is counted from its tree first).
    Set {
        #[command(flatten)]
        on: OnPath,
        /// Space limit in GiB (0: none).
        #[arg(long)]
        capacity: Option<u64>,
        /// Inode limit (0: none).
        #[arg(long)]
        inodes: Option<u64>,
    },
    /// Show a directory's quota.
    Get {
        #[command(flatten)]
        on: OnPath,
    },
    /// Remove a directory's quota.
    #[command(alias = "del")]
    Delete {
        #[command(flatten)]
        on: OnPath,
    },
    /// List every directory quota of the volume.
    #[command(alias = "ls")]
    List {
        /// Metadata engine URL of the volume.
        meta_url: String,
    },
    /// Count the usage of quotas from their trees and compare it with the stored one.
    Check {
        /// Metadata engine URL of the volume.
        meta_url: String,
        /// The directory whose quota to check (all of them when left out).
        #[arg(long)]
        path: Option<String>,
        /// Write the counted usage over a stored one that differs.
        #[arg(long)]
        repair: bool,
        /// Threads reading each tree.
        #[arg(long, default_value_t = 10)]
        threads: usize,
    },
}

#[derive(Args)]
struct OnPath {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// The directory, from the volume's root.
    #[arg(long)]
    path: String,
}

fn connect(url: &str) -> Result<std::sync::Arc<Meta>> {
    let meta = Meta::connect(&crate::meta_url(url))?;
    meta.load()?;
    Ok(meta)
}

fn gib(n: u64) -> Result<i64> {
    n.checked_mul(1 << 30)
        .and_then(|b| i64::try_from(b).ok())
        .ok_or_else(|| anyhow::anyhow!("--capacity {n} GiB is too large"))
}

pub fn run(a: QuotaArgs) -> Result<()> {
    match a.command {
        QuotaCommand::Set {
            on,
            capacity,
            inodes,
        } => {
            if capacity.is_none() && inodes.is_none() {
                bail!("quota set needs --capacity or --inodes (or both)");
            }
            let meta = connect(&on.meta_url)?;
            let dir = crate::mount::resolve_subdir(&meta, &on.path)?;
            let space = capacity.map(gib).transpose()?;
            let inodes = inodes.map(|i| i64::try_from(i).unwrap_or(i64::MAX));
            let q = meta.set_quota(dir, space, inodes, 10)?;
            print_table(&[(on.path, q)]);
        }
        QuotaCommand::Get { on } => {
            let meta = connect(&on.meta_url)?;
            let dir = crate::mount::resolve_subdir(&meta, &on.path)?;
            match meta.get_quota(dir)? {
                Some(q) => print_table(&[(on.path, q)]),
                None => bail!("{} has no quota", on.path),
            }
        }
        QuotaCommand::Delete { on } => {
            let meta = connect(&on.meta_url)?;
            let dir = crate::mount::resolve_subdir(&meta, &on.path)?;
            if !meta.delete_quota(dir)? {
                bail!("{} has no quota", on.path);
            }
            tracing::info!("quota of {} removed", on.path);
        }
        QuotaCommand::List { meta_url } => {
            let meta = connect(&meta_url)?;
            let rows = with_paths(&meta, meta.list_quotas()?)?;
            print_table(&rows);
        }
        QuotaCommand::Check {
            meta_url,
            path,
            repair,
            threads,
        } => {
            let meta = connect(&meta_url)?;
            let quotas = match &path {
                Some(p) => {
                    let dir = crate::mount::resolve_subdir(&meta, p)?;
                    match meta.get_quota(dir)? {
                        Some(q) => vec![(dir, q)],
                        None => bail!("{p} has no quota"),
                    }
                }
                None => meta.list_quotas()?,
            };
            let mut broken = 0;
            for (path, (dir, _)) in with_paths(&meta, quotas.clone())?.iter().zip(&quotas) {
                let (stored, counted) = meta.check_quota(*dir, repair, threads)?;
                let (path, _) = path;
                if (stored.used_space, stored.used_inodes)
                    == (counted.used_space, counted.used_inodes)
                {
                    tracing::info!("quota of {path} is consistent");
                    continue;
                }
                broken += 1;
                tracing::warn!(
                    "quota of {path}: stored usage {} bytes, {} inodes; counted {} bytes, {} inodes{}",
                    stored.used_space,
                    stored.used_inodes,
                    counted.used_space,
                    counted.used_inodes,
                    if repair { " (repaired)" } else { "" }
                );
            }
            if broken > 0 && !repair {
                bail!("{broken} quotas differ from their trees; run `nectar quota check --repair` to write the counted usage");
            }
        }
    }
    Ok(())
}

/// The quotas with their directories' paths.
fn with_paths(meta: &Meta, quotas: Vec<(u64, Quota)>) -> Result<Vec<(String, Quota)>> {
    quotas
        .into_iter()
        .map(|(dir, q)| Ok((meta.dir_path(dir)?, q)))
        .collect()
}

fn print_table(rows: &[(String, Quota)]) {
    let limit = |max: i64, human: bool| match (max, human) {
        (0, _) => "unlimited".to_string(),
        (m, true) => crate::summary::human(m.max(0) as u64).replace(' ', ""),
        (m, false) => m.to_string(),
    };
    let percent = |used: i64, max: i64| {
        if max > 0 {
            format!("{}%", used.max(0) * 100 / max)
        } else {
            "-".to_string()
        }
    };
    let mut table =
        vec![["Path", "Size", "Used", "Use%", "Inodes", "IUsed", "IUse%"].map(String::from)];
    for (path, q) in rows {
        table.push([
            path.clone(),
            limit(q.max_space, true),
            crate::summary::human(q.used_space.max(0) as u64).replace(' ', ""),
            percent(q.used_space, q.max_space),
            limit(q.max_inodes, false),
            q.used_inodes.to_string(),
            percent(q.used_inodes, q.max_inodes),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        println!("{}", cells.join("  "));
    }
}
