//! The embedded backend: [`RedbStore`], a [`Store`] in one redb file.
//!
//! Owns: the tables, the commit lock that orders writes and watch registration, the fan-out to
//! watchers, history compaction, leases and their expiry task, and recovery after a failed
//! write. Must never: block an async caller (redb runs on the blocking pool), acknowledge a
//! write before it is fsynced, or let a slow watcher hold up a writer.
//!
//! Tables: `kv` (key -> [`codec`] record), `meta` (format, revision, compacted revision, next
//! lease id), `history` (revision -> that revision's events, for watches from a past revision)
//! and `leases` (lease id -> TTL in milliseconds).
//!
//! Ordering: every write runs under one mutex (the commit lock) and, once its redb transaction
//! has committed with immediate durability, hands its events to the watchers before releasing
//! the lock. A watch registers under the same lock, noting the revision R committed so far: it
//! replays `from..=R` from `history` and receives everything after R live, so nothing is missed
//! or delivered twice.

mod codec;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::watch::{self, HistorySource, Replay, WatchSender};
use crate::{
    KeyValue, LeaseId, Op, Revision, Store, StoreError, Txn, TxnResponse, WatchEvent, Watcher,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_NEXT_LEASE: &str = "next_lease_id";
const FORMAT_VERSION: u64 = 1;

/// Revisions read from history per blocking call while a watcher replays.
const REPLAY_CHUNK: u64 = 256;
/// The longest lease TTL accepted (etcd's limit is larger, but nothing here needs more).
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the lease task waits before retrying after it failed to expire a lease.
const EXPIRY_RETRY: Duration = Duration::from_secs(1);

/// Settings of a [`RedbStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedbOptions {
    /// How many of the latest revisions the history keeps for watches from a past revision
    /// (at least 1). Older ones are compacted as new revisions commit.
    pub history: u64,
    /// How many live events a watcher may have waiting before it is ended with
    /// [`StoreError::WatchLagged`] (at least 1).
    pub watch_buffer: usize,
    /// Bytes of memory redb may keep as its page cache (reads and the write buffer). The file is
    /// in the kernel's page cache anyway; redb's default (1 GiB) would hold every page the
    /// server ever read on its heap (7 MiB for a 2 MB store with 300 services).
    pub cache_size: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            history: 10_000,
            watch_buffer: 1024,
            cache_size: 2 << 20,
        }
    }
}

/// A [`Store`] in one redb file. Cloning is cheap (an `Arc`); the file is closed when the last
/// clone, and every watcher still replaying history, is dropped.
///
/// Every write is committed with immediate durability (fsync) before it is acknowledged, so an
/// acknowledged write survives SIGKILL and power loss. Leases are persisted; after a reopen
/// each surviving lease starts a fresh full TTL (as etcd does on a leader change).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    options: RedbOptions,
    /// The open database; `None` after a failed reopen (the next request tries again).
    /// Taken for writing only to replace the database after an I/O failure.
    db: RwLock<DbSlot>,
    /// The commit lock: held for the whole of every write and watch registration.
    state: Mutex<State>,
    /// Live leases. Locked briefly, never across I/O; when both are needed, after `state`.
    leases: Mutex<HashMap<LeaseId, Lease>>,
    /// The last committed revision, readable without the commit lock.
    revision: AtomicU64,
    /// Wakes the lease task (a lease was granted, or the store is dropped).
    lease_wake: Arc<Notify>,
}

struct DbSlot {
    db: Option<Database>,
    /// Incremented by every reopen, so concurrent failures reopen once.
    generation: u64,
}

