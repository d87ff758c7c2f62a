//! Checks across manifests: duplicate names, missing dependencies and dependency cycles over
//! what is applied now together with what is already stored. Never reads the store itself:
//! callers pass the stored manifests in.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::error::{Problem, SpecError};
use crate::manifest::{Manifest, ServiceManifest, Source};

/// Checks `new` (about to be applied) against itself and against `existing` (already stored).
///
/// A name in `new` replaces the stored manifest of that name. Finds: a name defined twice in
/// `new` (naming both places), a dependency that is neither in `new` nor in `existing`, and a
/// dependency cycle (named from its alphabetically first service, e.g. `a -> b -> c -> a`).
/// Problems point at the offending manifest's file and document.
pub fn validate_set(new: &[Manifest], existing: &[ServiceManifest]) -> Result<(), SpecError> {
    let mut problems = Vec::new();
    let new: Vec<&ServiceManifest> = new.iter().filter_map(Manifest::as_service).collect();

    let mut first_seen: BTreeMap<&str, &ServiceManifest> = BTreeMap::new();
    for service in &new {
        match first_seen.entry(service.name()) {
            Entry::Vacant(entry) => {
                entry.insert(service);
            }
            Entry::Occupied(first) => problems.push(Problem::at(
                service.source(),
                Some("metadata.name".into()),
                format!(
                    "duplicate service name {:?}, also defined at {}",
                    service.name(),
                    place(first.get().source())
                ),
            )),
        }
    }

    let mut all: BTreeMap<&str, &ServiceManifest> =
        existing.iter().map(|s| (s.name(), s)).collect();
    all.extend(first_seen.iter().map(|(name, service)| (*name, *service)));

    for service in &new {
        for (i, dep) in service.spec.depends_on.iter().enumerate() {
            if !all.contains_key(dep.as_str()) {
                problems.push(Problem::at(
                    service.source(),
                    Some(format!("spec.dependsOn[{i}]")),
                    format!("service {dep:?} does not exist (not in this apply, not in the store)"),
                ));
            }
        }
    }

    let roots: Vec<&str> = first_seen.keys().copied().collect();
    if let Some(cycle) = find_cycle(&all, &roots) {
        // Name the file of the first applied service on the cycle (else of any applied one).
        let source = cycle
            .iter()
            .filter_map(|name| first_seen.get(name.as_str()))
            .chain(first_seen.values())
            .find_map(|service| service.source());
        problems.push(Problem {
            file: source.map(|s| s.file.clone()),
            document: None,
            path: None,
            message: format!("dependency cycle: {}", cycle.join(" -> ")),
            line_column: None,
        });
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(SpecError::Invalid(problems))
    }
}

fn place(source: Option<&Source>) -> String {
    source.map_or_else(|| "the store".to_owned(), ToString::to_string)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Visiting,
    Done,
}

/// The first dependency cycle reachable from `roots` (visited in order, dependencies in declared
/// order), rotated to start at its alphabetically first name and closed: `[a, b, c, a]`.
fn find_cycle(all: &BTreeMap<&str, &ServiceManifest>, roots: &[&str]) -> Option<Vec<String>> {
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        // Iterative depth-first search: a stack of (name, index of next dependency).
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Visiting);
        while let Some(top) = stack.last_mut() {
            let name = top.0;
            let deps = all.get(name).map_or(&[][..], |s| &s.spec.depends_on[..]);
            let Some(dep) = deps.get(top.1) else {
                marks.insert(name, Mark::Done);
                stack.pop();
                continue;
            };
            top.1 += 1;
            let Some((&dep, _)) = all.get_key_value(dep.as_str()) else {
                continue; // missing: reported separately
            };
            match marks.get(dep) {
                Some(Mark::Done) => {}
                Some(Mark::Visiting) => {
                    let from = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[from..].iter().map(|(n, _)| (*n).to_owned()).collect();
                    let smallest = cycle
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.cmp(b.1))
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(smallest);
                    cycle.push(cycle[0].clone());
                    return Some(cycle);
                }
                None => {
                    marks.insert(dep, Mark::Visiting);
                    stack.push((dep, 0));
                }
            }
        }
    }
    None
}
