//! Looking up the user a service runs as, for the shim: the ids it takes and the `HOME`, `USER`
//! and `LOGNAME` it gets unless its spec sets them.
//!
//! The server does this, not the shim: the lookup goes through glibc's NSS (LDAP, sssd), which
//! would make every shim carry a dynamic loader, and it is done at each start, so a user created
//! after the manifest was applied (by a oneshot step) is found. It never changes a process's ids.

use std::collections::BTreeMap;
use std::ffi::CString;

use nix::unistd::{Uid, User, getgrouplist};

use super::proto::Identity;
use crate::SupervisorError;

/// Looks up `user` (a name or a numeric uid) and fills `HOME`, `USER` and `LOGNAME` in `env` where
/// they are not set. Blocks on the user database: call from a blocking thread.
pub fn resolve(
    user: &str,
    env: &mut BTreeMap<String, String>,
) -> Result<Identity, SupervisorError> {
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    }
    .map_err(|e| SupervisorError::Spawn(format!("look up user {user:?}: {e}")))?
    .ok_or_else(|| SupervisorError::Spawn(format!("user {user:?} does not exist")))?;
    let cname = CString::new(found.name.clone())
        .map_err(|_| SupervisorError::Spawn(format!("user {user:?}: bad name")))?;
    let groups = getgrouplist(&cname, found.gid)
        .map_err(|e| SupervisorError::Spawn(format!("groups of user {user:?}: {e}")))?;
    env.entry("HOME".into())
        .or_insert_with(|| found.dir.display().to_string());
    env.entry("USER".into())
        .or_insert_with(|| found.name.clone());
    env.entry("LOGNAME".into())
        .or_insert_with(|| found.name.clone());
    Ok(Identity {
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
        groups: groups.into_iter().map(|g| g.as_raw()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_or_a_name_gives_ids_and_fills_the_identity_env() {
        let mut env = BTreeMap::new();
        let root = resolve("0", &mut env).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{root:?}");
        assert_eq!(env.get("USER").map(String::as_str), Some("root"));
        assert_eq!(env.get("LOGNAME").map(String::as_str), Some("root"));

        let mut env = BTreeMap::from([("HOME".to_owned(), "/srv".to_owned())]);
        let nobody = resolve("nobody", &mut env).unwrap();
        assert_ne!(nobody.uid, 0);
        assert_eq!(env["HOME"], "/srv", "what the spec sets stays");
    }

    #[test]
    fn an_unknown_user_is_named_in_the_error() {
        let err = resolve("no-such-user-cloudlet", &mut BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"no-such-user-cloudlet\" does not exist"),
            "{err}"
        );
    }
}
