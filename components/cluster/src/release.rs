//! The cluster YAML (`kind: Cluster`) becoming services: rendering the embedded service templates
//! with its settings (versions, paths, replicas, selectors, resources, env, args, config files),
//! applying the result as one numbered revision (and deleting the services an earlier revision
//! rendered that this one no longer has), diffing a YAML against the current revision, rolling
//! back to an earlier one, and exporting the current one.
//!
//! It owns what "the cluster's services" are: the services whose stored record came from a
//! revision (`file: cluster revision N`). It never touches services an operator applied
//! otherwise, and never stops anything the new revision still has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cloudlet_api::dto::{ClusterApplied, ClusterDiff, FieldChange, ServiceChange};
use cloudlet_node::apply::{self, Applied};
use cloudlet_node::records::{SERVICES, ServiceRecord};
use cloudlet_spec::{ClusterManifest, FileSpec, Manifest, ProbeScheme, ServiceManifest};
use cloudlet_store::Store;

use cloudlet_cloudpods::credentials::Credentials;

use crate::revisions::{self, RevisionRecord};
use crate::servicecerts::{self, ServiceCertsRecord};
use crate::{ClusterError, Inner, placer, rollouts};

/// The `file` of a service record a revision wrote.
const OWNER: &str = "cluster revision ";

/// What a cluster's services are rendered from besides its YAML.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The embedded templates: (file name, YAML text).
    pub templates: &'a [(String, String)],
    /// The `cloudlet` executable (`${cloudlet}` in templates, the bootstrap steps' command).
    pub cloudlet: &'a Path,
}

/// The embedded templates, parsed with the paths of `cluster` put in: every service template by
/// name.
fn templates(
    cluster: &ClusterManifest,
    sources: &Sources<'_>,
) -> Result<BTreeMap<String, ServiceManifest>, ClusterError> {
    let mut out = BTreeMap::new();
    for (name, text) in sources.templates {
        let text = text
            .replace("${binDir}", &cluster.spec.bin_dir.display().to_string())
            .replace(
                "${configDir}",
                &cluster.spec.config_dir.display().to_string(),
            )
            .replace("${dataDir}", &cluster.spec.data_dir.display().to_string())
            .replace("${cloudlet}", &sources.cloudlet.display().to_string());
        let parsed = cloudlet_spec::parse_file(name, &text)
            .map_err(|e| ClusterError::Invalid(format!("embedded template {name}: {e}")))?;
        for m in parsed.iter().filter_map(Manifest::as_service) {
            out.insert(m.metadata.name.clone(), m.clone());
        }
    }
    Ok(out)
}

/// A component's options as the YAML file it reads: long values (an `sql_connection`) stay on
/// one line, as the services' own YAML reader expects plain scalars.
fn config_yaml(
    options: &BTreeMap<String, serde_json::Value>,
) -> Result<String, serde_saphyr::ser::Error> {
    let options_ = serde_saphyr::ser_options! {
        folded_wrap_chars: usize::MAX,
    };
    serde_saphyr::to_string_with_options(options, options_)
}

/// Replaces `${version}` in every string of a service that may carry it.
fn put_version(m: &mut ServiceManifest, version: &str) {
    let put = |s: &mut String| {
        if s.contains("${version}") {
            *s = s.replace("${version}", version);
        }
    };
    m.spec.command.iter_mut().for_each(put);
    m.spec.env.values_mut().for_each(put);
    m.metadata.labels.values_mut().for_each(put);
}

