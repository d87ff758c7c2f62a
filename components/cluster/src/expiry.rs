//! Which certificates are close to an expiry that renewal did not prevent: the rule behind the
//! `CertificateExpiring` warning.
//!
//! A renewed certificate never gets close to its expiry: renewal happens when a third of its life
//! is left. So a certificate with less than `min(30 days, lifetime / 3)` left (a tenth of slack
//! for the moment of renewal itself) is one renewal could not fix, and worth an operator's
//! attention. A CA is not renewed by itself (that is `ctl ca rotate`), so a CA warns 30 days
//! ahead. This module only decides; it never reads certificates or sends events.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

/// How long before an expiry a CA warns.
pub const CA_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A certificate to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The node it belongs to (the server's for its own).
    pub node: String,
    /// What it is: `ca`, `server`, `admin`, `node certificate`.
    pub what: String,
    /// When it expires.
    pub not_after: Timestamp,
    /// How long such certificates live (renewed at two thirds); `None` for a CA.
    pub lifetime: Option<Duration>,
}

/// A warning to give once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Identifies the certificate (node, what, expiry), so each is warned about once.
    pub key: String,
    /// The node it belongs to.
    pub node: String,
    /// What to tell the operator.
    pub message: String,
}

/// The items close to an expiry renewal did not prevent, at `now`.
pub fn expiring(now: Timestamp, items: &[Item]) -> Vec<Warning> {
    items
        .iter()
        .filter_map(|item| {
            let threshold = match item.lifetime {
                None => CA_WARNING,
                Some(lifetime) => CA_WARNING.min(lifetime / 3).mul_f64(0.9),
            };
            let left = item.not_after.duration_since(now);
            let left = if left.is_positive() {
                left.unsigned_abs()
            } else {
                Duration::ZERO
            };
            if left >= threshold {
                return None;
            }
            let fix = if item.lifetime.is_none() {
                "rotate it with `cloudlet ctl ca rotate`"
            } else if item.what == "node certificate" {
                "its agent could not renew it: is the node reachable? (`cloudlet ctl get nodes`)"
            } else {
                "the server could not renew it: see the server's log"
            };
            let message = if left.is_zero() {
                format!(
                    "the {} of node {} expired at {}: {fix}",
                    item.what, item.node, item.not_after
                )
            } else {
                format!(
                    "the {} of node {} expires at {} (in {}s): {fix}",
                    item.what,
                    item.node,
                    item.not_after,
                    left.as_secs()
                )
            };
            Some(Warning {
                key: format!("{}/{}/{}", item.node, item.what, item.not_after),
                node: item.node.clone(),
                message,
            })
        })
        .collect()
}

/// A certificate file of a data dir, as `check-config` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    /// The file (and, for a bundle, which certificate in it).
    pub what: String,
    /// When it expires, or why it could not be read.
    pub not_after: Result<Timestamp, String>,
    /// Whether it is a CA (not renewed by itself).
    pub ca: bool,
}

/// Every certificate a server's or an agent's data dir holds: the CA bundle, the server's or the
/// node's certificate, and admin.conf's. Missing files are left out (a data dir of a node that
/// has not joined has none).
pub fn on_disk(data_dir: &Path) -> Vec<OnDisk> {
    let pki = data_dir.join(crate::pki::PKI_DIR);
    let mut out = Vec::new();
    let files = [
        ("pki/ca.crt", pki.join("ca.crt"), true),
        (
            "pki/ca-previous.crt",
            pki.join(crate::pki::PREVIOUS_CA_CERT_FILE),
            true,
        ),
        (
            "pki/server.crt",
            pki.join(crate::pki::SERVER_CERT_FILE),
            false,
        ),
        ("pki/node.crt", pki.join("node.crt"), false),
    ];
    for (name, path, ca) in files {
        let Ok(pem) = std::fs::read_to_string(&path) else {
            continue;
        };
        out.extend(certificates(name, &pem, ca));
    }
    let admin = data_dir.join(crate::pki::ADMIN_CONF_FILE);
    if admin.exists() {
        match cloudlet_api::AdminConfig::load(&admin) {
            Ok(conf) => out.extend(certificates("admin.conf", &conf.cert, false)),
            Err(e) => out.push(OnDisk {
                what: "admin.conf".into(),
                not_after: Err(e.to_string()),
                ca: false,
            }),
        }
    }
    out
}

/// The leaf (or, for a CA bundle, every certificate) of a PEM text.
fn certificates(name: &str, pem: &str, ca: bool) -> Vec<OnDisk> {
    let certs = match cloudlet_pki::certs_from_pem(pem) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            return vec![OnDisk {
                what: name.into(),
                not_after: Err("no certificate in the file".into()),
                ca,
            }];
        }
        Err(e) => {
            return vec![OnDisk {
                what: name.into(),
                not_after: Err(e.to_string()),
                ca,
            }];
        }
    };
    let take = if ca { certs.len() } else { 1 };
    certs
        .iter()
        .take(take)
        .enumerate()
        .map(|(i, der)| OnDisk {
            what: if take > 1 {
                format!("{name} #{}", i + 1)
            } else {
                name.to_owned()
            },
            not_after: cloudlet_pki::validity(der)
                .map(|(_, after)| after)
                .map_err(|e| e.to_string()),
            ca,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    fn item(what: &str, left_s: i64, lifetime: Option<u64>) -> Item {
        Item {
            node: "n1".into(),
            what: what.into(),
            not_after: Timestamp::now() + jiff::SignedDuration::from_secs(left_s),
            lifetime: lifetime.map(Duration::from_secs),
        }
    }

    #[test]
    fn only_what_renewal_did_not_prevent_warns() {
        let now = Timestamp::now();
        let day = i64::try_from(DAY).unwrap();
        let quiet = [
            // A 90-day certificate renewed on time keeps more than 27 days.
            item("node certificate", 60 * day, Some(90 * DAY)),
            item("node certificate", 31 * day, Some(90 * DAY)),
            // A 60 s certificate with 30 s left is just before its renewal.
            item("server", 30, Some(60)),
            item("ca", 3650 * day, None),
            item("ca", 31 * day, None),
        ];
        assert!(
            expiring(now, &quiet).is_empty(),
            "{:?}",
            expiring(now, &quiet)
        );
        let loud = [
            item("node certificate", 20 * day, Some(90 * DAY)),
            item("server", 10, Some(60)),
            item("ca", 29 * day, None),
            item("admin", -5, Some(60)),
        ];
        let warnings = expiring(now, &loud);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].message.contains("its agent could not renew it"));
        assert!(warnings[2].message.contains("ctl ca rotate"));
        assert!(warnings[3].message.contains("expired at"));
        // One key per certificate, so each is warned about once.
        let keys: std::collections::BTreeSet<_> = warnings.iter().map(|w| &w.key).collect();
        assert_eq!(keys.len(), 4);
    }
}
