//! A cluster YAML's Cloudpods bootstrap, rendered: every component's config options (the
//! operator's `GetConfig`: region, port, TLS, keystone account, database connection), the files
//! of the MariaDB cloudlet runs, and the bootstrap steps as `type: oneshot` services in the
//! order Compose proves (`mysql` → `keystone-init` → `keystone` → `keystone-post-init` →
//! `<component>-init` → component → `region-post-init` → the components that need region's
//! data), with the dependencies the components gain on them.
//!
//! Pure: the credentials come in, manifests and maps go out. The control plane merges them into
//! the services it renders from the templates (an operator's `config:` over these options).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cloudlet_spec::{
    ClusterManifest, FileSpec, Metadata, NodeRole, NodeSelectorSpec, PlacementSpec, RestartSpec,
    ServiceManifest, ServiceSpec, ServiceType,
};
use serde_json::{Map, Value, json};

use crate::CloudpodsError;
use crate::components::{self, After, KEYSTONE_ADMIN_PORT, KEYSTONE_PUBLIC_PORT};
use crate::credentials::Credentials;
use crate::keystone::{Endpoint, KeystoneLogin};
use crate::mariadb;
use crate::mysql::{Database, MysqlServer};
use crate::plan::{Action, Plan};

/// keystone's administrator.
pub const ADMIN_USER: &str = "sysadmin";
/// The project every service account is an admin of.
pub const ADMIN_PROJECT: &str = "system";
/// The domain of the administrator and the service accounts.
pub const ADMIN_DOMAIN: &str = "Default";
/// The role the service accounts have in [`ADMIN_PROJECT`].
pub const ADMIN_ROLE: &str = "admin";
/// The first zone's default wire, as the operator names it.
pub const DEFAULT_WIRE: &str = "bcast0";
/// The system user the MariaDB cloudlet runs runs as (Debian's package makes it).
pub const MYSQL_USER: &str = "mysql";
/// The name of keystone's post-init step.
pub const KEYSTONE_POST_INIT: &str = "keystone-post-init";
/// The name of region's post-init step.
pub const REGION_POST_INIT: &str = "region-post-init";

/// What the rendering needs besides the cluster YAML.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The cluster.
    pub cluster: &'a ClusterManifest,
    /// Its secrets, with every component's passwords ([`Credentials::ensure`]).
    pub credentials: &'a Credentials,
    /// The `cloudlet` executable the steps run (the same path on every node).
    pub cloudlet: &'a Path,
    /// The services CA (PEM), when the services speak TLS: the steps verify them with it.
    pub ca_pem: Option<&'a str>,
}

/// The bootstrap of a cluster.
#[derive(Debug, Default)]
pub struct Rendered {
    /// Per component: its config options, before the operator's `config:` (which wins).
    pub configs: BTreeMap<String, Map<String, Value>>,
    /// The options every component that reads `common.conf` gets (the host's keystone
    /// account), before `spec.commonConfig` (which wins).
    pub common: Map<String, Value>,
    /// Per service: files it gets besides its config (MariaDB's `my.cnf` and init file).
    pub files: BTreeMap<String, Vec<FileSpec>>,
    /// The steps.
    pub steps: Vec<ServiceManifest>,
    /// Per service: the steps it waits for.
    pub depends_on: BTreeMap<String, Vec<String>>,
    /// Per service: environment it gets (etcd's addresses).
    pub env: BTreeMap<String, BTreeMap<String, String>>,
}

/// The MariaDB cloudlet runs, for a cluster without `spec.mysql.host`.
pub fn mariadb_layout(cluster: &ClusterManifest) -> mariadb::Layout {
    mariadb::Layout {
        data_dir: cluster.spec.data_dir.join("mysql"),
        run_dir: cluster.spec.data_dir.join("mysql-run"),
        port: cluster.spec.mysql.port(),
        bind: "127.0.0.1".to_owned(),
        user: MYSQL_USER.to_owned(),
    }
}

