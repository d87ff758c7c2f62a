//! Join tokens in the store (`/tokens/<id>`): made by an operator, listed, revoked, and redeemed
//! by a joining agent.
//!
//! It owns the rules of redeeming: the token must be for this server's CA, known, unexpired and
//! carry the right secret (compared in constant time); each join counts one use, written with a
//! compare-and-swap so concurrent joins never lose a count. Only the secret's hash is stored. No
//! error message, log line or `Debug` output of this module ever contains a secret: a refusal
//! names the token by its public id only.

use std::time::Duration;

use cloudlet_pki::{Token, hash_secret};
use cloudlet_spec::NodeRole;
use cloudlet_store::{Compare, CompareOp, Op, Store, Txn};
use jiff::{SignedDuration, Timestamp};

use crate::ClusterError;
use crate::records::{TOKENS, TokenRecord, decode, encode, token_key};

/// How many times a write is retried when another writer changed the record first (or, for
/// [`create`], took the same random id).
const ATTEMPTS: usize = 8;

/// Makes a token for the CA with pin `pin` that lets nodes join as `role` for `ttl` from now.
///
/// Returns the token (its `Display` is the full text, secret included: show it once to the
/// operator who asked, never log it) and the record stored at `/tokens/<id>`.
pub async fn create<S: Store>(
    store: &S,
    pin: &str,
    role: NodeRole,
    ttl: Duration,
    created_by: &str,
    description: Option<String>,
) -> Result<(Token, TokenRecord), ClusterError> {
    let created_at = Timestamp::now();
    let expires_at = SignedDuration::try_from(ttl)
        .ok()
        .and_then(|ttl| created_at.checked_add(ttl).ok())
        .ok_or_else(|| ClusterError::Invalid(format!("token lifetime {ttl:?} is too long")))?;
    for _ in 0..ATTEMPTS {
        let token = Token::generate(pin)?;
        let record = TokenRecord {
            id: token.id().to_owned(),
            secret_hash: hash_secret(token.secret()),
            role,
            created_at,
            expires_at,
            created_by: created_by.to_owned(),
            description: description.clone(),
            uses: 0,
        };
        let key = token_key(&record.id);
        let txn = Txn::guarded(
            vec![Compare::absent(key.as_str())],
            vec![Op::put(key.as_str(), encode(&key, &record)?)],
        );
        // A random id already taken (36^6 ids): draw another token.
        if store.txn(txn).await?.succeeded {
            return Ok((token, record));
        }
    }
    Err(ClusterError::Conflict(format!(
        "no free token id after {ATTEMPTS} attempts; try again"
    )))
}

/// Every token, oldest first.
pub async fn list<S: Store>(store: &S) -> Result<Vec<TokenRecord>, ClusterError> {
    let (kvs, _) = store.list(TOKENS).await?;
    let mut records = kvs
        .iter()
        .map(|kv| decode::<TokenRecord>(&kv.key, &kv.value))
        .collect::<Result<Vec<_>, _>>()?;
    records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(records)
}

/// Deletes the token `id`: no node can join with it any more (nodes that joined stay).
pub async fn revoke<S: Store>(store: &S, id: &str) -> Result<(), ClusterError> {
    let (_, existed) = store.delete(&token_key(id)).await?;
    if existed {
        Ok(())
    } else {
        Err(ClusterError::NotFound(format!("token {id} does not exist")))
    }
}

