//! The secrets a Cloudpods cluster needs and nobody writes by hand: keystone's admin
//! (`sysadmin`) password, the administrator of the MariaDB cloudlet runs, and per component the
//! password of its database user and of its keystone service account. Generated once, kept by
//! the control plane (in its store) and handed only to the configs and steps that need them.
//!
//! It owns the record and the generator; it never stores or prints anything (`Debug` redacts).

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// Length of a generated password.
pub const PASSWORD_LEN: usize = 24;

/// Every generated secret of a cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credentials {
    /// keystone's `sysadmin` password (`bootstrap_admin_user_password`).
    pub admin_password: String,
    /// The password of the administrator account of the MariaDB cloudlet runs.
    pub mysql_admin_password: String,
    /// Per component (by its key): its own passwords.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentCredentials>,
}

/// One component's passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentCredentials {
    /// Its database user's.
    pub database: String,
    /// Its keystone service account's.
    pub service: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("components", &self.components.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ComponentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ComponentCredentials(<redacted>)")
    }
}

impl Credentials {
    /// A new set with fresh administrator passwords and no component yet.
    pub fn generate() -> Self {
        Self {
            admin_password: password(),
            mysql_admin_password: password(),
            components: BTreeMap::new(),
        }
    }

    /// Gives every component in `names` its passwords if it has none yet; true when one was
    /// added (the record must then be stored again). Existing passwords never change.
    pub fn ensure<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> bool {
        let mut added = false;
        for name in names {
            if !self.components.contains_key(name) {
                self.components.insert(
                    name.to_owned(),
                    ComponentCredentials {
                        database: password(),
                        service: password(),
                    },
                );
                added = true;
            }
        }
        added
    }

    /// Component `name`'s passwords (after [`Credentials::ensure`]).
    pub fn component(&self, name: &str) -> Option<&ComponentCredentials> {
        self.components.get(name)
    }
}

/// A random password of [`PASSWORD_LEN`] letters and digits, with at least one digit, one
/// lowercase and one uppercase letter (Cloudpods' password checks may ask for each), safe in a
/// URL, a YAML scalar and an SQL string literal without quoting.
pub fn password() -> String {
    const DIGITS: &[u8] = b"23456789";
    const LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let pick = |rng: &mut rand::rngs::ThreadRng, set: &[u8]| {
        char::from(set[rng.random_range(0..set.len())])
    };
    loop {
        // First a letter: some parsers read a leading digit string as a number.
        let mut out = String::with_capacity(PASSWORD_LEN);
        out.push(pick(&mut rng, LOWER));
        while out.len() < PASSWORD_LEN {
            let set = match rng.random_range(0..3) {
                0 => DIGITS,
                1 => LOWER,
                _ => UPPER,
            };
            out.push(pick(&mut rng, set));
        }
        let has = |set: &[u8]| out.bytes().any(|b| set.contains(&b));
        if has(DIGITS) && has(LOWER) && has(UPPER) {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_mixed_and_different() {
        let a = password();
        let b = password();
        assert_ne!(a, b);
        for p in [&a, &b] {
            assert_eq!(p.len(), PASSWORD_LEN);
            assert!(p.bytes().all(|c| c.is_ascii_alphanumeric()), "{p}");
            assert!(p.bytes().any(|c| c.is_ascii_digit()));
            assert!(p.bytes().any(|c| c.is_ascii_uppercase()));
            assert!(crate::mysql::check_password(p).is_ok());
        }
    }

    #[test]
    fn ensure_adds_only_what_is_missing_and_never_changes_a_password() {
        let mut c = Credentials::generate();
        assert!(c.ensure(["keystone", "region"]));
        let region = c.component("region").cloned();
        assert!(!c.ensure(["region"]));
        assert!(c.ensure(["region", "scheduler"]));
        assert_eq!(c.component("region").cloned(), region);
        assert!(!format!("{c:?}").contains(&c.admin_password));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Credentials>(&json).unwrap(), c);
    }
}