struct State {
    revision: Revision,
    /// The newest revision removed from history (0: none); history keeps `compacted + 1..`.
    compacted: Revision,
    next_lease: i64,
    watchers: Vec<WatchSender>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// What a write transaction changed, applied to the in-memory state after it commits.
struct WriteCtx {
    /// The revision the write commits at if it changes a key.
    revision: Revision,
    events: Vec<WatchEvent>,
    /// (key, lease before, lease after) for every key written or deleted.
    lease_moves: Vec<(String, Option<LeaseId>, Option<LeaseId>)>,
    leases_added: Vec<(LeaseId, Duration)>,
    leases_removed: Vec<LeaseId>,
    next_lease: i64,
    /// An explicit compaction: history older than this revision is dropped.
    compact_before: Revision,
    /// Something other than keys changed (leases), so the transaction must commit.
    dirty: bool,
}

/// The persistent state read at open and after a reopen.
struct Loaded {
    revision: Revision,
    compacted: Revision,
    next_lease: i64,
    leases: HashMap<LeaseId, (Duration, BTreeSet<String>)>,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file if it does not exist (its directory must).
    ///
    /// Must be called inside a tokio runtime: it spawns the task that expires leases. It blocks
    /// while redb opens the file (and repairs it after a crash).
    pub fn open(path: &Path, options: RedbOptions) -> Result<RedbStore, StoreError> {
        if options.history == 0 || options.watch_buffer == 0 {
            return Err(StoreError::Invalid(format!(
                "redb options need history >= 1 and watch_buffer >= 1, got {options:?}"
            )));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime {
            path: path.to_path_buf(),
        })?;
        let db = open_db(path, options.cache_size)?;
        let loaded = load(&db, path)?;
        let now = Instant::now();
        let leases = loaded
            .leases
            .into_iter()
            .map(|(id, (ttl, keys))| {
                let lease = Lease {
                    ttl,
                    deadline: deadline(now, ttl),
                    keys,
                };
                (id, lease)
            })
            .collect();
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            options,
            db: RwLock::new(DbSlot {
                db: Some(db),
                generation: 0,
            }),
            state: Mutex::new(State {
                revision: loaded.revision,
                compacted: loaded.compacted,
                next_lease: loaded.next_lease,
                watchers: Vec::new(),
            }),
            leases: Mutex::new(leases),
            revision: AtomicU64::new(loaded.revision),
            lease_wake: Arc::new(Notify::new()),
        });
        runtime.spawn(lease_task(Arc::downgrade(&inner), inner.lease_wake.clone()));
        Ok(RedbStore { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Arc<Inner>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|err| StoreError::Task {
                path: self.inner.path.clone(),
                detail: err.to_string(),
            })?
    }

    async fn run_txn(&self, txn: Txn) -> Result<(TxnResponse, bool), StoreError> {
        txn.validate().map_err(StoreError::Invalid)?;
        self.blocking(move |inner| inner.txn(&txn)).await
    }
}

impl Store for RedbStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.revision.load(Ordering::SeqCst))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            inner.read(|rtx| {
                let kv = rtx
                    .open_table(KV)
                    .map_err(inner.redb_err("open kv table"))?;
                inner.read_kv(&kv, &key)
            })
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let put = Op::Put {
            key: key.to_string(),
            value,
            lease,
        };
        let (response, _) = self.run_txn(Txn::ops(vec![put])).await?;
        Ok(response.revision)
    }

    async fn delete(&self, key: &str) -> Result<(Revision, bool), StoreError> {
        let (response, changed) = self.run_txn(Txn::ops(vec![Op::delete(key)])).await?;
        Ok((response.revision, changed))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.read(|rtx| inner.list(rtx, &prefix)))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        Ok(self.run_txn(txn).await?.0)
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Option<Revision>,
    ) -> Result<Watcher, StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.register_watch(&prefix, from_revision))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.compact(revision)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
            return Err(StoreError::Invalid(format!(
                "lease ttl {ttl:?} is outside 1ms..={MAX_TTL:?}"
            )));
        }
        let id = self.blocking(move |inner| inner.grant_lease(ttl)).await?;
        self.inner.lease_wake.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut leases = self.inner.lock_leases()?;
        match leases.get_mut(&lease) {
            Some(entry) if entry.deadline > now => {
                entry.deadline = deadline(now, entry.ttl);
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.revoke(lease, None))
            .await?;
        Ok(())
    }
}