/// The database server the components connect to, as its administrator.
pub fn mysql_server(cluster: &ClusterManifest, credentials: &Credentials) -> MysqlServer {
    let mysql = &cluster.spec.mysql;
    match &mysql.host {
        Some(host) => MysqlServer {
            host: host.clone(),
            port: mysql.port(),
            user: mysql.username.clone().unwrap_or_default(),
            password: mysql.password.clone().unwrap_or_default(),
        },
        None => MysqlServer {
            host: "127.0.0.1".to_owned(),
            port: mysql.port(),
            user: mariadb::ADMIN_USER.to_owned(),
            password: credentials.mysql_admin_password.clone(),
        },
    }
}

/// The components whose passwords rendering `components` needs: each one's own, and the owner
/// of what one shares (the scheduler uses region's) even when the owner does not run here.
pub fn credential_keys<'a>(components: &[&'a str]) -> Vec<&'a str> {
    let mut keys: Vec<&str> = components.to_vec();
    for key in components {
        if let Some(owner) = components::get(key).and_then(|c| c.shares)
            && !keys.contains(&owner)
        {
            keys.push(owner);
        }
    }
    keys
}

/// How a URL names `host`: an IPv6 address in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The bootstrap of `components` (the cluster's, in order) for `inputs`.
pub fn render(inputs: &Inputs<'_>, components: &[&str]) -> Result<Rendered, CloudpodsError> {
    let cluster = inputs.cluster;
    let spec = &cluster.spec;
    let tls = !spec.disable_tls;
    let scheme = if tls { "https" } else { "http" };
    let host = url_host(&spec.load_balancer_endpoint);
    let auth_url = format!("{scheme}://{host}:{KEYSTONE_ADMIN_PORT}/v3");
    let server = mysql_server(cluster, inputs.credentials);
    let pki = spec.config_dir.join("pki");
    let runs = |key: &str| components.contains(&key);
    let internal_mysql = runs("mysql");
    let mut out = Rendered::default();

    let passwords = |key: &str| {
        inputs.credentials.component(key).ok_or_else(|| {
            CloudpodsError::Invalid(format!("no credentials for component {key} yet"))
        })
    };

    // Every component's options.
    for key in components {
        let Some(c) = components::get(key) else {
            continue;
        };
        let mut conf = Map::new();
        conf.insert("region".into(), json!(spec.region));
        conf.insert("port".into(), json!(c.port));
        conf.insert("enable_ssl".into(), json!(tls));
        if tls {
            conf.insert("ssl_certfile".into(), json!(pki.join("service.crt")));
            conf.insert("ssl_keyfile".into(), json!(pki.join("service.key")));
            conf.insert("ssl_ca_certs".into(), json!(pki.join("ca.crt")));
        }
        conf.insert("temp_path".into(), json!(spec.data_dir.join("tmp")));
        let owner = c.credentials_of();
        if let Some(user) = c.account {
            conf.insert("auth_url".into(), json!(auth_url));
            conf.insert("admin_user".into(), json!(user));
            conf.insert("admin_password".into(), json!(passwords(owner)?.service));
            conf.insert("admin_domain".into(), json!(ADMIN_DOMAIN));
            conf.insert("admin_project".into(), json!(ADMIN_PROJECT));
            conf.insert("admin_project_domain".into(), json!(ADMIN_DOMAIN));
        }
        if let Some((db, user)) = c.database {
            let password = &passwords(owner)?.database;
            conf.insert(
                "sql_connection".into(),
                json!(format!(
                    "mysql+pymysql://{user}:{password}@{}:{}/{db}?charset=utf8&parseTime=true&interpolateParams=true",
                    url_host(&server.host),
                    server.port
                )),
            );
            conf.insert("auto_sync_table".into(), json!(true));
        }
        match *key {
            "keystone" => {
                conf.insert("admin_port".into(), json!(KEYSTONE_ADMIN_PORT));
                conf.insert(
                    "bootstrap_admin_user_password".into(),
                    json!(inputs.credentials.admin_password),
                );
                // keystone sets sysadmin's password to the bootstrap one at every start: the
                // password cloudlet keeps is the one that counts.
                conf.insert("reset_admin_user_password".into(), json!(true));
                conf.insert(
                    "fernet_key_repository".into(),
                    json!(spec.data_dir.join("keystone/fernet-keys")),
                );
            }
            "region" => {
                conf.insert("port_v2".into(), json!(c.port));
            }
            "scheduler" => {
                // The scheduler reads region's options: `port` is region's, its own is
                // `scheduler_port` (the operator's scheduler config).
                if let Some(region) = components::get("region") {
                    conf.insert("port".into(), json!(region.port));
                }
                conf.insert("scheduler_port".into(), json!(c.port));
            }
            _ => {}
        }
        if cloudlet_spec::component_role(key) == Some(NodeRole::Compute) {
            // The host components read the cluster's options from common.conf (the operator's
            // `<cluster>-host` ConfigMap) and their node's own from `<key>.conf`, which is the
            // node's to write, never the cluster's.
            if *key == "host" {
                conf.remove("port");
                out.common = conf;
            }
            continue;
        }
        out.configs.insert((*key).to_owned(), conf);
    }

    // The MariaDB cloudlet runs.
    if internal_mysql {
        let layout = mariadb_layout(cluster);
        let dir = spec.config_dir.join("mysql");
        let init = dir.join("init.sql");
        let extra: Vec<(String, Value)> = cluster
            .component("mysql")
            .map(|c| {
                c.config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.files.insert(
            "mysql".to_owned(),
            vec![
                FileSpec {
                    path: dir.join("my.cnf"),
                    content: mariadb::config(&layout, &init, &extra),
                    mode: Some("0644".to_owned()),
                    owner: None,
                },
                FileSpec {
                    path: init,
                    content: mariadb::init_sql(&inputs.credentials.mysql_admin_password)?,
                    mode: Some("0600".to_owned()),
                    owner: Some(MYSQL_USER.to_owned()),
                },
            ],
        );
    }

    // Cloudpods' etcd: one member on loopback, the peer port next to the client port.
    let etcd_url = format!("http://127.0.0.1:{}", spec.etcd.port());
    if runs("etcd") {
        let peer = format!("http://127.0.0.1:{}", spec.etcd.port().saturating_add(1));
        out.env.insert(
            "etcd".to_owned(),
            BTreeMap::from([
                ("ETCD_LISTEN_CLIENT_URLS".to_owned(), etcd_url.clone()),
                ("ETCD_ADVERTISE_CLIENT_URLS".to_owned(), etcd_url.clone()),
                ("ETCD_LISTEN_PEER_URLS".to_owned(), peer.clone()),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS".to_owned(), peer.clone()),
                (
                    "ETCD_INITIAL_CLUSTER".to_owned(),
                    format!("cloudpods={peer}"),
                ),
            ]),
        );
    }

    // The steps.
    let steps = Steps {
        inputs,
        server: &server,
        auth_url: &auth_url,
        plan_dir: spec.config_dir.join("cloudlet"),
        ca_file: tls.then(|| pki.join("ca.crt")),
    };
    let endpoint = |port: u16, path: &str| {
        ["public", "internal"].map(|interface| Endpoint {
            interface: interface.to_owned(),
            url: format!("{scheme}://{host}:{port}{path}"),
        })
    };
    if runs("keystone") {
        let keystone = components::get("keystone").and_then(|c| c.database);
        let mut actions = Vec::new();
        if let Some((db, user)) = keystone {
            actions.push(Action::Database(Database {
                name: db.to_owned(),
                user: user.to_owned(),
                password: passwords("keystone")?.database.clone(),
            }));
        }
        // The backing stores first (Compose: keystone needs mysql and etcd healthy).
        let stores: Vec<String> = ["mysql", "etcd"]
            .into_iter()
            .filter(|s| runs(s))
            .map(str::to_owned)
            .collect();
        out.steps
            .push(steps.step("keystone-init", stores, actions)?);
        out.depends_on
            .entry("keystone".to_owned())
            .or_default()
            .push("keystone-init".to_owned());

        let mut identity = endpoint(KEYSTONE_PUBLIC_PORT, "/v3").to_vec();
        identity.push(Endpoint {
            interface: "admin".to_owned(),
            url: auth_url.clone(),
        });
        let mut defaults = Map::new();
        defaults.insert("api_server".into(), json!(format!("{scheme}://{host}")));
        let mut actions = vec![
            Action::Policies,
            Action::KeystoneRegion {
                id: spec.region.clone(),
            },
            Action::Service {
                name: "keystone".to_owned(),
                service_type: "identity".to_owned(),
                endpoints: identity,
            },
            Action::Service {
                name: "common".to_owned(),
                service_type: "common".to_owned(),
                endpoints: Vec::new(),
            },
            Action::ServiceConfig {
                service: "common".to_owned(),
                defaults,
            },
        ];
        if runs("etcd") {
            // Where the services find it (GetCommonEtcdEndpoint).
            actions.push(Action::Service {
                name: "etcd".to_owned(),
                service_type: "etcd".to_owned(),
                endpoints: vec![Endpoint {
                    interface: "internal".to_owned(),
                    url: etcd_url.clone(),
                }],
            });
        }
        out.steps
            .push(steps.step(KEYSTONE_POST_INIT, vec!["keystone".to_owned()], actions)?);
    }
    let region_post_init = runs("region");
    for key in components {
        let Some(c) = components::get(key) else {
            continue;
        };
        if *key == "keystone" {
            continue;
        }
        let after = match c.after {
            After::RegionPostInit if region_post_init && *key != "region" => REGION_POST_INIT,
            _ => KEYSTONE_POST_INIT,
        };
        if !runs("keystone") {
            // Nothing to register with: the component runs as its config says.
            continue;
        }
        // A component that shares another's database and account makes them itself when
        // that one does not run here.
        let makes = c.shares.is_none_or(|owner| !runs(owner));
        let owner = c.credentials_of();
        let mut actions = Vec::new();
        if makes {
            if let Some((db, user)) = c.database {
                actions.push(Action::Database(Database {
                    name: db.to_owned(),
                    user: user.to_owned(),
                    password: passwords(owner)?.database.clone(),
                }));
            }
            if let Some(user) = c.account {
                actions.push(Action::ServiceAccount {
                    user: user.to_owned(),
                    password: passwords(owner)?.service.clone(),
                    project: ADMIN_PROJECT.to_owned(),
                    role: ADMIN_ROLE.to_owned(),
                });
            }
        }
        if let Some(r) = c.registration {
            actions.push(Action::Service {
                name: r.name.to_owned(),
                service_type: r.service_type.to_owned(),
                endpoints: if r.endpoints {
                    endpoint(c.port, r.path).to_vec()
                } else {
                    Vec::new()
                },
            });
        }
        let waits = out.depends_on.entry((*key).to_owned()).or_default();
        if actions.is_empty() {
            // Nothing of its own to make: it waits for what it uses.
            let uses = c
                .shares
                .filter(|owner| runs(owner))
                .map_or_else(|| after.to_owned(), |owner| format!("{owner}-init"));
            waits.push(uses);
            continue;
        }
        let name = format!("{key}-init");
        waits.push(name.clone());
        out.steps
            .push(steps.step(&name, vec![after.to_owned()], actions)?);
    }
    if region_post_init && runs("keystone") {
        let actions = vec![Action::RegionInit {
            zones: spec.zones.clone(),
            wire: DEFAULT_WIRE.to_owned(),
        }];
        out.steps
            .push(steps.step(REGION_POST_INIT, vec!["region".to_owned()], actions)?);
    }
    Ok(out)
}

/// Makes step services.
struct Steps<'a> {
    inputs: &'a Inputs<'a>,
    server: &'a MysqlServer,
    auth_url: &'a str,
    plan_dir: PathBuf,
    ca_file: Option<PathBuf>,
}

impl Steps<'_> {
    /// The oneshot service `name` that runs `actions` after `after`.
    fn step(
        &self,
        name: &str,
        after: Vec<String>,
        actions: Vec<Action>,
    ) -> Result<ServiceManifest, CloudpodsError> {
        let cluster = self.inputs.cluster;
        let uses_mysql = actions.iter().any(|a| matches!(a, Action::Database(_)));
        let uses_keystone = actions.iter().any(|a| !matches!(a, Action::Database(_)));
        let plan = Plan {
            step: name.to_owned(),
            mysql: uses_mysql.then(|| self.server.clone()),
            mysql_client: None,
            keystone: uses_keystone.then(|| KeystoneLogin {
                auth_url: self.auth_url.to_owned(),
                user: ADMIN_USER.to_owned(),
                password: self.inputs.credentials.admin_password.clone(),
                project: ADMIN_PROJECT.to_owned(),
                domain: ADMIN_DOMAIN.to_owned(),
            }),
            ca_file: self.ca_file.clone().filter(|_| uses_keystone),
            region: cluster.spec.region.clone(),
            actions,
        };
        let plan_file = self.plan_dir.join(format!("{name}.json"));
        let mut spec = ServiceSpec::new(vec![
            self.inputs.cloudlet.display().to_string(),
            "cloudpods".to_owned(),
            "step".to_owned(),
            "--plan".to_owned(),
            plan_file.display().to_string(),
        ]);
        spec.r#type = Some(ServiceType::Oneshot);
        spec.depends_on = after;
        spec.restart = Some(RestartSpec {
            policy: None,
            backoff: Some(cloudlet_spec::BackoffSpec {
                initial: Some(duration("1s")?),
                max: Some(duration("30s")?),
            }),
            reset_after: None,
        });
        spec.files.push(FileSpec {
            path: plan_file,
            content: plan.to_json()?,
            mode: Some("0600".to_owned()),
            owner: None,
        });
        if let (Some(path), Some(pem)) = (&plan.ca_file, self.inputs.ca_pem) {
            spec.files.push(FileSpec {
                path: path.clone(),
                content: pem.to_owned(),
                mode: Some("0644".to_owned()),
                owner: None,
            });
        }
        // A step keeps no state: it may run on any control node, and moves off a lost one.
        spec.placement = Some(PlacementSpec {
            replicas: Some(1),
            node_selector: Some(NodeSelectorSpec {
                roles: vec![NodeRole::Control],
                labels: BTreeMap::new(),
            }),
            relocate: true,
            ..PlacementSpec::default()
        });
        let labels = BTreeMap::from([
            ("component".to_owned(), "cloudpods-step".to_owned()),
            ("cloudpods.role".to_owned(), "control".to_owned()),
        ]);
        Ok(ServiceManifest::new(
            Metadata {
                name: name.to_owned(),
                labels,
            },
            spec,
        ))
    }
}

