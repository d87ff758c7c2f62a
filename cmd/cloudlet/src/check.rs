//! `cloudlet check-config`: runs the host fitness checks of `cloudlet_host` and prints them, one
//! line each with the fix, or as JSON. Presentation only.

use anyhow::bail;
use cloudlet_cluster::expiry;
use cloudlet_host::{Check, CheckOptions, CheckStatus, HostPaths, check_config};

use crate::cli::{CheckConfigArgs, Output};

/// Prints the checks; fails when any check FAILs.
pub fn run(args: &CheckConfigArgs) -> anyhow::Result<()> {
    let mut checks = check_config(
        &HostPaths::default(),
        &args.data_dir,
        &CheckOptions::default(),
    );
    checks.extend(certificate_checks(&args.data_dir));
    match args.output {
        Output::Table | Output::Wide => {
            for c in &checks {
                let status = c.status.as_str().to_uppercase();
                println!("{status:<5} {:<18} {}", c.name, c.detail);
                if let Some(fix) = &c.fix {
                    println!("      {:<18} fix: {fix}", "");
                }
            }
        }
        Output::Json | Output::Yaml => {
            let items: Vec<serde_json::Value> = checks
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.name,
                        "status": c.status.as_str(),
                        "detail": c.detail,
                        "fix": c.fix,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .map(|c| c.name)
        .collect();
    if !failed.is_empty() {
        bail!(
            "this host is not fit to run cloudlet: {} failed",
            failed.join(", ")
        );
    }
    Ok(())
}

/// One line per certificate in the data dir: its expiry; WARN within 30 days (a CA) or past
/// two thirds of a certificate's life that should have renewed itself; FAIL when expired or
/// unreadable.
fn certificate_checks(data_dir: &std::path::Path) -> Vec<Check> {
    let now = jiff::Timestamp::now();
    expiry::on_disk(data_dir)
        .into_iter()
        .map(|c| {
            let (status, detail, fix) = match c.not_after {
                Err(e) => (
                    CheckStatus::Fail,
                    format!("{}: unreadable: {e}", c.what),
                    Some("restore it from a backup, or join the node again".to_owned()),
                ),
                Ok(at) if at <= now => (
                    CheckStatus::Fail,
                    format!("{} expired at {at}", c.what),
                    Some(if c.ca {
                        "the cluster's CA expired: `cloudlet ctl ca rotate` cannot help now; \
                         create a new cluster CA"
                            .to_owned()
                    } else {
                        "start cloudlet: it renews its certificates at start and at two thirds \
                         of their life"
                            .to_owned()
                    }),
                ),
                Ok(at) => {
                    let left = at.duration_since(now).unsigned_abs();
                    let days = left.as_secs() / 86_400;
                    if c.ca && left < expiry::CA_WARNING {
                        (
                            CheckStatus::Warn,
                            format!("{} expires at {at} (in {days} days)", c.what),
                            Some("rotate the CA: `cloudlet ctl ca rotate`".to_owned()),
                        )
                    } else {
                        (
                            CheckStatus::Ok,
                            format!("{} expires at {at} (in {days} days)", c.what),
                            None,
                        )
                    }
                }
            };
            Check {
                name: "certificate",
                status,
                detail,
                fix,
            }
        })
        .collect()
}