impl Inner {
    fn redb_err<E: Into<redb::Error>>(&self, context: &'static str) -> impl Fn(E) -> StoreError {
        let path = self.path.clone();
        move |err| StoreError::redb(&path, context, err)
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    fn poisoned<T>(&self, _: T) -> StoreError {
        StoreError::Poisoned {
            path: self.path.clone(),
        }
    }

    fn lock_state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|e| self.poisoned(e))
    }

    fn lock_leases(&self) -> Result<MutexGuard<'_, HashMap<LeaseId, Lease>>, StoreError> {
        self.leases.lock().map_err(|e| self.poisoned(e))
    }

    /// Runs `f` in a read transaction. If the database failed (an earlier write's I/O error
    /// latches redb into refusing everything), reopens it and tries once more.
    fn read<T>(
        &self,
        f: impl Fn(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let (result, generation) = {
                let slot = self.db.read().map_err(|e| self.poisoned(e))?;
                let result = match &slot.db {
                    Some(db) => db
                        .begin_read()
                        .map_err(self.redb_err("begin read"))
                        .and_then(|rtx| f(&rtx)),
                    None => Err(self.redb_err("read")(redb::Error::DatabaseClosed)),
                };
                (result, slot.generation)
            };
            match result {
                Err(err) if !retried && needs_reopen(&err) => {
                    retried = true;
                    let mut state = self.lock_state()?;
                    self.reopen(&mut state, generation)?;
                }
                other => return other,
            }
        }
    }

    /// Runs `f` in a write transaction under the commit lock, commits (fsync) if it changed
    /// anything, then updates the in-memory state and feeds the watchers. Returns `f`'s result,
    /// the revision after the write, and whether the write made a new revision.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut WriteCtx) -> Result<T, StoreError>,
    ) -> Result<(T, Revision, bool), StoreError> {
        let mut state = self.lock_state()?;
        let generation = {
            let slot = self.db.read().map_err(|e| self.poisoned(e))?;
            (slot.db.is_none()).then_some(slot.generation)
        };
        if let Some(generation) = generation {
            self.reopen(&mut state, generation)?;
        }
        let (result, generation) = {
            let slot = self.db.read().map_err(|e| self.poisoned(e))?;
            let result = match &slot.db {
                Some(db) => self.write_in(db, &mut state, f),
                None => Err(self.redb_err("write")(redb::Error::DatabaseClosed)),
            };
            (result, slot.generation)
        };
        if let Err(err) = &result
            && needs_reopen(err)
        {
            tracing::warn!(path = %self.path.display(), error = %err, "store write failed; reopening the database");
            if let Err(reopen) = self.reopen(&mut state, generation) {
                tracing::error!(path = %self.path.display(), error = %reopen, "store reopen failed; will retry on the next request");
            }
        }
        result
    }

    fn write_in<T>(
        &self,
        db: &Database,
        state: &mut State,
        f: impl FnOnce(&WriteTransaction, &mut WriteCtx) -> Result<T, StoreError>,
    ) -> Result<(T, Revision, bool), StoreError> {
        let mut wtx = db.begin_write().map_err(self.redb_err("begin write"))?;
        wtx.set_durability(Durability::Immediate)
            .map_err(self.redb_err("set durability"))?;
        let mut ctx = WriteCtx {
            revision: state.revision + 1,
            events: Vec::new(),
            lease_moves: Vec::new(),
            leases_added: Vec::new(),
            leases_removed: Vec::new(),
            next_lease: state.next_lease,
            compact_before: 0,
            dirty: false,
        };
        let value = f(&wtx, &mut ctx)?;

        let changed = !ctx.events.is_empty();
        let mut compact_to = ctx.compact_before.saturating_sub(1);
        {
            let mut meta = wtx
                .open_table(META)
                .map_err(self.redb_err("open meta table"))?;
            let mut history = wtx
                .open_table(HISTORY)
                .map_err(self.redb_err("open history table"))?;
            if changed {
                history
                    .insert(ctx.revision, codec::encode_events(&ctx.events).as_slice())
                    .map_err(self.redb_err("write history"))?;
                meta.insert(META_REVISION, ctx.revision)
                    .map_err(self.redb_err("write revision"))?;
                compact_to = compact_to.max(ctx.revision.saturating_sub(self.options.history));
            }
            if compact_to > state.compacted {
                history
                    .retain_in(state.compacted + 1..=compact_to, |_, _| false)
                    .map_err(self.redb_err("compact history"))?;
                meta.insert(META_COMPACTED, compact_to)
                    .map_err(self.redb_err("write compacted revision"))?;
            }
            if ctx.next_lease != state.next_lease {
                meta.insert(META_NEXT_LEASE, u64::try_from(ctx.next_lease).unwrap_or(0))
                    .map_err(self.redb_err("write next lease id"))?;
            }
        }
        let compacted = compact_to.max(state.compacted);
        if !changed && !ctx.dirty && compacted == state.compacted {
            wtx.abort().map_err(self.redb_err("abort"))?;
            return Ok((value, state.revision, false));
        }
        wtx.commit().map_err(self.redb_err("commit"))?;

        // Committed: bring the in-memory state up to date before anyone else can write.
        if changed {
            state.revision = ctx.revision;
            self.revision.store(ctx.revision, Ordering::SeqCst);
        }
        state.compacted = compacted;
        state.next_lease = ctx.next_lease;
        self.apply_lease_changes(&ctx)?;
        if changed {
            let revision = ctx.revision;
            state
                .watchers
                .retain(|watcher| watcher.send_revision(revision, &ctx.events));
        }
        Ok((value, state.revision, changed))
    }

    fn apply_lease_changes(&self, ctx: &WriteCtx) -> Result<(), StoreError> {
        let mut leases = self.lock_leases()?;
        for (key, before, after) in &ctx.lease_moves {
            if let Some(lease) = before.and_then(|id| leases.get_mut(&id)) {
                lease.keys.remove(key);
            }
            if let Some(lease) = after.and_then(|id| leases.get_mut(&id)) {
                lease.keys.insert(key.clone());
            }
        }
        for id in &ctx.leases_removed {
            leases.remove(id);
        }
        let now = Instant::now();
        for (id, ttl) in &ctx.leases_added {
            let lease = Lease {
                ttl: *ttl,
                deadline: deadline(now, *ttl),
                keys: BTreeSet::new(),
            };
            leases.insert(*id, lease);
        }
        Ok(())
    }

    /// Replaces a failed database with a freshly opened one (redb refuses every request after
    /// an I/O error until it is reopened). Does nothing if another request already did it for
    /// `failed_generation`. If the failed write turns out to have committed after all (its
    /// fsync failed after the data was written), reloads the state and ends every watcher so it
    /// resumes from history.
    fn reopen(&self, state: &mut State, failed_generation: u64) -> Result<(), StoreError> {
        let mut slot = self.db.write().map_err(|e| self.poisoned(e))?;
        if slot.generation != failed_generation && slot.db.is_some() {
            return Ok(());
        }
        slot.generation += 1;
        // Close the failed handle first: it holds the file lock.
        drop(slot.db.take());
        let db = open_db(&self.path, self.options.cache_size)?;
        let loaded = load(&db, &self.path)?;
        slot.db = Some(db);
        drop(slot);
        tracing::info!(path = %self.path.display(), "store database reopened");
        if loaded.revision == state.revision && loaded.compacted == state.compacted {
            return Ok(());
        }
        tracing::warn!(
            path = %self.path.display(),
            memory = state.revision,
            disk = loaded.revision,
            "store revision changed across a failed write; watchers must resume"
        );
        let resume_from = state.revision + 1;
        state.revision = loaded.revision;
        state.compacted = loaded.compacted;
        state.next_lease = loaded.next_lease;
        self.revision.store(loaded.revision, Ordering::SeqCst);
        for watcher in state.watchers.drain(..) {
            watcher.end(StoreError::WatchLagged { resume_from });
        }
        let now = Instant::now();
        let mut leases = self.lock_leases()?;
        let old = std::mem::take(&mut *leases);
        for (id, (ttl, keys)) in loaded.leases {
            let deadline = old
                .get(&id)
                .map_or_else(|| deadline(now, ttl), |lease| lease.deadline);
            leases.insert(
                id,
                Lease {
                    ttl,
                    deadline,
                    keys,
                },
            );
        }
        Ok(())
    }

    fn read_kv(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<Option<KeyValue>, StoreError> {
        let Some(guard) = table.get(key).map_err(self.redb_err("read key"))? else {
            return Ok(None);
        };
        codec::decode_kv(key, guard.value())
            .map(Some)
            .map_err(|detail| self.corrupt(detail))
    }

    fn list(
        &self,
        rtx: &ReadTransaction,
        prefix: &str,
    ) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let meta = rtx
            .open_table(META)
            .map_err(self.redb_err("open meta table"))?;
        let revision = meta_get(&meta, META_REVISION).map_err(self.redb_err("read revision"))?;
        let kv = rtx.open_table(KV).map_err(self.redb_err("open kv table"))?;
        let mut out = Vec::new();
        for entry in kv.range(prefix..).map_err(self.redb_err("list keys"))? {
            let (key, value) = entry.map_err(self.redb_err("list keys"))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(codec::decode_kv(key, value.value()).map_err(|d| self.corrupt(d))?);
        }
        Ok((out, revision))
    }

    fn txn(&self, txn: &Txn) -> Result<(TxnResponse, bool), StoreError> {
        let ((succeeded, gets), revision, changed) = self.write(|wtx, ctx| {
            let mut kv = wtx.open_table(KV).map_err(self.redb_err("open kv table"))?;
            let mut succeeded = true;
            for compare in &txn.compares {
                let current = self.read_kv(&kv, &compare.key)?;
                succeeded &= compare.holds(current.as_ref());
            }
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            let mut gets = Vec::new();
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        self.apply_put(ctx, &mut kv, key, value, *lease)?;
                    }
                    Op::Delete { key } => self.apply_delete(ctx, &mut kv, key)?,
                    Op::DeletePrefix { prefix } => {
                        let mut keys = Vec::new();
                        for entry in kv.range(prefix.as_str()..).map_err(self.redb_err("scan"))? {
                            let (key, _) = entry.map_err(self.redb_err("scan"))?;
                            if !key.value().starts_with(prefix.as_str()) {
                                break;
                            }
                            keys.push(key.value().to_string());
                        }
                        for key in keys {
                            self.apply_delete(ctx, &mut kv, &key)?;
                        }
                    }
                    Op::Get { key } => gets.push(self.read_kv(&kv, key)?),
                }
            }
            Ok((succeeded, gets))
        })?;
        let response = TxnResponse {
            succeeded,
            revision,
            gets,
        };
        Ok((response, changed))
    }

    fn apply_put(
        &self,
        ctx: &mut WriteCtx,
        kv: &mut redb::Table<'_, &'static str, &'static [u8]>,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<(), StoreError> {
        if let Some(id) = lease {
            let now = Instant::now();
            let live = self
                .lock_leases()?
                .get(&id)
                .is_some_and(|lease| lease.deadline > now);
            if !live {
                return Err(StoreError::LeaseNotFound(id));
            }
        }
        let before = self.read_kv(kv, key)?;
        let record = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: before.as_ref().map_or(ctx.revision, |b| b.create_revision),
            mod_revision: ctx.revision,
            version: before.as_ref().map_or(1, |b| b.version + 1),
            lease,
        };
        kv.insert(key, codec::encode_kv(&record).as_slice())
            .map_err(self.redb_err("write key"))?;
        let lease_before = before.and_then(|b| b.lease);
        if lease_before != lease {
            ctx.lease_moves.push((key.to_string(), lease_before, lease));
        }
        ctx.events.push(WatchEvent {
            kind: crate::EventKind::Put,
            kv: record,
        });
        Ok(())
    }

    fn apply_delete(
        &self,
        ctx: &mut WriteCtx,
        kv: &mut redb::Table<'_, &'static str, &'static [u8]>,
        key: &str,
    ) -> Result<(), StoreError> {
        let Some(before) = self.read_kv(kv, key)? else {
            return Ok(());
        };
        kv.remove(key).map_err(self.redb_err("delete key"))?;
        if before.lease.is_some() {
            ctx.lease_moves.push((key.to_string(), before.lease, None));
        }
        ctx.events
            .push(WatchEvent::delete(key.to_string(), ctx.revision));
        Ok(())
    }

    fn register_watch(
        self: &Arc<Self>,
        prefix: &str,
        from_revision: Option<Revision>,
    ) -> Result<Watcher, StoreError> {
        let mut state = self.lock_state()?;
        let current = state.revision;
        let start = match from_revision {
            None | Some(0) => current + 1,
            Some(revision) => revision,
        };
        if start <= state.compacted {
            return Err(StoreError::Compacted {
                requested: start,
                oldest: state.compacted + 1,
            });
        }
        let (sender, live) = watch::channel(prefix, start, self.options.watch_buffer);
        state.watchers.push(sender);
        drop(state);
        let replay = (start <= current).then(|| {
            let source: Arc<dyn HistorySource> = self.clone();
            Replay::new(source, prefix, start, current)
        });
        Ok(Watcher::new(live, replay))
    }

    fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let current = self.revision.load(Ordering::SeqCst);
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        self.write(|_, ctx| {
            ctx.compact_before = revision;
            Ok(())
        })?;
        Ok(())
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let millis = u64::try_from(ttl.as_millis())
            .map_err(|_| StoreError::Invalid(format!("lease ttl {ttl:?} is too long")))?;
        let (id, _, _) = self.write(|wtx, ctx| {
            let id = LeaseId(ctx.next_lease);
            let mut leases = wtx
                .open_table(LEASES)
                .map_err(self.redb_err("open leases table"))?;
            leases
                .insert(id.0, millis)
                .map_err(self.redb_err("write lease"))?;
            ctx.next_lease += 1;
            ctx.leases_added.push((id, Duration::from_millis(millis)));
            ctx.dirty = true;
            Ok(id)
        })?;
        Ok(id)
    }

    /// Revokes `id`, deleting its keys in one revision. With `expired_at`, only if the lease is
    /// still expired at that instant (a keep-alive may have raced with the lease task); a lease
    /// that is gone by then is not an error. Returns whether the lease was revoked.
    fn revoke(&self, id: LeaseId, expired_at: Option<Instant>) -> Result<bool, StoreError> {
        let (revoked, _, _) = self.write(|wtx, ctx| {
            let keys = {
                let leases = self.lock_leases()?;
                match (leases.get(&id), expired_at) {
                    (None, None) => return Err(StoreError::LeaseNotFound(id)),
                    (None, Some(_)) => return Ok(false),
                    (Some(lease), Some(at)) if lease.deadline > at => return Ok(false),
                    (Some(lease), _) => lease.keys.clone(),
                }
            };
            let mut kv = wtx.open_table(KV).map_err(self.redb_err("open kv table"))?;
            for key in &keys {
                self.apply_delete(ctx, &mut kv, key)?;
            }
            let mut leases = wtx
                .open_table(LEASES)
                .map_err(self.redb_err("open leases table"))?;
            leases.remove(id.0).map_err(self.redb_err("delete lease"))?;
            ctx.leases_removed.push(id);
            ctx.dirty = true;
            Ok(true)
        })?;
        Ok(revoked)
    }

    /// The earliest lease deadline, if any lease is live.
    fn next_deadline(&self) -> Result<Option<Instant>, StoreError> {
        Ok(self
            .lock_leases()?
            .values()
            .map(|lease| lease.deadline)
            .min())
    }

    /// Revokes every lease whose deadline has passed.
    fn expire_due(&self) -> Result<(), StoreError> {
        let now = Instant::now();
        let due: Vec<LeaseId> = self
            .lock_leases()?
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if self.revoke(id, Some(now))? {
                tracing::debug!(path = %self.path.display(), lease = %id, "lease expired");
            }
        }
        Ok(())
    }
}

