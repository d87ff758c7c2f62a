//! The Cloudpods cluster's generated secrets, kept: keystone's admin password, the MariaDB
//! administrator's, and every component's database and service account passwords
//! ([`cloudlet_cloudpods::credentials::Credentials`]), in the store under [`CREDENTIALS`],
//! made on the first cluster apply and only ever added to (a component that appears later gets
//! its passwords then; none ever changes, so applying the same YAML again changes nothing).
//!
//! It also hands the administrator to the operator the way `admin.conf` is handed over: an rc
//! file, `<data-dir>/cloudpods-admin.rc` (0600), for `climc` and `curl`, and the API's
//! `GET /v1/cloudpods/credentials` behind `ctl cloudpods credentials`.
//!
//! It never prints a secret into an event, a log or an error.

use std::path::PathBuf;

use cloudlet_api::dto::CloudpodsCredentials;
use cloudlet_cloudpods::credentials::Credentials;
use cloudlet_cloudpods::render::{ADMIN_DOMAIN, ADMIN_PROJECT, ADMIN_USER};
use cloudlet_spec::ClusterManifest;
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};

use crate::records::{decode, encode};
use crate::revisions;
use crate::{ClusterError, Inner};

/// The key of the credentials record.
pub const CREDENTIALS: &str = "/cluster/cloudpods/credentials";
/// The rc file in the server's data dir.
pub const RC_FILE: &str = "cloudpods-admin.rc";

/// The stored record and its revision, if any.
async fn stored<S: Store>(store: &S) -> Result<Option<(Credentials, u64)>, ClusterError> {
    store
        .get(CREDENTIALS)
        .await?
        .map(|kv| Ok((decode(CREDENTIALS, &kv.value)?, kv.mod_revision)))
        .transpose()
}

/// The stored credentials, if any (a diff generates none).
pub(crate) async fn issued<S: Store>(store: &S) -> Result<Option<Credentials>, ClusterError> {
    Ok(stored(store).await?.map(|(c, _)| c))
}

/// The credentials, with passwords for every one of `components`: made on first use, added to
/// when a component is new, stored before they are used (a crash after this never loses a
/// password a config was written with).
pub(crate) async fn current<S: Store>(
    inner: &Inner<S>,
    components: &[&str],
) -> Result<Credentials, ClusterError> {
    for _ in 0..3 {
        let (mut credentials, compare, new) = match stored(&inner.store).await? {
            Some((c, revision)) => (
                c,
                Compare::mod_revision(CREDENTIALS, CompareOp::Equal, revision),
                false,
            ),
            None => (Credentials::generate(), Compare::absent(CREDENTIALS), true),
        };
        if !credentials.ensure(components.iter().copied()) && !new {
            return Ok(credentials);
        }
        let txn = Txn::guarded(
            vec![compare],
            vec![Op::put(CREDENTIALS, encode(CREDENTIALS, &credentials)?)],
        );
        if inner.store.txn(txn).await?.succeeded {
            return Ok(credentials);
        }
    }
    Err(ClusterError::Conflict(
        "the Cloudpods credentials changed three times while being read; try again".to_owned(),
    ))
}

/// What `ctl cloudpods credentials` shows for `cluster` with `credentials`.
pub(crate) fn admin(cluster: &ClusterManifest, credentials: &Credentials) -> CloudpodsCredentials {
    let scheme = if cluster.spec.disable_tls {
        "http"
    } else {
        "https"
    };
    let host = &cluster.spec.load_balancer_endpoint;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    CloudpodsCredentials {
        auth_url: format!(
            "{scheme}://{host}:{}/v3",
            cloudlet_cloudpods::components::KEYSTONE_ADMIN_PORT
        ),
        user: ADMIN_USER.to_owned(),
        password: credentials.admin_password.clone(),
        project: ADMIN_PROJECT.to_owned(),
        domain: ADMIN_DOMAIN.to_owned(),
        region: cluster.spec.region.clone(),
        ca_file: (!cluster.spec.disable_tls).then(|| {
            cluster
                .spec
                .config_dir
                .join(crate::servicecerts::PKI_DIR)
                .join("ca.crt")
                .display()
                .to_string()
        }),
    }
}

/// The rc file's text: `export` lines `climc` reads.
pub fn rc_text(admin: &CloudpodsCredentials) -> String {
    let mut text = format!(
        "# The Cloudpods administrator, written by cloudlet (keep it 0600).\n\
         # Use: . {RC_FILE}; climc region-list   (or curl with $OS_PASSWORD)\n\
         export OS_AUTH_URL={}\n\
         export OS_USERNAME={}\n\
         export OS_PASSWORD={}\n\
         export OS_PROJECT_NAME={}\n\
         export OS_DOMAIN_NAME={}\n\
         export OS_REGION_NAME={}\n",
        admin.auth_url, admin.user, admin.password, admin.project, admin.domain, admin.region
    );
    if let Some(ca) = &admin.ca_file {
        text.push_str(&format!("export OS_CACERT={ca}\n"));
    }
    text
}

/// Writes `<data-dir>/cloudpods-admin.rc` (0600) when it is missing or says something else.
pub(crate) fn write_rc(
    dir: &std::path::Path,
    admin: &CloudpodsCredentials,
) -> Result<(), ClusterError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path: PathBuf = dir.join(RC_FILE);
    let text = rc_text(admin);
    if std::fs::read_to_string(&path).is_ok_and(|now| now == text) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{RC_FILE}.tmp"));
    let io = |e| ClusterError::Io {
        path: path.clone(),
        source: e,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

impl<S: Store> Inner<S> {
    /// The Cloudpods administrator of the current cluster revision.
    pub(crate) async fn cloudpods_credentials(&self) -> Result<CloudpodsCredentials, ClusterError> {
        let Some(revision) = revisions::current(&self.store).await? else {
            return Err(ClusterError::NotFound(
                "no cluster YAML was applied yet (`cloudlet ctl cluster apply -f cluster.yaml`)"
                    .to_owned(),
            ));
        };
        let cluster = ClusterManifest::parse("current", &revision.yaml)
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let credentials = issued(&self.store).await?.ok_or_else(|| {
            ClusterError::NotFound("the cluster has no Cloudpods credentials yet".to_owned())
        })?;
        Ok(admin(&cluster, &credentials))
    }
}
