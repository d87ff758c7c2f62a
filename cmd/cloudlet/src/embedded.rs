//! The manifests compiled into the binary (`embedded-manifests/`): data, never code. `ctl
//! manifests list|show` prints them; nothing applies them behind the operator's back.

/// One embedded manifest file.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    /// Its name (the file's stem).
    pub name: &'static str,
    /// What it runs.
    pub about: &'static str,
    /// The YAML, as shipped.
    pub text: &'static str,
}

/// Every embedded manifest file.
pub const MANIFESTS: &[Embedded] = &[
    Embedded {
        name: "openvswitch",
        about: "openvswitch-db and openvswitch-switch on every compute node",
        text: include_str!("../../../embedded-manifests/openvswitch.yaml"),
    },
    // Templates: `${binDir}`, `${configDir}`, `${dataDir}` and `${version}` are filled in from
    // the cluster YAML, `${cloudlet}` with the server's own executable.
    // Open vSwitch comes along because `host` and `sdnagent` depend on `openvswitch-switch`.
    Embedded {
        name: "cloudpods",
        about: "the Cloudpods control and compute services, with Open vSwitch (templates)",
        text: concat!(
            include_str!("../../../embedded-manifests/cloudpods/mysql.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/etcd.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/keystone.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/region.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/scheduler.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/glance.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/webconsole.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/apigateway.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/logger.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/yunionconf.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/kubeserver.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/monitor.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/cloudmon.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/notify.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/esxi-agent.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/baremetal-agent.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/host-deployer.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/host.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/host-image.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/host-health.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/cloudpods/sdnagent.yaml"),
            "---\n",
            include_str!("../../../embedded-manifests/openvswitch.yaml"),
        ),
    },
];

/// The embedded file named `name`.
pub fn find(name: &str) -> Option<&'static Embedded> {
    MANIFESTS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_manifest_is_valid() {
        for m in MANIFESTS {
            let parsed = cloudlet_spec::parse_file(m.name, m.text)
                .unwrap_or_else(|e| panic!("embedded {}: {e}", m.name));
            cloudlet_spec::validate_set(&parsed, &[])
                .unwrap_or_else(|e| panic!("embedded {}: {e}", m.name));
            assert!(!parsed.is_empty());
        }
        assert!(find("openvswitch").is_some());
    }
}
