//! The HTTP API's request bodies: the first byte picks a route, the rest is its body, decoded as
//! the server's JSON extractor does (`serde_json` from the bytes into the DTO); then what the
//! server does with it before any state is touched:
//! - `POST /v1/apply`: every file through `parse_file`, the set through `validate_set`;
//! - `POST /v1/run`: the manifest the node builds from the request (`cloudlet_node::executor::run`
//!   builds this same JSON document) through `parse_file`;
//! - `POST /v1/cluster` and `/v1/cluster/diff`: `ClusterManifest::parse`;
//! - `POST /v1/nodes/{name}/heartbeat`: the services applied to what the server holds
//!   (`heartbeat::apply`).
//!
//! Every body that decodes must encode and decode to the same value (the typed client sends what
//! the server reads).
#![no_main]

use std::fmt::Debug;

use cloudlet_api::dto::{
    ApplyRequest, CaRotateRequest, ClusterRequest, Event, ExecRequest, Heartbeat, JoinRequest,
    NodeAction, RenewRequest, RollbackRequest, RolloutRequest, RunRequest, TokenRequest,
};
use cloudlet_api::heartbeat;
use cloudlet_spec::{ClusterManifest, parse_file, validate_set};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `body` as the server does; a body that decodes must survive encoding.
fn decode<T: DeserializeOwned + Serialize + PartialEq + Debug>(body: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    let json = serde_json::to_vec(&value).expect("a decoded body encodes");
    let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "a decoded body does not decode once encoded: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back, value, "{}", String::from_utf8_lossy(&json));
    Some(value)
}

fn run_manifest(request: &RunRequest) {
    // As `cloudlet_node::executor::run` does: the request's manifest, validated as any other.
    let group = request
        .group
        .clone()
        .unwrap_or_else(|| "transient".to_owned());
    if cloudlet_spec::check_name(&group).is_err() {
        return;
    }
    let manifest = request.manifest(&group);
    if let Err(err) = parse_file(&format!("run {}", request.name), &manifest.to_string()) {
        let _ = err.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    match route % 13 {
        0 => {
            if let Some(request) = decode::<ApplyRequest>(body) {
                let mut all = Vec::new();
                for file in &request.files {
                    match parse_file(&file.name, &file.content) {
                        Ok(manifests) => all.extend(manifests),
                        Err(err) => drop(err.to_string()),
                    }
                }
                if let Err(err) = validate_set(&all, &[]) {
                    let _ = err.to_string();
                }
            }
        }
        1 => {
            if let Some(request) = decode::<RunRequest>(body) {
                run_manifest(&request);
            }
        }
        2 => drop(decode::<ExecRequest>(body)),
        3 => {
            if let Some(request) = decode::<JoinRequest>(body) {
                let _ = format!("{request:?}");
            }
        }
        4 => drop(decode::<RenewRequest>(body)),
        5 => {
            if let Some(beat) = decode::<Heartbeat>(body) {
                let mut held = Vec::new();
                let _ = heartbeat::apply(&mut held, None, beat.services.clone(), None);
                let _ = heartbeat::apply(&mut held, Some(beat.seq), None, beat.delta.clone());
                let base = beat.delta.as_ref().map(|d| d.base);
                let _ = heartbeat::apply(&mut held, base, beat.services, beat.delta);
            }
        }
        6 => drop(decode::<Vec<Event>>(body)),
        7 => drop(decode::<TokenRequest>(body)),
        8 => drop(decode::<NodeAction>(body)),
        9 => drop(decode::<CaRotateRequest>(body)),
        10 => {
            if let Some(request) = decode::<ClusterRequest>(body)
                && let Err(err) = ClusterManifest::parse(&request.file, &request.content)
            {
                let _ = err.to_string();
            }
        }
        11 => drop(decode::<RollbackRequest>(body)),
        _ => drop(decode::<RolloutRequest>(body)),
    }
});
