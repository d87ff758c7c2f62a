//! [`EtcdStore`]: the [`Store`] trait over an etcd cluster (v3 API, `etcd-client`).
//!
//! Owns: the connection to etcd, the request timeout, and the mapping of each trait call onto
//! etcd's KV, Watch and Lease services under a namespace (a key prefix, so several cloudlet
//! clusters or tests share one etcd). Must never: run or configure etcd itself, or hide an
//! etcd error's endpoints and key.
//!
//! Revisions are etcd's own, unchanged: a new etcd starts at revision 1 (redb at 0), and the
//! revision is global to the etcd cluster, so writes in another namespace move it too (the
//! conformance checks measure revisions relative to their start and expect no other writer, so
//! they run one at a time when they share an etcd). Everything else of the trait's revision
//! rules is what etcd does itself: a write transaction is one revision, deleting an absent key,
//! a read-only or failed compare-and-swap and a lease grant add none.
//!
//! Differences from [`RedbStore`](crate::RedbStore), all etcd's: lease TTLs are whole seconds
//! (rounded up) with etcd's minimum (1.5 × election timeout, 2 s by default); leases and
//! compaction are global to the etcd cluster, not to the namespace; a transaction has at most
//! etcd's `--max-txn-ops` operations (128 by default) and a request at most
//! `--max-request-bytes` (1.5 MiB). A watcher never ends with
//! [`StoreError::WatchLagged`]: when its buffer is full it stops reading its etcd stream and
//! etcd keeps the rest (HTTP/2 flow control); it ends with [`StoreError::EtcdWatchEnded`] if
//! the stream breaks, and with [`StoreError::Compacted`] if etcd compacted past it meanwhile.

mod codec;
mod lease;
mod options;
mod txn;
mod watch;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};

pub use options::{EtcdOptions, EtcdTls};

/// Every limit of [`EtcdOptions`] and of the etcd store's requests.
pub mod limits {
    pub use super::lease::MAX_TTL;
    pub use super::options::{
        KEEP_ALIVE_RANGE, MAX_CONNECT_TIMEOUT, MAX_ENDPOINT_LEN, MAX_ENDPOINTS, MAX_LIST_PAGE,
        MAX_NAMESPACE_LEN, MAX_PEM_BYTES, MAX_REQUEST_TIMEOUT, MAX_WATCH_BUFFER,
        RESPONSE_BYTES_RANGE,
    };
}

use crate::{KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnResponse, Watcher};
use codec::{Codec, Kind};

/// A [`Store`] in an etcd cluster, under a namespace. Cloning is cheap (an `Arc`); clones and
/// [`namespaced`](EtcdStore::namespaced) stores share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    codec: Arc<Codec>,
    options: EtcdOptions,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.codec.endpoints)
            .field("namespace", &self.inner.codec.namespace)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the etcd cluster of `options`. Connects lazily: this fails only on invalid
    /// options or unreadable TLS files; an unreachable etcd fails the first request (poll
    /// [`Store::current_revision`] to wait for etcd). Must be called inside a tokio runtime.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        options.validate()?;
        let endpoints: Arc<str> = options.endpoints.join(",").into();
        let client = Client::connect(&options.endpoints, Some(options.connect_options()?))
            .await
            .map_err(|err| StoreError::Etcd {
                endpoints: endpoints.to_string(),
                context: "connect",
                key: String::new(),
                source: Box::new(err),
            })?;
        let codec = Arc::new(Codec {
            endpoints,
            namespace: options.namespace.clone(),
        });
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                client,
                codec,
                options,
            }),
        })
    }

    /// A store on the same connection whose namespace is this one's followed by `namespace`.
    pub fn namespaced(&self, namespace: &str) -> Result<Self, StoreError> {
        let mut options = self.inner.options.clone();
        options.namespace.push_str(namespace);
        options.validate()?;
        let codec = Arc::new(Codec {
            endpoints: self.inner.codec.endpoints.clone(),
            namespace: options.namespace.clone(),
        });
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                codec,
                options,
            }),
        })
    }

    /// This store's namespace (the prefix of every key in etcd).
    pub fn namespace(&self) -> &str {
        &self.inner.codec.namespace
    }

    fn codec(&self) -> &Codec {
        &self.inner.codec
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.inner
            .client
            .kv_client()
            .max_decoding_message_size(self.inner.options.max_response_bytes)
    }

    /// Runs one request within the request timeout: the etcd client's own result, or
    /// [`StoreError::EtcdTimeout`].
    async fn within<T>(
        &self,
        context: &'static str,
        key: &[u8],
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<Result<T, etcd_client::Error>, StoreError> {
        let after = self.inner.options.request_timeout;
        tokio::time::timeout(after, request)
            .await
            .map_err(|_| StoreError::EtcdTimeout {
                endpoints: self.codec().endpoints.to_string(),
                context,
                key: String::from_utf8_lossy(key).into_owned(),
                after,
            })
    }

    /// [`within`](Self::within), with etcd's errors mapped (`lease` names a lease-not-found).
    async fn call<T>(
        &self,
        context: &'static str,
        key: &[u8],
        lease: Option<LeaseId>,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.within(context, key, request)
            .await?
            .map_err(|err| self.codec().error(context, key, lease, err))
    }
}