impl HistorySource for Inner {
    fn read_history(
        &self,
        prefix: &str,
        from: Revision,
        upto: Revision,
    ) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        let last = upto.min(from.saturating_add(REPLAY_CHUNK - 1));
        self.read(|rtx| {
            let meta = rtx
                .open_table(META)
                .map_err(self.redb_err("open meta table"))?;
            let compacted =
                meta_get(&meta, META_COMPACTED).map_err(self.redb_err("read compacted"))?;
            if from <= compacted {
                return Err(StoreError::Compacted {
                    requested: from,
                    oldest: compacted + 1,
                });
            }
            let history = rtx
                .open_table(HISTORY)
                .map_err(self.redb_err("open history table"))?;
            let mut events = Vec::new();
            let mut expected = from;
            for entry in history
                .range(from..=last)
                .map_err(self.redb_err("read history"))?
            {
                let (revision, bytes) = entry.map_err(self.redb_err("read history"))?;
                let revision = revision.value();
                if revision != expected {
                    break;
                }
                let decoded = codec::decode_events(revision, bytes.value())
                    .map_err(|detail| self.corrupt(detail))?;
                events.extend(
                    decoded
                        .into_iter()
                        .filter(|event| event.kv.key.starts_with(prefix)),
                );
                expected += 1;
            }
            if expected != last + 1 {
                return Err(self.corrupt(format!(
                    "history has no revision {expected} (wanted {from}..={last})"
                )));
            }
            Ok((events, expected))
        })
    }

    fn path(&self) -> PathBuf {
        self.path.clone()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the lease task notice that the store is gone and end.
        self.lease_wake.notify_one();
    }
}

