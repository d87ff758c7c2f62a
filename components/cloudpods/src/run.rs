//! Carries out a [`Plan`]: each action in order, one line of output per thing it made sure of
//! (`keystone-post-init: policy sysadmin: created`), the first failure ends the step with an
//! error that names the action (the supervisor retries the step with backoff and shows its last
//! lines as the why).
//!
//! It owns the order of calls within an action and the keystone session's life; what must exist
//! is the plan's, how each thing is made is `mysql`'s, `keystone`'s and `region`'s.

use std::io::Write;
use std::path::PathBuf;

use crate::CloudpodsError;
use crate::http::HttpClient;
use crate::keystone::{Keystone, Outcome};
use crate::mysql::MysqlClient;
use crate::plan::{Action, Plan};
use crate::region::Region;

/// How long keystone may take to apply new policies (it refreshes them every 30 s).
const RBAC_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `plan`, writing its progress to `out`.
pub async fn run(plan: &Plan, out: &mut dyn Write) -> Result<(), CloudpodsError> {
    let ca = match &plan.ca_file {
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| CloudpodsError::io("read", path, e))?)
        }
        None => None,
    };
    let http = HttpClient::new(ca.as_deref())?;
    let mut session: Option<Keystone> = None;
    let step = plan.step.as_str();
    let mut say = |line: String| {
        let _ = writeln!(out, "{step}: {line}");
    };
    for action in &plan.actions {
        match action {
            Action::Database(db) => {
                let server = plan.mysql.clone().ok_or_else(|| {
                    CloudpodsError::Invalid(format!(
                        "database {}: the plan names no database server",
                        db.name
                    ))
                })?;
                let address = server.address();
                let program = plan
                    .mysql_client
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("mariadb"));
                MysqlClient::new(server, program)
                    .ensure_database(db)
                    .await?;
                say(format!(
                    "database {} and user {} on {address}: ready",
                    db.name, db.user
                ));
            }
            Action::Policies => {
                let ks = login(&mut session, plan, &http).await?;
                for p in crate::policies::policies() {
                    let outcome = ks.ensure_policy(p.name, p.scope, &p.rules).await?;
                    say(format!("policy {}: {}", p.name, outcome.as_str()));
                }
                for r in crate::policies::roles() {
                    let outcome = ks.ensure_role(r.name, r.policies, r.project).await?;
                    say(format!("role {}: {}", r.name, outcome.as_str()));
                }
                // keystone applies them when it next refreshes its policy cache.
                if let Some(login) = &plan.keystone {
                    let took = Keystone::wait_for_rbac(&http, login, RBAC_WAIT).await?;
                    say(format!("policies in effect (after {}s)", took.as_secs()));
                }
                session = None;
            }
            Action::KeystoneRegion { id } => {
                let ks = login(&mut session, plan, &http).await?;
                let outcome = ks.ensure_region(id).await?;
                say(format!("region {id}: {}", outcome.as_str()));
            }
            Action::Service {
                name,
                service_type,
                endpoints,
            } => {
                let ks = login(&mut session, plan, &http).await?;
                let (id, outcome) = ks.ensure_service(name, service_type).await?;
                say(format!(
                    "service {name} ({service_type}): {}",
                    outcome.as_str()
                ));
                for e in endpoints {
                    let outcome = ks.ensure_endpoint(&id, &plan.region, e).await?;
                    say(format!(
                        "endpoint {name} {} {}: {}",
                        e.interface,
                        e.url,
                        outcome.as_str()
                    ));
                }
            }
            Action::ServiceConfig { service, defaults } => {
                let ks = login(&mut session, plan, &http).await?;
                let outcome = ks.ensure_service_config(service, defaults).await?;
                say(format!("config of {service}: {}", outcome.as_str()));
            }
            Action::ServiceAccount {
                user,
                password,
                project,
                role,
            } => {
                let ks = login(&mut session, plan, &http).await?;
                let outcome = ks
                    .ensure_service_account(user, password, project, role)
                    .await?;
                say(format!(
                    "account {user} ({role} in {project}): {}",
                    outcome.as_str()
                ));
            }
            Action::RegionInit { zones, wire } => {
                // A token of its own: the catalog must show region's endpoints, which an
                // earlier action of this plan may have registered.
                session = None;
                let ks = login(&mut session, plan, &http).await?;
                let url = ks
                    .catalog_url("compute_v2", "internal", &plan.region)
                    .ok_or_else(|| CloudpodsError::Answer {
                        what: "region's endpoint".into(),
                        detail: format!(
                            "no internal compute_v2 endpoint in region {} in the catalog: \
                             region-init registers it",
                            plan.region
                        ),
                    })?;
                let region = Region::new(&http, &url, ks.token());
                for zone in zones {
                    let id = format!("{}-{zone}", plan.region);
                    let outcome = ks.ensure_region(&id).await?;
                    say(format!("region {id}: {}", outcome.as_str()));
                    let outcome = region.ensure_zone(zone).await?;
                    say(format!("zone {zone}: {}", outcome.as_str()));
                }
                if let Some(first) = zones.first() {
                    let outcome = region.ensure_wire(first, wire).await?;
                    say(format!("wire {wire} in {first}: {}", outcome.as_str()));
                }
                let outcomes = region.ensure_schedtags().await?;
                let all_same = outcomes.iter().all(|o| *o == Outcome::Unchanged);
                say(format!(
                    "scheduler tags: {}",
                    if all_same { "unchanged" } else { "created" }
                ));
            }
        }
    }
    say("done".to_owned());
    Ok(())
}

/// The session, logging in the first time.
async fn login<'a>(
    session: &'a mut Option<Keystone>,
    plan: &Plan,
    http: &HttpClient,
) -> Result<&'a Keystone, CloudpodsError> {
    if session.is_none() {
        let login = plan.keystone.as_ref().ok_or_else(|| {
            CloudpodsError::Invalid(format!(
                "step {}: the plan names no keystone account",
                plan.step
            ))
        })?;
        *session = Some(Keystone::login(http.clone(), login).await?);
    }
    session
        .as_ref()
        .ok_or_else(|| CloudpodsError::Invalid("keystone session lost".to_owned()))
}