fn non_empty(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid("the key is empty".to_string()));
    }
    Ok(())
}

impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        // One key's lookup (not a count of the namespace): only the header matters.
        let key = match self.codec().key("") {
            key if key.is_empty() => vec![0],
            key => key,
        };
        let options = GetOptions::new().with_count_only();
        let response = self
            .call(
                "read the revision",
                &key,
                None,
                self.kv().get(key.clone(), Some(options)),
            )
            .await?;
        self.codec().header_revision(&key, response.header())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        non_empty(key)?;
        let full = self.codec().key(key);
        let response = self
            .call("get", &full, None, self.kv().get(full.clone(), None))
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| self.codec().key_value(kv))
            .transpose()
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        non_empty(key)?;
        let full = self.codec().key(key);
        let options = lease.map(|lease| PutOptions::new().with_lease(lease.0));
        let response = self
            .call(
                "put",
                &full,
                lease,
                self.kv().put(full.clone(), value, options),
            )
            .await?;
        self.codec().header_revision(&full, response.header())
    }

    async fn delete(&self, key: &str) -> Result<(Revision, bool), StoreError> {
        non_empty(key)?;
        let full = self.codec().key(key);
        let response = self
            .call("delete", &full, None, self.kv().delete(full.clone(), None))
            .await?;
        let revision = self.codec().header_revision(&full, response.header())?;
        Ok((revision, response.deleted() > 0))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let (mut from, end) = self.codec().prefix_range(prefix);
        let page = i64::try_from(self.inner.options.list_page).unwrap_or(i64::MAX);
        let mut listed = Vec::new();
        // Every page is read at the first page's revision: one consistent snapshot.
        let mut at: Option<(Revision, i64)> = None;
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if let Some((_, revision)) = at {
                options = options.with_revision(revision);
            }
            let response = self
                .call(
                    "list",
                    &from,
                    None,
                    self.kv().get(from.clone(), Some(options)),
                )
                .await?;
            if at.is_none() {
                let revision = self.codec().header_revision(&from, response.header())?;
                at = Some((revision, self.codec().to_etcd(revision)?));
            }
            for kv in response.kvs() {
                listed.push(self.codec().key_value(kv)?);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let revision = at.map_or(0, |(revision, _)| revision);
        Ok((listed, revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        txn::run(self, txn).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Option<Revision>,
    ) -> Result<Watcher, StoreError> {
        watch::start(self, prefix, from_revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let etcd_revision = self.codec().to_etcd(revision)?;
        let result = self
            .within("compact", b"", self.kv().compact(etcd_revision, None))
            .await?;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match codec::kind(&err) {
                // Already compacted to or past `revision`: nothing to do.
                Kind::Compacted => Ok(()),
                Kind::FutureRevision => Err(StoreError::FutureRevision {
                    requested: revision,
                    current: self.current_revision().await?,
                }),
                _ => Err(self.codec().error("compact", b"", None, err)),
            },
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        lease::grant(self, ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        lease::keep_alive(self, lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        lease::revoke(self, lease).await
    }
}