/// Sleeps until the next lease deadline (or until woken by a grant), then revokes what expired.
async fn lease_task(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = match inner.upgrade() {
            Some(inner) => inner.next_deadline(),
            None => return,
        };
        match next {
            Ok(Some(deadline)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => continue,
                }
            }
            Ok(None) => {
                wake.notified().await;
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "lease task stops");
                return;
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let path = strong.path.clone();
        let result = tokio::task::spawn_blocking(move || strong.expire_due()).await;
        let failure = match result {
            Ok(Ok(())) => continue,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::warn!(path = %path.display(), error = %failure, "expiring leases failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(EXPIRY_RETRY) => {}
            () = wake.notified() => {}
        }
    }
}

/// `now + ttl`, saturating far in the future instead of overflowing.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(MAX_TTL))
        .unwrap_or(now)
}

/// Whether `err` means redb's handle is unusable (it latches after an I/O error) and must be
/// reopened.
fn needs_reopen(err: &StoreError) -> bool {
    match err {
        StoreError::DiskFull { .. } => true,
        StoreError::Redb { source, .. } => matches!(
            **source,
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
        ),
        _ => false,
    }
}

/// Opens (or creates) the file and makes sure every table exists. An existing store with
/// every table is opened without writing anything, so that a reopen after a failed write works
/// on a full disk and reads go on.
fn open_db(path: &Path, cache_size: usize) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(cache_size)
        .create(path)
        .map_err(redb_err(path, "open"))?;
    if tables_ready(&db) {
        return Ok(db);
    }
    let wtx = db.begin_write().map_err(redb_err(path, "begin write"))?;
    {
        let mut meta = wtx
            .open_table(META)
            .map_err(redb_err(path, "open meta table"))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(redb_err(path, "read format"))?
            .map(|g| g.value());
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION)
                    .map_err(redb_err(path, "write format"))?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!(
                        "store format {other} is not supported (this build reads {FORMAT_VERSION})"
                    ),
                });
            }
        }
        wtx.open_table(KV)
            .map_err(redb_err(path, "open kv table"))?;
        wtx.open_table(HISTORY)
            .map_err(redb_err(path, "open history table"))?;
        wtx.open_table(LEASES)
            .map_err(redb_err(path, "open leases table"))?;
    }
    wtx.commit().map_err(redb_err(path, "commit"))?;
    Ok(db)
}

