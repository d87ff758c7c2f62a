//! Cluster YAML (`cloudlet ctl cluster apply|diff -f`): any text through `ClusterManifest::parse`
//! (deserialise, then check); for what it accepts, the promises of `export` (parsing the export
//! gives the manifest back, exporting that gives the same text), a diff with itself that is empty,
//! and the derived views the server reads (components, roles, rollouts).
#![no_main]

use std::collections::BTreeMap;

use cloudlet_spec::{COMPONENTS, ClusterManifest, diff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let cluster = match ClusterManifest::parse("fuzz.yaml", &text) {
        Ok(cluster) => cluster,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let components = cluster.profile_components();
    for (name, _) in COMPONENTS {
        let _ = cluster.component_version(name);
        let _ = cluster.rollout(name).effective();
    }
    let _ = components;
    let labels = BTreeMap::from([("rack".to_owned(), "r1".to_owned())]);
    for node in ["n1", "node-2"] {
        let _ = cluster.spec.nodes.roles_of(node, &labels);
    }
    let changes = diff(&cluster, &cluster).expect("a cluster compares with itself");
    assert!(
        changes.is_empty(),
        "a cluster differs from itself: {changes:?}"
    );

    let exported = cluster.export().expect("an accepted cluster exports");
    let again = ClusterManifest::parse("export.yaml", &exported).unwrap_or_else(|e| {
        panic!("the export of an accepted cluster is rejected: {e}\n{exported}")
    });
    assert_eq!(
        diff(&cluster, &again).expect("compare"),
        [],
        "the export parses to another cluster\n{exported}"
    );
    let twice = again.export().expect("export again");
    assert_eq!(exported, twice, "exporting the export changes it");
});