fn duration(text: &str) -> Result<cloudlet_spec::Duration, CloudpodsError> {
    cloudlet_spec::Duration::parse(text)
        .map_err(|e| CloudpodsError::Invalid(format!("duration {text}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(extra: &str) -> ClusterManifest {
        let text = format!(
            "apiVersion: cloudlet/v1\nkind: Cluster\nmetadata: {{name: edge}}\nspec:\n  \
             version: v3.11\n  configDir: /etc/yunion\n  dataDir: /var/lib/cloudpods\n{extra}"
        );
        ClusterManifest::parse("c.yaml", &text).unwrap()
    }

    fn rendered(cluster: &ClusterManifest) -> (Rendered, Credentials) {
        let components = cluster.profile_components();
        let mut credentials = Credentials::generate();
        credentials.ensure(credential_keys(&components));
        let inputs = Inputs {
            cluster,
            credentials: &credentials,
            cloudlet: Path::new("/usr/local/bin/cloudlet"),
            ca_pem: Some("CA PEM"),
        };
        (render(&inputs, &components).unwrap(), credentials)
    }

    fn plan_of(step: &ServiceManifest) -> Plan {
        serde_json::from_str(&step.spec.files[0].content).unwrap()
    }

    #[test]
    fn keystone_and_region_get_their_steps_in_the_order_compose_proves() {
        let c = cluster("  only: [keystone, region]\n");
        let (r, credentials) = rendered(&c);
        let names: Vec<&str> = r.steps.iter().map(|s| s.metadata.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "keystone-init",
                KEYSTONE_POST_INIT,
                "region-init",
                REGION_POST_INIT
            ]
        );
        let after = |name: &str| {
            r.steps
                .iter()
                .find(|s| s.metadata.name == name)
                .map(|s| s.spec.depends_on.clone())
                .unwrap()
        };
        assert_eq!(after("keystone-init"), ["mysql"]);
        assert_eq!(after(KEYSTONE_POST_INIT), ["keystone"]);
        assert_eq!(after("region-init"), [KEYSTONE_POST_INIT]);
        assert_eq!(after(REGION_POST_INIT), ["region"]);
        assert_eq!(r.depends_on["keystone"], ["keystone-init"]);
        assert_eq!(r.depends_on["region"], ["region-init"]);
        for step in &r.steps {
            assert!(step.spec.is_oneshot());
            assert_eq!(step.spec.files[0].mode.as_deref(), Some("0600"));
            assert_eq!(
                step.spec.command[..4],
                ["/usr/local/bin/cloudlet", "cloudpods", "step", "--plan"]
            );
            step.validate().unwrap();
        }
        // region-init: its database, its account, its service and endpoints.
        let plan = plan_of(
            r.steps
                .iter()
                .find(|s| s.metadata.name == "region-init")
                .unwrap(),
        );
        let region = credentials.component("region").unwrap();
        assert_eq!(plan.mysql.as_ref().unwrap().host, "127.0.0.1");
        assert_eq!(plan.mysql.as_ref().unwrap().user, mariadb::ADMIN_USER);
        assert_eq!(
            plan.actions,
            [
                Action::Database(Database {
                    name: "yunioncloud".into(),
                    user: "yunioncloud".into(),
                    password: region.database.clone(),
                }),
                Action::ServiceAccount {
                    user: "regionadmin".into(),
                    password: region.service.clone(),
                    project: "system".into(),
                    role: "admin".into(),
                },
                Action::Service {
                    name: "region2".into(),
                    service_type: "compute_v2".into(),
                    endpoints: vec![
                        Endpoint {
                            interface: "public".into(),
                            url: "https://127.0.0.1:30888".into()
                        },
                        Endpoint {
                            interface: "internal".into(),
                            url: "https://127.0.0.1:30888".into()
                        },
                    ],
                },
            ]
        );
        assert_eq!(plan.ca_file, Some(PathBuf::from("/etc/yunion/pki/ca.crt")));
        // The configs.
        let ks = &r.configs["keystone"];
        assert_eq!(ks["admin_port"], json!(30357));
        assert_eq!(
            ks["bootstrap_admin_user_password"],
            json!(credentials.admin_password)
        );
        let rg = &r.configs["region"];
        assert_eq!(rg["auth_url"], json!("https://127.0.0.1:30357/v3"));
        assert_eq!(rg["admin_user"], json!("regionadmin"));
        assert_eq!(rg["admin_password"], json!(region.service));
        assert_eq!(
            rg["sql_connection"],
            json!(format!(
                "mysql+pymysql://yunioncloud:{}@127.0.0.1:3306/yunioncloud?charset=utf8&parseTime=true&interpolateParams=true",
                region.database
            ))
        );
        assert_eq!(rg["ssl_certfile"], json!("/etc/yunion/pki/service.crt"));
        // MariaDB's files: the init file readable by mysql only.
        let files = &r.files["mysql"];
        assert_eq!(files[1].owner.as_deref(), Some("mysql"));
        assert_eq!(files[1].mode.as_deref(), Some("0600"));
        assert!(files[1].content.contains(&credentials.mysql_admin_password));
    }

    #[test]
    fn an_external_database_and_plain_http_are_named_in_every_config_and_plan() {
        let c = cluster(
            "  only: [keystone, region, scheduler]\n  disableTls: true\n  \
             loadBalancerEndpoint: 10.1.2.3\n  \
             mysql: {host: db.example, port: 3307, username: root, password: pw}\n",
        );
        let (r, _) = rendered(&c);
        assert!(!r.files.contains_key("mysql"));
        assert!(!r.env.contains_key("etcd"), "no etcd unless enabled");
        let ks_init = r
            .steps
            .iter()
            .find(|s| s.metadata.name == "keystone-init")
            .unwrap();
        assert!(
            ks_init.spec.depends_on.is_empty(),
            "no MariaDB of cloudlet's to wait for"
        );
        let plan = plan_of(ks_init);
        assert_eq!(plan.mysql.as_ref().unwrap().address(), "db.example:3307");
        assert!(
            r.configs["region"]["sql_connection"]
                .as_str()
                .unwrap()
                .contains("@db.example:3307/yunioncloud")
        );
        assert_eq!(r.configs["region"]["enable_ssl"], json!(false));
        assert!(!r.configs["region"].contains_key("ssl_certfile"));
        // The scheduler uses region's account and database, and waits for region's data.
        let sched = &r.configs["scheduler"];
        assert_eq!(sched["admin_user"], json!("regionadmin"));
        assert_eq!(sched["port"], json!(30888));
        assert_eq!(sched["scheduler_port"], json!(30887));
        let step = r
            .steps
            .iter()
            .find(|s| s.metadata.name == "scheduler-init")
            .unwrap();
        assert_eq!(step.spec.depends_on, [REGION_POST_INIT]);
        let plan = plan_of(step);
        assert!(
            matches!(&plan.actions[..], [Action::Service { endpoints, .. }]
            if endpoints[0].url == "http://10.1.2.3:30887")
        );
        assert_eq!(plan.ca_file, None);
    }

    #[test]
    fn etcd_comes_first_and_is_registered_where_the_services_look_for_it() {
        let c = cluster("  only: [keystone, region]\n  etcd: {enable: true, port: 12379}\n");
        assert_eq!(c.profile_components()[..2], ["mysql", "etcd"]);
        let (r, _) = rendered(&c);
        let env = &r.env["etcd"];
        assert_eq!(env["ETCD_LISTEN_CLIENT_URLS"], "http://127.0.0.1:12379");
        assert_eq!(
            env["ETCD_INITIAL_CLUSTER"],
            "cloudpods=http://127.0.0.1:12380"
        );
        let init = r
            .steps
            .iter()
            .find(|s| s.metadata.name == "keystone-init")
            .unwrap();
        assert_eq!(init.spec.depends_on, ["mysql", "etcd"]);
        let post = r
            .steps
            .iter()
            .find(|s| s.metadata.name == KEYSTONE_POST_INIT)
            .unwrap();
        assert!(plan_of(post).actions.contains(&Action::Service {
            name: "etcd".into(),
            service_type: "etcd".into(),
            endpoints: vec![Endpoint {
                interface: "internal".into(),
                url: "http://127.0.0.1:12379".into()
            }],
        }));
    }

    #[test]
    fn a_component_that_shares_gets_its_owners_passwords_even_without_the_owner() {
        let c = cluster("  only: [keystone, scheduler]\n");
        assert_eq!(
            credential_keys(&c.profile_components()),
            ["mysql", "keystone", "scheduler", "region"]
        );
        let (r, credentials) = rendered(&c);
        let region = credentials.component("region").unwrap();
        assert_eq!(
            r.configs["scheduler"]["admin_password"],
            json!(region.service)
        );
        // Its own step makes region's database and account, since region does not run here.
        let step = r
            .steps
            .iter()
            .find(|s| s.metadata.name == "scheduler-init")
            .unwrap();
        let plan = plan_of(step);
        assert!(matches!(&plan.actions[0], Action::Database(db) if db.name == "yunioncloud"));
        assert!(
            matches!(&plan.actions[1], Action::ServiceAccount { user, .. } if user == "regionadmin")
        );
    }
}