/// Whether the store's format is this build's and every table exists (read only).
fn tables_ready(db: &Database) -> bool {
    let Ok(rtx) = db.begin_read() else {
        return false;
    };
    let format_ok = rtx
        .open_table(META)
        .ok()
        .and_then(|meta| meta.get(META_FORMAT).ok().flatten().map(|g| g.value()))
        == Some(FORMAT_VERSION);
    format_ok
        && rtx.open_table(KV).is_ok()
        && rtx.open_table(HISTORY).is_ok()
        && rtx.open_table(LEASES).is_ok()
}

/// Reads the revision counters and the leases with their keys.
fn load(db: &Database, path: &Path) -> Result<Loaded, StoreError> {
    let corrupt = |detail| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let rtx = db.begin_read().map_err(redb_err(path, "begin read"))?;
    let meta = rtx
        .open_table(META)
        .map_err(redb_err(path, "open meta table"))?;
    let revision = meta_get(&meta, META_REVISION).map_err(redb_err(path, "read revision"))?;
    let compacted = meta_get(&meta, META_COMPACTED).map_err(redb_err(path, "read compacted"))?;
    let next_lease =
        meta_get(&meta, META_NEXT_LEASE).map_err(redb_err(path, "read next lease id"))?;
    let next_lease = i64::try_from(next_lease.max(1))
        .map_err(|_| corrupt(format!("next lease id {next_lease} is out of range")))?;

    let mut leases = HashMap::new();
    let lease_table = rtx
        .open_table(LEASES)
        .map_err(redb_err(path, "open leases table"))?;
    for entry in lease_table.iter().map_err(redb_err(path, "read leases"))? {
        let (id, ttl) = entry.map_err(redb_err(path, "read leases"))?;
        let ttl = Duration::from_millis(ttl.value());
        leases.insert(LeaseId(id.value()), (ttl, BTreeSet::new()));
    }
    let kv = rtx
        .open_table(KV)
        .map_err(redb_err(path, "open kv table"))?;
    for entry in kv.iter().map_err(redb_err(path, "read keys"))? {
        let (key, value) = entry.map_err(redb_err(path, "read keys"))?;
        let record = codec::decode_kv(key.value(), value.value()).map_err(corrupt)?;
        let Some(id) = record.lease else { continue };
        match leases.get_mut(&id) {
            Some((_, keys)) => {
                keys.insert(record.key);
            }
            None => {
                tracing::warn!(path = %path.display(), key = %record.key, lease = %id, "key is attached to a lease that does not exist; it will not expire");
            }
        }
    }
    Ok(Loaded {
        revision,
        compacted,
        next_lease,
        leases,
    })
}

/// Maps a redb error of any kind for `path`.
fn redb_err<'a, E: Into<redb::Error>>(
    path: &'a Path,
    context: &'static str,
) -> impl Fn(E) -> StoreError + 'a {
    move |e| StoreError::redb(path, context, e)
}

fn meta_get(
    meta: &impl ReadableTable<&'static str, u64>,
    name: &str,
) -> Result<u64, redb::StorageError> {
    Ok(meta.get(name)?.map_or(0, |g| g.value()))
}
