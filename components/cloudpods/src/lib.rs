//! Cloudpods brought to life: what the Kubernetes operator (`yunionio/cloudpods-operator`) does
//! around the services it deploys, done natively by cloudlet.
//!
//! - [`credentials`]: the secrets nobody writes by hand (keystone's admin, the database
//!   administrator, every component's database and service account passwords);
//! - [`components`]: per component, its database, service account, keystone service and
//!   endpoints, and the config keys the operator writes (`render`);
//! - [`plan`]: one bootstrap step as data, rendered by the control plane into a 0600 file, and
//!   [`run`] which carries it out (`cloudlet cloudpods step`): the MariaDB data directory, a
//!   component's database and user ([`mysql`], through the `mariadb` client), and everything
//!   through keystone's and region's APIs ([`keystone`], [`region`], [`policies`]), each action
//!   idempotent so that a step that died halfway is finished by running it again.
//!
//! It never supervises anything (the steps are `type: oneshot` services the supervisor runs),
//! never stores anything (the control plane keeps the credentials) and never deletes what it
//! made. The behaviour follows the operator's (`pkg/controller/onecloud_control.go`,
//! `pkg/service-init/component/*.go`); the code is written anew.
#![warn(missing_docs)]

pub mod components;
pub mod credentials;
mod error;
pub mod http;
pub mod keystone;
pub mod mariadb;
pub mod mysql;
pub mod plan;
pub mod policies;
pub mod region;
pub mod render;
pub mod run;
pub mod tool;

pub use error::CloudpodsError;
