//! Service manifests (`cloudlet ctl apply -f`): any text through the parser and the checks of
//! one file and of a set, then what the server does with what they accept: the effective values,
//! and the JSON it stores and agents read back (`serde_json` of a [`ServiceManifest`]), which
//! must give the same manifest.
#![no_main]

use cloudlet_spec::{ServiceManifest, parse_file, validate_set};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let manifests = match parse_file("fuzz.yaml", &text) {
        Ok(manifests) => manifests,
        Err(err) => {
            // Every rejection renders (it is what the operator reads).
            let _ = err.to_string();
            return;
        }
    };
    let services: Vec<ServiceManifest> = manifests
        .iter()
        .filter_map(|m| m.as_service().cloned())
        .collect();
    if let Err(err) = validate_set(&manifests, &[]) {
        let _ = err.to_string();
    }
    // Against itself as the stored set: every name replaces its stored manifest.
    if let Err(err) = validate_set(&manifests, &services) {
        let _ = err.to_string();
    }
    for service in &services {
        let _ = service.spec.effective();
        let json = serde_json::to_value(service).expect("a manifest serialises");
        let back: ServiceManifest = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("stored manifest does not read back: {e}\n{json}"));
        assert_eq!(
            &back, service,
            "stored manifest reads back different\n{json}"
        );
    }
});
