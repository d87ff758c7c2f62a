//! `cloudlet cloudpods`: what the Cloudpods bootstrap runs on a node — a step's plan, and the
//! MariaDB wrapper that prepares its directories and becomes `mariadbd`. Wiring only: the work
//! is `cloudlet_cloudpods`'.

use std::os::unix::process::CommandExt as _;

use anyhow::{Context, bail};
use cloudlet_cloudpods::mariadb::{self, Layout};
use cloudlet_cloudpods::plan::Plan;

use crate::cli::CloudpodsCommand;

/// Runs one `cloudlet cloudpods` command.
pub fn run(command: CloudpodsCommand) -> anyhow::Result<()> {
    match command {
        CloudpodsCommand::Step { plan } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("start the async runtime")?;
            let plan = Plan::read(&plan)?;
            let mut out = std::io::stdout();
            runtime
                .block_on(cloudlet_cloudpods::run::run(&plan, &mut out))
                .with_context(|| format!("step {}", plan.step))
        }
        CloudpodsCommand::Mariadbd {
            defaults_file,
            data_dir,
            run_dir,
            user,
            mariadbd,
            install_db,
        } => {
            let layout = Layout {
                data_dir,
                run_dir,
                port: 0,
                bind: String::new(),
                user,
            };
            for line in mariadb::prepare(&layout, &install_db)? {
                println!("mariadbd: {line}");
            }
            let mut defaults = std::ffi::OsString::from("--defaults-file=");
            defaults.push(&defaults_file);
            // Becomes the server: the same process, so the supervisor's stop signal reaches
            // mariadbd itself.
            let err = std::process::Command::new(&mariadbd).arg(defaults).exec();
            bail!("cannot run {}: {err}", mariadbd.display())
        }
    }
}
