//! Per Cloudpods component, what the operator sets up around it (`pkg/service-init/component`,
//! `OnecloudClusterConfig`'s defaults): its database and user, its keystone service account,
//! the keystone service and endpoints it is registered under, its port, and which bootstrap
//! step it waits for.
//!
//! Data only. Components not listed (the OVS daemons, host-image, host-health, sdnagent) get
//! no bootstrap: they read the host's options.

/// A keystone service a component is registered under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The service's name, e.g. `region2`.
    pub name: &'static str,
    /// Its type, e.g. `compute_v2`.
    pub service_type: &'static str,
    /// The path after `https://HOST:PORT`, e.g. `/v1`; empty for none.
    pub path: &'static str,
    /// Whether it has endpoints (public and internal) or is only a service.
    pub endpoints: bool,
}

/// Which bootstrap step a component's own step follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// keystone's post-init (policies, region, identity endpoints): most components.
    KeystonePostInit,
    /// region's post-init (zones, wire, scheduler tags): those that use region's data.
    RegionPostInit,
}

/// What the bootstrap knows of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// The key under `spec.components`.
    pub key: &'static str,
    /// The port it serves its API on (`port` in its config).
    pub port: u16,
    /// Its database and the user it connects as.
    pub database: Option<(&'static str, &'static str)>,
    /// Its keystone account.
    pub account: Option<&'static str>,
    /// Whose database and account it uses, when not its own (the scheduler uses region's):
    /// it makes neither, and takes that component's passwords.
    pub shares: Option<&'static str>,
    /// The keystone service it is registered under.
    pub registration: Option<Registration>,
    /// The step its own step follows.
    pub after: After,
}

impl Component {
    /// The component whose passwords this one uses: its own key unless it shares.
    pub fn credentials_of(&self) -> &'static str {
        self.shares.unwrap_or(self.key)
    }
}

const fn svc(name: &'static str, service_type: &'static str, path: &'static str) -> Registration {
    Registration {
        name,
        service_type,
        path,
        endpoints: true,
    }
}

const fn bare(name: &'static str) -> Registration {
    Registration {
        name,
        service_type: name,
        path: "",
        endpoints: false,
    }
}

/// keystone's public port.
pub const KEYSTONE_PUBLIC_PORT: u16 = 30500;
/// keystone's admin port (the `auth_url` every service logs in through).
pub const KEYSTONE_ADMIN_PORT: u16 = 30357;

/// Every component with a bootstrap, in [`cloudlet_spec::COMPONENTS`] order.
pub const TABLE: &[Component] = &[
    Component {
        key: "keystone",
        port: KEYSTONE_PUBLIC_PORT,
        database: Some(("keystone", "keystone")),
        account: None,
        shares: None,
        // Registered by keystone's post-init as `keystone`/`identity`.
        registration: None,
        after: After::KeystonePostInit,
    },
    Component {
        key: "region",
        port: 30888,
        database: Some(("yunioncloud", "yunioncloud")),
        account: Some("regionadmin"),
        shares: None,
        registration: Some(svc("region2", "compute_v2", "")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "scheduler",
        port: 30887,
        database: Some(("yunioncloud", "yunioncloud")),
        account: Some("regionadmin"),
        shares: Some("region"),
        registration: Some(svc("scheduler", "scheduler", "")),
        after: After::RegionPostInit,
    },
    Component {
        key: "glance",
        port: 30292,
        database: Some(("glance", "glance")),
        account: Some("glance"),
        shares: None,
        registration: Some(svc("glance", "image", "/v1")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "webconsole",
        port: 30899,
        database: Some(("webconsole", "webconsole")),
        account: Some("webconsole"),
        shares: None,
        registration: Some(svc("webconsole", "webconsole", "")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "apigateway",
        port: 30300,
        database: None,
        account: Some("yunionapi"),
        shares: None,
        registration: Some(svc("yunionapi", "yunionapi", "")),
        after: After::RegionPostInit,
    },
    Component {
        key: "logger",
        port: 30999,
        database: Some(("yunionlogger", "yunionlogger")),
        account: Some("loggeradmin"),
        shares: None,
        registration: Some(svc("log", "log", "")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "yunionconf",
        port: 30889,
        database: Some(("yunionconf", "yunionconf")),
        account: Some("yunionconf"),
        shares: None,
        registration: Some(svc("yunionconf", "yunionconf", "")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "kubeserver",
        port: 30442,
        database: Some(("kubeserver", "kubeserver")),
        account: Some("kubeserver"),
        shares: None,
        registration: Some(svc("k8s", "k8s", "/api")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "monitor",
        port: 30093,
        database: Some(("monitor", "yunionmonitor")),
        account: Some("monitoradmin"),
        shares: None,
        registration: Some(svc("monitor", "monitor", "")),
        after: After::RegionPostInit,
    },
    Component {
        key: "cloudmon",
        port: 30931,
        database: None,
        account: Some("cloudmon"),
        shares: None,
        registration: Some(svc("cloudmon", "cloudmon", "")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "notify",
        port: 30777,
        database: Some(("notify", "notify")),
        account: Some("notify"),
        shares: None,
        registration: Some(svc("notify", "notify", "")),
        after: After::KeystonePostInit,
    },
    Component {
        key: "esxi-agent",
        port: 30883,
        database: None,
        account: Some("esxiagent"),
        shares: None,
        registration: None,
        after: After::RegionPostInit,
    },
    Component {
        key: "baremetal-agent",
        port: 8879,
        database: None,
        account: Some("baremetal"),
        shares: None,
        registration: Some(bare("baremetal")),
        after: After::RegionPostInit,
    },
    Component {
        key: "host",
        port: 8885,
        database: None,
        account: Some("hostadmin"),
        shares: None,
        registration: Some(bare("host")),
        after: After::RegionPostInit,
    },
    Component {
        key: "host-deployer",
        port: 0,
        database: None,
        account: Some("hostadmin"),
        shares: Some("host"),
        registration: None,
        after: After::KeystonePostInit,
    },
];

/// What the bootstrap knows of component `key`, if it has a bootstrap.
pub fn get(key: &str) -> Option<&'static Component> {
    TABLE.iter().find(|c| c.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_a_known_component_and_shares_only_with_one_that_has_its_own() {
        for c in TABLE {
            assert!(
                cloudlet_spec::component_role(c.key).is_some(),
                "{} is not in spec::COMPONENTS",
                c.key
            );
            if let Some(owner) = c.shares {
                let owner = get(owner).unwrap();
                assert!(owner.shares.is_none(), "{} shares with a sharer", c.key);
                assert_eq!(
                    owner.account, c.account,
                    "{} shares {}'s account",
                    c.key, owner.key
                );
            }
            if let Some((name, user)) = c.database {
                assert!(crate::mysql::check_identifier(name).is_ok(), "{name}");
                assert!(crate::mysql::check_identifier(user).is_ok(), "{user}");
            }
        }
        assert_eq!(get("host-deployer").unwrap().credentials_of(), "host");
        assert_eq!(get("scheduler").unwrap().credentials_of(), "region");
        assert!(get("sdnagent").is_none());
    }
}
