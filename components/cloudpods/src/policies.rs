//! cloudlet's policies and roles for keystone: until policies exist even `sysadmin` is refused
//! (`403 isClassRbacAllowed`) on most of keystone's API, and the services' accounts with it.
//!
//! Written anew and coarse on purpose: per scope (system, domain, project) an admin (every
//! action), an editor (everything but create and delete) and a viewer (get and list), and the
//! roles that carry them: `admin` (system admin, in project `system`), `domainadmin`,
//! `project_owner`, `domain_editor`, `project_editor`, `domain_viewer`, `project_viewer`,
//! `member` (a project's viewer). The operator loads Cloudpods' own fine-grained catalogue (170
//! policies per service and resource, meter and dashboard roles, the three-admin roles); those
//! can be added with `climc` on top of these, which they do not conflict with.
//!
//! Data only; [`crate::run`] makes it exist through [`crate::keystone`].

use serde_json::{Value, json};

/// A policy: its name, scope and rules (keystone's `blob.policy`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The name, e.g. `sysadmin`.
    pub name: &'static str,
    /// `system`, `domain` or `project`.
    pub scope: &'static str,
    /// What it allows.
    pub rules: Value,
}

/// A role and the policies it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The name, e.g. `admin`.
    pub name: &'static str,
    /// Its policies, by name.
    pub policies: &'static [&'static str],
    /// The project it is bound in (the system admin's); `None` for a role any domain may use.
    pub project: Option<&'static str>,
}

/// Every policy, in the order they are made.
pub fn policies() -> Vec<Policy> {
    let all = json!({"*": "allow"});
    let edit = json!({"*": {"*": {"*": "allow", "create": "deny", "delete": "deny"}}});
    let view = json!({"*": {"*": {"*": "deny", "get": "allow", "list": "allow"}}});
    let mut out = Vec::new();
    for (scope, admin, editor, viewer) in [
        ("system", "sysadmin", "sys-editor", "sys-viewer"),
        ("domain", "domain-admin", "domain-editor", "domain-viewer"),
        (
            "project",
            "project-admin",
            "project-editor",
            "project-viewer",
        ),
    ] {
        for (name, rules) in [(admin, &all), (editor, &edit), (viewer, &view)] {
            out.push(Policy {
                name,
                scope,
                rules: rules.clone(),
            });
        }
    }
    out
}

/// Every role, in the order they are made (after the policies).
pub fn roles() -> Vec<Role> {
    let role = |name, policies, project| Role {
        name,
        policies,
        project,
    };
    vec![
        role("admin", &["sysadmin"], Some("system")),
        role("domainadmin", &["domain-admin"], None),
        role("project_owner", &["project-admin"], None),
        role("domain_editor", &["domain-editor"], None),
        role("project_editor", &["project-editor"], None),
        role("domain_viewer", &["domain-viewer"], None),
        role("project_viewer", &["project-viewer"], None),
        role("member", &["project-viewer"], None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_names_policies_that_exist_and_names_are_unique() {
        let policies = policies();
        let names: Vec<&str> = policies.iter().map(|p| p.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for role in roles() {
            for p in role.policies {
                assert!(names.contains(p), "{} names {p}", role.name);
            }
        }
        let admin = policies.iter().find(|p| p.name == "sysadmin").unwrap();
        assert_eq!(
            (admin.scope, &admin.rules),
            ("system", &json!({"*": "allow"}))
        );
    }
}