/// The services `cluster` stands for, from the templates of `sources`; with `certs` (TLS on),
/// every Cloudpods component gets the services' certificate files under `<configDir>/pki`. The
/// Cloudpods bootstrap (configs, the MariaDB's files, the steps) is rendered with
/// `credentials`, which must hold every profile component's passwords.
pub fn render(
    cluster: &ClusterManifest,
    sources: &Sources<'_>,
    certs: Option<&ServiceCertsRecord>,
    credentials: &Credentials,
) -> Result<Vec<ServiceManifest>, ClusterError> {
    let templates = templates(cluster, sources)?;
    let wanted = cluster.profile_components();
    let bootstrap = match cluster.spec.disable_bootstrap {
        true => cloudlet_cloudpods::render::Rendered::default(),
        false => cloudlet_cloudpods::render::render(
            &cloudlet_cloudpods::render::Inputs {
                cluster,
                credentials,
                cloudlet: sources.cloudlet,
                ca_pem: certs.map(|c| c.ca_cert.as_str()),
            },
            &wanted,
        )
        .map_err(|e| ClusterError::Invalid(e.to_string()))?,
    };
    let mut out = Vec::new();
    for name in &wanted {
        let Some(template) = templates.get(*name) else {
            return Err(ClusterError::Invalid(format!(
                "spec.components.{name}: no embedded template for it (`cloudlet ctl manifests list`)"
            )));
        };
        let mut m = template.clone();
        put_version(&mut m, cluster.component_version(name));
        // Their /ping is HTTPS unless the cluster turned TLS off; a template that names its
        // scheme keeps it.
        if let Some(http) = m.spec.readiness.as_mut().and_then(|r| r.http.as_mut()) {
            http.scheme.get_or_insert(if cluster.spec.disable_tls {
                ProbeScheme::Http
            } else {
                ProbeScheme::Https
            });
        }
        // The cluster YAML's settings, then the template's (host allows its long first start).
        let mut rollout = cluster.rollout(name);
        if let Some(own) = &m.spec.rollout {
            rollout.max_unavailable = rollout.max_unavailable.or(own.max_unavailable);
            rollout.progress_deadline = rollout
                .progress_deadline
                .or_else(|| own.progress_deadline.clone());
        }
        m.spec.rollout = (!rollout.is_empty()).then_some(rollout);
        // A dependency the profile does not run here is not waited for; the bootstrap steps
        // this component needs first are.
        m.spec.depends_on.retain(|d| wanted.contains(&d.as_str()));
        for step in bootstrap.depends_on.get(*name).into_iter().flatten() {
            if !m.spec.depends_on.contains(step) {
                m.spec.depends_on.push(step.clone());
            }
        }
        m.spec
            .files
            .extend(bootstrap.files.get(*name).into_iter().flatten().cloned());
        if let Some(env) = bootstrap.env.get(*name) {
            m.spec.env.extend(env.clone());
        }
        if let Some(c) = cluster.component(name) {
            if let Some(replicas) = c.replicas {
                m.spec
                    .placement
                    .get_or_insert_with(Default::default)
                    .replicas = Some(replicas);
            }
            if let Some(selector) = &c.node_selector {
                let placement = m.spec.placement.get_or_insert_with(Default::default);
                let mine = placement.node_selector.get_or_insert_with(Default::default);
                mine.labels.extend(selector.labels.clone());
            }
            if let Some(resources) = &c.resources {
                m.spec.resources = Some(resources.clone());
            }
            m.spec.env.extend(c.env.clone());
            if let Some(dir) = &c.working_dir {
                m.spec.working_dir = Some(dir.clone());
            }
            m.spec.command.extend(c.args.iter().cloned());
        }
        // Its config: the bootstrap's options, the operator's `config:` over them. (MariaDB's
        // `config:` went into its my.cnf.)
        let own = cluster
            .component(name)
            .map(|c| &c.config)
            .filter(|_| *name != "mysql");
        let mut config: BTreeMap<String, serde_json::Value> = bootstrap
            .configs
            .get(*name)
            .map(|c| c.clone().into_iter().collect())
            .unwrap_or_default();
        config.extend(
            own.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if !config.is_empty() {
            let content = config_yaml(&config).map_err(|e| {
                ClusterError::Invalid(format!("spec.components.{name}.config: {e}"))
            })?;
            m.spec.files.push(FileSpec {
                path: cluster.spec.config_dir.join(format!("{name}.conf")),
                content,
                mode: Some("0600".to_owned()),
                owner: None,
            });
        }
        // common.conf goes with every component that is told to read it: the host's keystone
        // account, `spec.commonConfig` over it.
        let common = cluster.spec.config_dir.join("common/common.conf");
        let mut common_config: BTreeMap<String, serde_json::Value> =
            bootstrap.common.clone().into_iter().collect();
        common_config.extend(cluster.spec.common_config.clone());
        if !common_config.is_empty() && m.spec.command.iter().any(|a| Path::new(a) == common) {
            let content = config_yaml(&common_config)
                .map_err(|e| ClusterError::Invalid(format!("spec.commonConfig: {e}")))?;
            m.spec.files.push(FileSpec {
                path: common,
                content,
                mode: Some("0600".to_owned()),
                owner: None,
            });
        }
        // The operator's `<cluster>-certs` Secret, mounted into every Cloudpods component.
        if let Some(certs) = certs
            && m.metadata.labels.get("component").map(String::as_str) == Some("cloudpods")
        {
            m.spec.files.extend(certs.files(&cluster.spec.config_dir));
        }
        m.metadata
            .labels
            .insert("cloudlet.io/cluster".to_owned(), cluster.name().to_owned());
        out.push(m);
    }
    for mut step in bootstrap.steps {
        step.metadata
            .labels
            .insert("cloudlet.io/cluster".to_owned(), cluster.name().to_owned());
        out.push(step);
    }
    Ok(out)
}

/// The services the revisions wrote, by name, with their records.
async fn owned<S: Store>(
    inner: &Inner<S>,
) -> Result<BTreeMap<String, ServiceRecord>, ClusterError> {
    let (records, _) = cloudlet_node::load_services(&inner.store, SERVICES).await?;
    Ok(records
        .into_iter()
        .filter(|(_, r)| r.file.starts_with(OWNER))
        .collect())
}

impl<S: Store> Inner<S> {
    /// What this server renders cluster YAMLs from.
    pub(crate) fn sources(&self) -> Sources<'_> {
        Sources {
            templates: &self.options.templates,
            cloudlet: &self.options.cloudlet_exe,
        }
    }

    /// Applies `text` (a cluster YAML from `file`) as a new revision. A service whose rendered
    /// manifest is one a rollout rolled back from is held at the one it has, unless `retry`.
    pub(crate) async fn apply_cluster(
        &self,
        by: &str,
        file: &str,
        text: &str,
        retry: bool,
    ) -> Result<ClusterApplied, ClusterError> {
        let cluster =
            ClusterManifest::parse(file, text).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let yaml = cluster
            .export()
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let current = revisions::current(&self.store).await?;
        let certs = match cluster.spec.disable_tls {
            true => None,
            false => Some(servicecerts::current(self).await?),
        };
        let wanted = cluster.profile_components();
        let credentials =
            crate::cloudpods::current(self, &cloudlet_cloudpods::render::credential_keys(&wanted))
                .await?;
        if wanted.contains(&"keystone") && !cluster.spec.disable_bootstrap {
            let admin = crate::cloudpods::admin(&cluster, &credentials);
            crate::cloudpods::write_rc(&self.options.data_dir, &admin)?;
        }
        let services = render(&cluster, &self.sources(), certs.as_ref(), &credentials)?;
        let before = owned(self).await?;
        let checks = self.apply_checks(retry).await?;
        let held: Vec<&str> = services
            .iter()
            .filter(|m| {
                checks.hold_for(m).is_some()
                    && before
                        .get(&m.metadata.name)
                        .is_some_and(|r| r.manifest != **m)
            })
            .map(|m| m.metadata.name.as_str())
            .collect();
        let held_note = match held.is_empty() {
            true => String::new(),
            false => format!(
                "; held at the manifest a rollout rolled back to: {} (`--retry` rolls it out again)",
                held.join(", ")
            ),
        };
        // The same YAML again is a no-op only while every service still has what it rendered
        // (or is held); with `retry`, a service a rollout rolled back is rolled out again.
        let drifted: Vec<&str> = services
            .iter()
            .filter(|m| {
                before
                    .get(&m.metadata.name)
                    .is_none_or(|r| r.manifest != **m)
            })
            .map(|m| m.metadata.name.as_str())
            .filter(|name| !held.contains(name))
            .collect();
        if let Some(cur) = &current
            && cur.yaml == yaml
            && drifted.is_empty()
        {
            return Ok(ClusterApplied {
                revision: cur.revision,
                summary: format!("unchanged: the same as the current revision{held_note}"),
                services: services
                    .iter()
                    .map(|m| {
                        let name = &m.metadata.name;
                        match (held.contains(&name.as_str()), before.get(name)) {
                            (true, Some(old)) => {
                                change(name, "held", rollouts::changed_fields(&old.manifest, m))
                            }
                            _ => change(name, "unchanged", Vec::new()),
                        }
                    })
                    .collect(),
            });
        }
        let revision = current.as_ref().map_or(1, |c| c.revision + 1);
        let summary = match &current {
            None => format!(
                "first revision: profile {}, {} services",
                cluster.spec.profile.as_str(),
                services.len()
            ),
            Some(cur) if cur.yaml == yaml => format!(
                "the same YAML as revision {} again: {} brought back to it",
                cur.revision,
                drifted.join(", ")
            ),
            Some(cur) => {
                let old = ClusterManifest::parse("current", &cur.yaml)
                    .map_err(|e| ClusterError::Invalid(e.to_string()))?;
                let fields = cloudlet_spec::diff(&old, &cluster)
                    .map_err(|e| ClusterError::Invalid(e.to_string()))?;
                let list: Vec<String> = fields.iter().map(ToString::to_string).collect();
                format!(
                    "{} changed: {}",
                    plural(list.len(), "field"),
                    list.join("; ")
                )
            }
        };
        let summary = format!("{summary}{held_note}");
        let source = format!("{OWNER}{revision}");
        let text = services
            .iter()
            .map(|m| serde_saphyr::to_string(m).map_err(|e| ClusterError::Invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?
            .join("---\n");
        let files = vec![(source.clone(), text)];
        let manifests = apply::parse(&files).await?;
        self.check_placeable(&manifests).await?;
        self.set_node_roles(&cluster).await?;
        let summary = format!("{summary}{}", self.loopback_note(&services).await?);
        let outcomes = apply::apply_parsed(&self.store, manifests, &checks).await?;
        let mut changes: Vec<ServiceChange> = outcomes
            .iter()
            .map(|o| {
                let fields = match (
                    before.get(&o.name),
                    services.iter().find(|m| m.metadata.name == o.name),
                ) {
                    (Some(old), Some(new)) => rollouts::changed_fields(&old.manifest, new),
                    _ => Vec::new(),
                };
                let what = match o.applied {
                    Applied::Created => "added",
                    Applied::Configured => "changed",
                    Applied::Unchanged => "unchanged",
                    Applied::Held => "held",
                };
                change(&o.name, what, fields)
            })
            .collect();
        let keep: BTreeSet<&str> = services.iter().map(|m| m.metadata.name.as_str()).collect();
        let gone: Vec<String> = before
            .keys()
            .filter(|n| !keep.contains(n.as_str()))
            .cloned()
            .collect();
        self.delete_in_order(&gone).await?;
        changes.extend(gone.iter().map(|n| change(n, "removed", Vec::new())));
        revisions::store(
            &self.store,
            &RevisionRecord {
                revision,
                applied_at: jiff::Timestamp::now(),
                applied_by: by.to_owned(),
                summary: summary.clone(),
                file: file.to_owned(),
                yaml,
            },
        )
        .await?;
        self.event(
            None,
            &self.options.server_name,
            "ClusterApplied",
            format!("revision {revision} from {file}: {summary}"),
        );
        placer::place_now(self).await;
        for c in &mut changes {
            c.nodes = self.nodes_of_service(&c.name).await.unwrap_or_default();
        }
        Ok(ClusterApplied {
            revision,
            summary,
            services: changes,
        })
    }

    /// Deletes `names`, each after the services that depend on it.
    async fn delete_in_order(&self, names: &[String]) -> Result<(), ClusterError> {
        let mut left: Vec<String> = names.to_vec();
        while !left.is_empty() {
            let before = left.len();
            let mut still = Vec::new();
            for name in left {
                match apply::delete(&self.store, &name).await {
                    Ok(()) => self.event(
                        Some(&name),
                        &self.options.server_name,
                        "Deleting",
                        "no longer in the cluster YAML".into(),
                    ),
                    Err(cloudlet_node::NodeError::Conflict(_)) => still.push(name),
                    Err(cloudlet_node::NodeError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if still.len() == before {
                return Err(ClusterError::Conflict(format!(
                    "cannot delete {}: other services depend on them",
                    still.join(", ")
                )));
            }
            left = still;
        }
        Ok(())
    }

    /// [`loopback_note`] for `services` and the nodes as they are now.
    async fn loopback_note(&self, services: &[ServiceManifest]) -> Result<String, ClusterError> {
        let control: Vec<String> = placer::load_nodes(&self.store)
            .await?
            .into_iter()
            .filter(|(_, r)| r.roles.contains(&cloudlet_spec::NodeRole::Control))
            .map(|(name, _)| name)
            .collect();
        Ok(loopback_note(services, &control))
    }

    /// Gives the nodes the roles the cluster YAML's `nodes` section says, where it says any.
    async fn set_node_roles(&self, cluster: &ClusterManifest) -> Result<(), ClusterError> {
        if cluster.spec.nodes.is_empty() {
            return Ok(());
        }
        for (name, record) in placer::load_nodes(&self.store).await? {
            let roles = cluster.spec.nodes.roles_of(&name, &record.labels);
            if !roles.is_empty() && roles != record.roles {
                self.update_node(&name, |r| r.roles = roles.clone()).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn nodes_of_service(
        &self,
        service: &str,
    ) -> Result<Vec<String>, ClusterError> {
        let mut nodes = self.nodes_of(service).await?;
        nodes.sort();
        Ok(nodes)
    }

    /// What `text` would change against the current revision.
    pub(crate) async fn diff_cluster(
        &self,
        file: &str,
        text: &str,
    ) -> Result<ClusterDiff, ClusterError> {
        let cluster =
            ClusterManifest::parse(file, text).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let current = revisions::current(&self.store).await?;
        let fields = match &current {
            None => Vec::new(),
            Some(cur) => {
                let old = ClusterManifest::parse("current", &cur.yaml)
                    .map_err(|e| ClusterError::Invalid(e.to_string()))?;
                cloudlet_spec::diff(&old, &cluster)
                    .map_err(|e| ClusterError::Invalid(e.to_string()))?
                    .into_iter()
                    .map(|f| FieldChange {
                        path: f.path,
                        old: f.old,
                        new: f.new,
                    })
                    .collect()
            }
        };
        // A diff issues nothing: before the first apply with TLS on, the certificate files are
        // not in it yet.
        let certs = match cluster.spec.disable_tls {
            true => None,
            false => servicecerts::issued(&self.store).await?,
        };
        // Nor does it generate passwords: before the first apply, throwaway ones stand in (a
        // diff shows no file contents).
        let mut credentials = crate::cloudpods::issued(&self.store)
            .await?
            .unwrap_or_else(Credentials::generate);
        credentials.ensure(cloudlet_cloudpods::render::credential_keys(
            &cluster.profile_components(),
        ));
        let services = render(&cluster, &self.sources(), certs.as_ref(), &credentials)?;
        let before = owned(self).await?;
        let checks = self.apply_checks(false).await?;
        let mut changes = Vec::new();
        for m in &services {
            let name = &m.metadata.name;
            let nodes = self.nodes_of_service(name).await?;
            let c = match before.get(name) {
                None => ServiceChange {
                    nodes: self.would_run_on(m).await?,
                    ..change(name, "added", Vec::new())
                },
                Some(old) if old.manifest == *m => ServiceChange {
                    nodes,
                    ..change(name, "unchanged", Vec::new())
                },
                Some(old) => {
                    let what = match checks.hold_for(m) {
                        Some(_) => "held",
                        None => "changed",
                    };
                    ServiceChange {
                        nodes,
                        ..change(name, what, rollouts::changed_fields(&old.manifest, m))
                    }
                }
            };
            changes.push(c);
        }
        for name in before.keys() {
            if !services.iter().any(|m| &m.metadata.name == name) {
                changes.push(ServiceChange {
                    nodes: self.nodes_of_service(name).await?,
                    ..change(name, "removed", Vec::new())
                });
            }
        }
        Ok(ClusterDiff {
            against: current.map_or(0, |c| c.revision),
            fields,
            services: changes,
        })
    }

    /// Where a new service would be placed now.
    async fn would_run_on(&self, m: &ServiceManifest) -> Result<Vec<String>, ClusterError> {
        let mut services = cloudlet_node::load_services(&self.store, SERVICES).await?.0;
        services.insert(
            m.metadata.name.clone(),
            ServiceRecord {
                manifest: m.clone(),
                desired: cloudlet_node::records::DesiredRecord::Running,
                file: String::new(),
                document: 0,
                applied_at: jiff::Timestamp::now(),
                transient: None,
            },
        );
        let nodes = placer::load_nodes(&self.store).await?;
        let (p_services, p_nodes) = placer::inputs(self, &services, &nodes);
        let plan = cloudlet_placement::place(&p_services, &p_nodes, &BTreeSet::new())
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        Ok(plan
            .assignments
            .into_iter()
            .filter(|(s, _)| *s == m.metadata.name)
            .map(|(_, n)| n)
            .collect())
    }

    /// Revision `to`, applied again as a new revision.
    pub(crate) async fn rollback_cluster(
        &self,
        by: &str,
        to: u64,
    ) -> Result<ClusterApplied, ClusterError> {
        let old = revisions::get(&self.store, to).await?;
        self.apply_cluster(by, &format!("rollback to revision {to}"), &old.yaml, false)
            .await
    }

    /// The current revision's YAML.
    pub(crate) async fn export_cluster(&self) -> Result<String, ClusterError> {
        revisions::current(&self.store)
            .await?
            .map(|c| c.yaml)
            .ok_or_else(|| {
                ClusterError::NotFound(
                    "no cluster YAML was applied yet (`cloudlet ctl cluster apply -f FILE`)".into(),
                )
            })
    }
}

/// A warning for an apply's summary when a store cloudlet runs for Cloudpods (MariaDB, etcd),
/// which listens on its node's loopback, may be placed apart from the components that use it:
/// more than one node (`control`) can run control services. Empty otherwise.
fn loopback_note(services: &[ServiceManifest], control: &[String]) -> String {
    let stores: Vec<&str> = services
        .iter()
        .map(|m| m.metadata.name.as_str())
        .filter(|n| ["mysql", "etcd"].contains(n))
        .collect();
    if stores.is_empty() || control.len() < 2 {
        return String::new();
    }
    format!(
        "; WARNING: {} {} on 127.0.0.1 of the node that runs it, and {} nodes run control \
         services ({}): set spec.mysql.host to a database every node reaches, or give the \
         control role to one node (spec.nodes.control)",
        stores.join(" and "),
        if stores.len() == 1 {
            "listens"
        } else {
            "listen"
        },
        control.len(),
        control.join(", ")
    )
}

fn change(name: &str, what: &str, fields: Vec<String>) -> ServiceChange {
    ServiceChange {
        name: name.to_owned(),
        change: what.to_owned(),
        fields,
        nodes: Vec::new(),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(templates: &[(String, String)]) -> Sources<'_> {
        Sources {
            templates,
            cloudlet: Path::new("/usr/local/bin/cloudlet"),
        }
    }

    fn credentials() -> Credentials {
        Credentials::generate()
    }

    /// `template` (the `host` service) rendered by a compute cluster with `extra` spec lines.
    fn render_host(template: &str, extra: &str) -> ServiceManifest {
        let text = format!(
            "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  \
             version: v1\n  profile: compute\n  disableBootstrap: true\n{extra}  components:\n    \
             host-deployer: {{disable: true}}\n    host-image: {{disable: true}}\n    \
             host-health: {{disable: true}}\n    sdnagent: {{disable: true}}\n    \
             openvswitch-db: {{disable: true}}\n    openvswitch-switch: {{disable: true}}\n"
        );
        let cluster = ClusterManifest::parse("c.yaml", &text).unwrap();
        let templates = [("host.yaml".to_owned(), template.to_owned())];
        let mut services = render(&cluster, &sources(&templates), None, &credentials()).unwrap();
        services.remove(0)
    }

    /// The services' certificate goes to every Cloudpods component (as the operator mounts its
    /// certs Secret), not to the Open vSwitch daemons.
    #[test]
    fn the_services_certificate_goes_to_the_cloudpods_components() {
        let text = "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  \
            version: v1\n  profile: compute\n  configDir: /tmp/yunion\n  disableBootstrap: true\n  \
            components:\n    \
            host-deployer: {disable: true}\n    host-image: {disable: true}\n    \
            host-health: {disable: true}\n    sdnagent: {disable: true}\n    \
            openvswitch-switch: {disable: true}\n";
        let cluster = ClusterManifest::parse("c.yaml", text).unwrap();
        let templates = [
            (
                "host.yaml".to_owned(),
                "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: host, labels: \
                 {component: cloudpods}}\nspec:\n  command: [\"${binDir}/host\"]\n"
                    .to_owned(),
            ),
            (
                "openvswitch.yaml".to_owned(),
                "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: openvswitch-db, \
                 labels: {component: openvswitch}}\nspec:\n  command: [ovsdb-server]\n"
                    .to_owned(),
            ),
        ];
        let now = jiff::Timestamp::now();
        let certs = ServiceCertsRecord {
            ca_cert: "CA".into(),
            ca_key: "CA KEY".into(),
            cert: "CERT".into(),
            key: "KEY".into(),
            issued_at: now,
            not_after: now,
            names: Vec::new(),
        };
        let files = |certs: Option<&ServiceCertsRecord>| {
            render(&cluster, &sources(&templates), certs, &credentials())
                .unwrap()
                .into_iter()
                .map(|m| {
                    let files: Vec<(String, String)> = m
                        .spec
                        .files
                        .iter()
                        .map(|f| (f.path.display().to_string(), f.content.clone()))
                        .collect();
                    (m.metadata.name, files)
                })
                .collect::<BTreeMap<_, _>>()
        };
        let with = files(Some(&certs));
        assert_eq!(
            with["host"],
            [
                ("/tmp/yunion/pki/ca.crt".to_owned(), "CA".to_owned()),
                ("/tmp/yunion/pki/service.crt".to_owned(), "CERT".to_owned()),
                ("/tmp/yunion/pki/service.key".to_owned(), "KEY".to_owned()),
            ]
        );
        assert!(with["openvswitch-db"].is_empty(), "{with:?}");
        assert!(files(None).values().all(Vec::is_empty));
    }

    /// Probes are HTTPS unless the cluster YAML says `disableTls: true`.
    #[test]
    fn probes_are_https_unless_tls_is_disabled() {
        let template = "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: host}\nspec:\n  \
            command: [\"${binDir}/host\"]\n  readiness: {http: {port: 8885, path: /ping}}\n";
        let scheme = |extra: &str| {
            render_host(template, extra)
                .spec
                .readiness
                .and_then(|r| r.http)
                .and_then(|h| h.scheme)
        };
        assert_eq!(scheme(""), Some(ProbeScheme::Https));
        assert_eq!(scheme("  disableTls: true\n"), Some(ProbeScheme::Http));
    }

    /// `commonConfig` becomes `<configDir>/common/common.conf` for what reads it, and only that.
    #[test]
    fn common_config_goes_to_the_components_that_read_it() {
        let reads = "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: host}\nspec:\n  \
            command: [\"${binDir}/host\", --common-config-file, \"${configDir}/common/common.conf\"]\n";
        let ignores = "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: host}\nspec:\n  \
            command: [\"${binDir}/host\"]\n";
        let extra = "  configDir: /tmp/yunion\n  commonConfig: {region: r1, enable_ssl: true}\n";
        let files = render_host(reads, extra).spec.files;
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].path, Path::new("/tmp/yunion/common/common.conf"));
        assert_eq!(files[0].content, "enable_ssl: true\nregion: r1\n");
        assert!(render_host(ignores, extra).spec.files.is_empty());
        assert!(render_host(reads, "").spec.files.is_empty());
    }

    /// The cluster YAML's rollout settings win field by field; the template's fill the rest.
    #[test]
    fn rollout_settings_merge_over_the_template() {
        let template = "apiVersion: cloudlet/v1\nkind: Service\nmetadata: {name: host}\nspec:\n  \
            command: [\"${binDir}/host\"]\n  rollout: {progressDeadline: 50m}\n";
        let rollout = |extra: &str| {
            let r = render_host(template, extra)
                .spec
                .rollout
                .unwrap_or_default()
                .effective();
            (r.max_unavailable, r.progress_deadline)
        };
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        assert_eq!(rollout(""), (1, minutes(50)));
        assert_eq!(
            rollout("  rollout: {progressDeadline: 5m, maxUnavailable: 3}\n"),
            (3, minutes(5))
        );
        assert_eq!(
            rollout("  rollout: {maxUnavailable: 2}\n"),
            (2, minutes(50))
        );
    }

    /// Every embedded template, as the server hands them over.
    fn embedded_templates() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../embedded-manifests");
        let mut files = vec![dir.join("openvswitch.yaml")];
        let mut cloudpods: Vec<_> = std::fs::read_dir(dir.join("cloudpods"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        cloudpods.sort();
        files.extend(cloudpods);
        files
            .into_iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    }

    /// The whole edge profile with the bootstrap: one valid set (every dependency resolves, no
    /// cycle), every component that has a step waits for it, no step is left without a service
    /// to run before it.
    #[test]
    fn the_whole_edge_profile_renders_with_its_steps_to_one_valid_set() {
        let text = "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  \
            version: v1\n  etcd: {enable: true}\n";
        let cluster = ClusterManifest::parse("c.yaml", text).unwrap();
        let templates = embedded_templates();
        let mut credentials = credentials();
        credentials.ensure(cloudlet_cloudpods::render::credential_keys(
            &cluster.profile_components(),
        ));
        let services = render(&cluster, &sources(&templates), None, &credentials).unwrap();
        let manifests: Vec<Manifest> = services.iter().cloned().map(Manifest::Service).collect();
        cloudlet_spec::validate_set(&manifests, &[]).unwrap_or_else(|e| panic!("{e}"));
        let by_name: BTreeMap<&str, &ServiceManifest> = services
            .iter()
            .map(|m| (m.metadata.name.as_str(), m))
            .collect();
        // `<component>-init` runs before its component.
        for (name, m) in &by_name {
            let Some(component) = name
                .strip_suffix("-init")
                .filter(|c| m.spec.is_oneshot() && !c.ends_with("-post"))
            else {
                continue;
            };
            if let Some(c) = by_name.get(component) {
                assert!(
                    c.spec.depends_on.iter().any(|d| d == name),
                    "{component} does not wait for {name}"
                );
            }
        }
        let steps: Vec<&str> = by_name
            .iter()
            .filter(|(_, m)| m.spec.is_oneshot())
            .map(|(n, _)| *n)
            .collect();
        for want in [
            "keystone-init",
            "keystone-post-init",
            "region-init",
            "region-post-init",
            "glance-init",
            "scheduler-init",
            "host-init",
        ] {
            assert!(steps.contains(&want), "{want} missing from {steps:?}");
        }
        assert!(
            !steps.contains(&"host-deployer-init"),
            "it uses host's account"
        );
        assert_eq!(by_name["keystone-init"].spec.depends_on, ["mysql", "etcd"]);
        // No host component gets a config of its own; host and kin get common.conf.
        for name in ["host", "host-deployer", "host-image"] {
            let files: Vec<String> = by_name[name]
                .spec
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            assert!(
                !files.iter().any(|f| f.ends_with(&format!("/{name}.conf"))),
                "{name}: {files:?}"
            );
        }
        assert!(
            by_name["host"]
                .spec
                .files
                .iter()
                .any(|f| f.path.ends_with("common/common.conf"))
        );
    }

    /// The stores cloudlet runs listen on loopback: with two control nodes, the apply says so.
    #[test]
    fn a_loopback_store_with_more_than_one_control_node_is_a_warning() {
        let service = |name: &str| {
            ServiceManifest::new(
                cloudlet_spec::Metadata {
                    name: name.into(),
                    labels: BTreeMap::new(),
                },
                cloudlet_spec::ServiceSpec::new(vec!["/bin/true".into()]),
            )
        };
        let with = [service("mysql"), service("keystone")];
        let two = ["c1".to_owned(), "c2".to_owned()];
        let note = loopback_note(&with, &two);
        assert!(
            note.contains("WARNING: mysql listens on 127.0.0.1") && note.contains("(c1, c2)"),
            "{note}"
        );
        assert!(
            loopback_note(&with, &two[..1]).is_empty(),
            "one control node"
        );
        assert!(
            loopback_note(&[service("keystone")], &two).is_empty(),
            "an external database"
        );
    }
}