/// Checks a join token presented at `now` to the server whose CAs have pins `pins`, counts one use,
/// and returns the record (with the new count): the caller then certifies the node with the
/// record's role.
///
/// Refusals ([`ClusterError::Refused`]) say what is wrong: a malformed token, a token for another
/// CA, an unknown or revoked id, an expired token, or a wrong secret.
pub async fn redeem<S: Store>(
    store: &S,
    token: &str,
    pins: &[String],
    now: Timestamp,
) -> Result<TokenRecord, ClusterError> {
    let token = Token::parse(token).map_err(|e| ClusterError::Refused(e.to_string()))?;
    if !pins.iter().any(|p| p == token.ca_hash()) {
        let short = token.ca_hash().get(..12).unwrap_or(token.ca_hash());
        return Err(ClusterError::Refused(format!(
            "the token was made for another CA ({short}…); make a new token with \
             `cloudlet ctl token create`"
        )));
    }
    let id = token.id();
    let key = token_key(id);
    for _ in 0..ATTEMPTS {
        let Some(kv) = store.get(&key).await? else {
            return Err(ClusterError::Refused(format!(
                "token {id} is unknown or was revoked"
            )));
        };
        let mut record: TokenRecord = decode(&key, &kv.value)?;
        if now >= record.expires_at {
            return Err(ClusterError::Refused(format!(
                "token {id} expired at {}",
                record.expires_at
            )));
        }
        if !token.matches(&record.secret_hash) {
            return Err(ClusterError::Refused(format!("token {id}: wrong secret")));
        }
        record.uses = record.uses.saturating_add(1);
        let txn = Txn::guarded(
            vec![Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                kv.mod_revision,
            )],
            vec![Op::put(key.as_str(), encode(&key, &record)?)],
        );
        if store.txn(txn).await?.succeeded {
            return Ok(record);
        }
        // Another join (or a revoke) changed the record since we read it: read it again.
    }
    Err(ClusterError::Conflict(format!(
        "token {id} is being redeemed by too many joins at once; try again"
    )))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cloudlet_pki::Ca;
    use cloudlet_store::{RedbOptions, RedbStore};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    struct Fixture {
        _dir: tempfile::TempDir,
        store: RedbStore,
        pin: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store =
            RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default()).unwrap();
        let pin = Ca::create().unwrap().pin();
        Fixture {
            _dir: dir,
            store,
            pin,
        }
    }

    async fn refusal(f: &Fixture, token: &str, pin: &str, now: Timestamp) -> String {
        match redeem(&f.store, token, &[pin.to_owned()], now).await {
            Err(ClusterError::Refused(msg)) => msg,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn create_then_redeem_counts_one_use_and_stores_only_the_hash() {
        let f = fixture();
        let (token, record) = create(
            &f.store,
            &f.pin,
            NodeRole::Compute,
            HOUR,
            "admin",
            Some("rack 4".into()),
        )
        .await
        .unwrap();
        assert_eq!(record.id, token.id());
        assert_eq!(record.uses, 0);
        assert_eq!(record.role, NodeRole::Compute);
        assert_eq!(record.description.as_deref(), Some("rack 4"));
        assert_eq!(
            record
                .expires_at
                .duration_since(record.created_at)
                .as_secs(),
            3600
        );
        let stored = f.store.get(&token_key(token.id())).await.unwrap().unwrap();
        let stored_text = String::from_utf8(stored.value).unwrap();
        assert!(!stored_text.contains(token.secret()), "{stored_text}");
        assert!(stored_text.contains(&hash_secret(token.secret())));

        let redeemed = redeem(
            &f.store,
            &token.to_string(),
            std::slice::from_ref(&f.pin),
            Timestamp::now(),
        )
        .await
        .unwrap();
        assert_eq!(redeemed.uses, 1);
        assert_eq!(redeemed.role, NodeRole::Compute);
        let again = redeem(
            &f.store,
            &token.to_string(),
            std::slice::from_ref(&f.pin),
            Timestamp::now(),
        )
        .await
        .unwrap();
        assert_eq!(again.uses, 2);
        assert_eq!(list(&f.store).await.unwrap(), vec![again]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_redeems_lose_no_use() {
        let f = Arc::new(fixture());
        let (token, _) = create(&f.store, &f.pin, NodeRole::Compute, HOUR, "admin", None)
            .await
            .unwrap();
        let text = token.to_string();
        let joins: Vec<_> = (0..5)
            .map(|_| {
                let (f, text) = (Arc::clone(&f), text.clone());
                tokio::spawn(async move {
                    redeem(
                        &f.store,
                        &text,
                        std::slice::from_ref(&f.pin),
                        Timestamp::now(),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut seen = Vec::new();
        for join in joins {
            seen.push(join.await.unwrap().uses);
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        assert_eq!(list(&f.store).await.unwrap()[0].uses, 5);
    }

    #[tokio::test]
    async fn every_refusal_names_what_is_wrong_and_never_the_secret() {
        let f = fixture();
        let (token, record) = create(&f.store, &f.pin, NodeRole::Control, HOUR, "admin", None)
            .await
            .unwrap();
        let id = token.id();
        let secret = token.secret();
        let now = Timestamp::now();
        let mut messages = Vec::new();

        // Malformed.
        let msg = refusal(&f, &format!("K10{}::{id}", f.pin), &f.pin, now).await;
        assert!(msg.contains("invalid join token"), "{msg}");
        messages.push(msg);

        // Wrong secret (same length, same alphabet).
        let wrong: String = secret
            .chars()
            .map(|c| if c == 'a' { 'b' } else { 'a' })
            .collect();
        let forged = format!("K10{}::{id}.{wrong}", f.pin);
        let msg = refusal(&f, &forged, &f.pin, now).await;
        assert_eq!(msg, format!("token {id}: wrong secret"));
        messages.push(msg);

        // Another CA's token: refused before the store is even asked.
        let other_pin = Ca::create().unwrap().pin();
        let msg = refusal(&f, &token.to_string(), &other_pin, now).await;
        assert!(
            msg.starts_with("the token was made for another CA ("),
            "{msg}"
        );
        assert!(msg.contains(&f.pin[..12]), "{msg}");
        assert!(msg.contains("cloudlet ctl token create"), "{msg}");
        messages.push(msg);

        // Expired: the same token presented an hour later.
        let later = record.expires_at;
        let msg = refusal(&f, &token.to_string(), &f.pin, later).await;
        assert_eq!(msg, format!("token {id} expired at {}", record.expires_at));
        messages.push(msg);

        // Unknown id.
        let unknown_id = if id == "zzzzzz" { "yyyyyy" } else { "zzzzzz" };
        let unknown = format!("K10{}::{unknown_id}.{secret}", f.pin);
        let msg = refusal(&f, &unknown, &f.pin, now).await;
        assert_eq!(msg, format!("token {unknown_id} is unknown or was revoked"));
        messages.push(msg);

        // None of them counted a use.
        assert_eq!(list(&f.store).await.unwrap()[0].uses, 0);

        // Revoked.
        revoke(&f.store, id).await.unwrap();
        let msg = refusal(&f, &token.to_string(), &f.pin, now).await;
        assert_eq!(msg, format!("token {id} is unknown or was revoked"));
        messages.push(msg);

        for msg in &messages {
            assert!(!msg.contains(secret), "{msg}");
        }
        assert!(!format!("{record:?}").contains(secret));
        assert!(!format!("{token:?}").contains(secret));
    }

    #[tokio::test]
    async fn a_zero_ttl_token_is_expired_at_once() {
        let f = fixture();
        let (token, record) = create(
            &f.store,
            &f.pin,
            NodeRole::Compute,
            Duration::ZERO,
            "admin",
            None,
        )
        .await
        .unwrap();
        assert_eq!(record.expires_at, record.created_at);
        let msg = refusal(&f, &token.to_string(), &f.pin, Timestamp::now()).await;
        assert!(msg.contains("expired at"), "{msg}");
    }

    #[tokio::test]
    async fn revoke_unknown_is_not_found_and_list_is_oldest_first() {
        let f = fixture();
        let err = revoke(&f.store, "abc123").await.unwrap_err();
        assert!(
            matches!(&err, ClusterError::NotFound(m) if m.contains("abc123")),
            "{err}"
        );

        let mut ids = Vec::new();
        for i in 0..3 {
            let (token, _) = create(
                &f.store,
                &f.pin,
                NodeRole::Compute,
                HOUR,
                "admin",
                Some(format!("t{i}")),
            )
            .await
            .unwrap();
            ids.push(token.id().to_owned());
        }
        // Ids are random, so key order is not creation order: the list is sorted by time.
        let listed: Vec<_> = list(&f.store)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, ids);

        revoke(&f.store, &ids[1]).await.unwrap();
        let left: Vec<_> = list(&f.store)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(!left.contains(&ids[1]));
    }

    #[tokio::test]
    async fn create_refuses_a_bad_pin_and_an_endless_ttl() {
        let f = fixture();
        assert!(
            create(&f.store, "nope", NodeRole::Compute, HOUR, "admin", None)
                .await
                .is_err()
        );
        let err = create(
            &f.store,
            &f.pin,
            NodeRole::Compute,
            Duration::MAX,
            "admin",
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ClusterError::Invalid(_)), "{err}");
        assert!(list(&f.store).await.unwrap().is_empty());
    }
}
