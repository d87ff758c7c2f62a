//! A bootstrap step as data: what the control plane renders into a step's plan file (JSON,
//! 0600: it carries passwords) and `cloudlet cloudpods step --plan FILE` carries out with
//! [`crate::run`]. Each action says what must exist, never how to get there, so running a plan
//! twice is the same as running it once.
//!
//! It owns the plan's shape and reading it back (bounded, every field known); it never does I/O
//! beyond reading the one file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::CloudpodsError;
use crate::keystone::{Endpoint, KeystoneLogin};
use crate::mysql::{Database, MysqlServer};

/// The largest plan file read.
pub const MAX_PLAN_BYTES: u64 = 1 << 20;

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Plan {
    /// The step's name, e.g. `keystone-post-init`, for its output.
    pub step: String,
    /// The database server and its administrator, for [`Action::Database`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MysqlServer>,
    /// The `mariadb` client to run (default: `mariadb` on PATH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql_client: Option<PathBuf>,
    /// The account keystone actions log in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystone: Option<KeystoneLogin>,
    /// The services CA (PEM file) their HTTPS is verified with; absent when they speak HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The keystone region endpoints are registered in.
    pub region: String,
    /// What must exist, in order.
    pub actions: Vec<Action>,
}

/// One thing that must exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Action {
    /// A component's database and user (through [`Plan::mysql`]).
    Database(Database),
    /// cloudlet's policies and roles ([`crate::policies`]).
    Policies,
    /// A keystone region.
    #[serde(rename_all = "camelCase")]
    KeystoneRegion {
        /// Its id.
        id: String,
    },
    /// A keystone service and its endpoints in [`Plan::region`].
    #[serde(rename_all = "camelCase")]
    Service {
        /// The service's name, e.g. `region2`.
        name: String,
        /// Its type, e.g. `compute_v2`.
        #[serde(rename = "type")]
        service_type: String,
        /// Its endpoints.
        #[serde(default)]
        endpoints: Vec<Endpoint>,
    },
    /// Options a service's config (section `default`) gets when it does not have them.
    #[serde(rename_all = "camelCase")]
    ServiceConfig {
        /// The service's name, e.g. `common`.
        service: String,
        /// The options.
        defaults: Map<String, Value>,
    },
    /// A component's keystone account, with a role in a project.
    #[serde(rename_all = "camelCase")]
    ServiceAccount {
        /// The user, e.g. `regionadmin`.
        user: String,
        /// Its password.
        password: String,
        /// The project, e.g. `system`.
        project: String,
        /// The role, e.g. `admin`.
        role: String,
    },
    /// region's own initial data: every zone, a keystone region `<region>-<zone>` for each,
    /// the wire `wire` in the first zone, the scheduler's default tags.
    #[serde(rename_all = "camelCase")]
    RegionInit {
        /// The zones.
        zones: Vec<String>,
        /// The first zone's default wire, e.g. `bcast0`.
        wire: String,
    },
}

impl Plan {
    /// Reads the plan in `path`.
    pub fn read(path: &Path) -> Result<Plan, CloudpodsError> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).map_err(|e| CloudpodsError::io("open", path, e))?;
        let mut text = String::new();
        file.take(MAX_PLAN_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| CloudpodsError::io("read", path, e))?;
        if text.len() as u64 > MAX_PLAN_BYTES {
            return Err(CloudpodsError::Invalid(format!(
                "{}: larger than {MAX_PLAN_BYTES} bytes: not a plan cloudlet wrote",
                path.display()
            )));
        }
        serde_json::from_str(&text).map_err(|e| {
            CloudpodsError::Invalid(format!(
                "{}: not a plan this cloudlet understands: {e}",
                path.display()
            ))
        })
    }

    /// The plan as the JSON its file holds.
    pub fn to_json(&self) -> Result<String, CloudpodsError> {
        serde_json::to_string_pretty(self)
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|e| CloudpodsError::Invalid(format!("plan {}: {e}", self.step)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_round_trips_and_an_unknown_action_is_refused() {
        let plan = Plan {
            step: "region-init".into(),
            mysql: None,
            mysql_client: None,
            keystone: None,
            ca_file: Some("/etc/yunion/pki/ca.crt".into()),
            region: "region0".into(),
            actions: vec![
                Action::Policies,
                Action::Service {
                    name: "region2".into(),
                    service_type: "compute_v2".into(),
                    endpoints: vec![Endpoint {
                        interface: "public".into(),
                        url: "https://127.0.0.1:30888".into(),
                    }],
                },
                Action::RegionInit {
                    zones: vec!["zone0".into()],
                    wire: "bcast0".into(),
                },
            ],
        };
        let text = plan.to_json().unwrap();
        assert!(text.contains("\"type\": \"compute_v2\""), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(Plan::read(&path).unwrap(), plan);
        std::fs::write(
            &path,
            r#"{"step":"x","region":"r","actions":["dropEverything"]}"#,
        )
        .unwrap();
        let err = Plan::read(&path).unwrap_err().to_string();
        assert!(err.contains("unknown variant `dropEverything`"), "{err}");
    }
}
