//! `cloudlet check-config`: runs the host fitness checks of `cloudlet_host` and prints them, one
//! line each with the fix, or as JSON. Presentation only.

use anyhow::bail;
use cloudlet_host::{CheckOptions, CheckStatus, HostPaths, check_config};

use crate::cli::{CheckConfigArgs, Output};

/// Prints the checks; fails when any check FAILs.
pub fn run(args: &CheckConfigArgs) -> anyhow::Result<()> {
    let checks = check_config(
        &HostPaths::default(),
        &args.data_dir,
        &CheckOptions::default(),
    );
    match args.output {
        Output::Table => {
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
