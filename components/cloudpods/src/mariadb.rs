//! The MariaDB server cloudlet runs when the cluster YAML names no database of its own
//! (`spec.mysql.host` unset): its `my.cnf`, the init file that keeps cloudlet's administrator
//! account in step with the password cloudlet keeps, and the preparation of its directories
//! (the system tables installed once, the runtime directory owned by the server's user).
//!
//! It never starts the server (the supervisor does, as the `mysql` service) and never touches a
//! data directory that already holds a database beyond giving it to the server's user.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::CloudpodsError;

/// The administrator account cloudlet makes in the MariaDB it runs.
pub const ADMIN_USER: &str = "cloudlet";
/// How long installing the system tables may take.
const INSTALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// The file in the data directory that says the system tables were installed.
const INSTALLED_MARK: &str = ".cloudlet-installed";

/// Where the server keeps what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The runtime directory (socket, pid file).
    pub run_dir: PathBuf,
    /// The TCP port.
    pub port: u16,
    /// The address it listens on.
    pub bind: String,
    /// The system user it runs as.
    pub user: String,
}

impl Layout {
    /// The server's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("mysqld.sock")
    }
}

/// The server's `my.cnf`: the layout, utf8mb4, no name resolution, the init file, then the
/// operator's `extra` options (`spec.components.mysql.config`) in key order; an option set in
/// `extra` wins, as the later one does in an option file.
pub fn config(layout: &Layout, init_file: &Path, extra: &[(String, Value)]) -> String {
    let mut out = format!(
        "# Written by cloudlet: the MariaDB of this Cloudpods cluster.\n\
         [mysqld]\n\
         user = {user}\n\
         datadir = {data}\n\
         socket = {socket}\n\
         pid-file = {run}/mysqld.pid\n\
         port = {port}\n\
         bind-address = {bind}\n\
         init-file = {init}\n\
         character-set-server = utf8mb4\n\
         collation-server = utf8mb4_unicode_ci\n\
         skip-name-resolve\n\
         max_connections = 1000\n",
        user = layout.user,
        data = layout.data_dir.display(),
        socket = layout.socket().display(),
        run = layout.run_dir.display(),
        port = layout.port,
        bind = layout.bind,
        init = init_file.display(),
    );
    for (key, value) in extra {
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        out.push_str(&format!("{key} = {value}\n"));
    }
    out.push_str(&format!(
        "\n[client]\nsocket = {}\n",
        layout.socket().display()
    ));
    out
}

/// The statements run at every start of the server: cloudlet's administrator account exists,
/// with `password`, and may do anything (it creates every component's database and user).
pub fn init_sql(password: &str) -> Result<String, CloudpodsError> {
    crate::mysql::check_password(password)
        .map_err(|why| CloudpodsError::Invalid(format!("the MariaDB administrator: {why}")))?;
    Ok(format!(
        "CREATE USER IF NOT EXISTS '{ADMIN_USER}'@'%' IDENTIFIED BY '{password}';\n\
         ALTER USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{password}';\n\
         GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;\n\
         FLUSH PRIVILEGES;\n"
    ))
}

/// Makes the directories ready for the server: the data directory exists, holds the system
/// tables (installed with `install_db`, `mariadb-install-db`, the first time) and belongs to
/// the server's user, and so does the runtime directory (gone after a reboot, made again).
/// Returns what it did, one line each.
pub fn prepare(layout: &Layout, install_db: &Path) -> Result<Vec<String>, CloudpodsError> {
    let mut done = Vec::new();
    let user = nix::unistd::User::from_name(&layout.user)
        .map_err(|e| CloudpodsError::Invalid(format!("user {:?}: {e}", layout.user)))?
        .ok_or_else(|| {
            CloudpodsError::Invalid(format!(
                "no user {:?} on this node: install MariaDB (apt-get install mariadb-server), \
                 which creates it",
                layout.user
            ))
        })?;
    for dir in [&layout.data_dir, &layout.run_dir] {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| CloudpodsError::io("create", dir, e))?;
            done.push(format!("created {}", dir.display()));
        }
        std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(|e| CloudpodsError::io("chown", dir, e))?;
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&layout.data_dir, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| CloudpodsError::io("chmod", &layout.data_dir, e))?;
    std::fs::set_permissions(&layout.run_dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| CloudpodsError::io("chmod", &layout.run_dir, e))?;
    let mark = layout.data_dir.join(INSTALLED_MARK);
    if mark.exists() {
        return Ok(done);
    }
    // The system tables: the installer refuses nothing it already made, so a run cut short
    // is finished by running it again.
    let mut command = std::process::Command::new(install_db);
    command
        .arg(format!("--user={}", layout.user))
        .arg(format!("--datadir={}", layout.data_dir.display()))
        .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
    let tool = || install_db.display().to_string();
    let ran = crate::tool::run(&mut command, b"", INSTALL_TIMEOUT)
        .map_err(|e| CloudpodsError::Tool {
            tool: tool(),
            detail: match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "not found: install MariaDB (apt-get install mariadb-server)".to_owned()
                }
                _ => format!("cannot run it: {e}"),
            },
        })?
        .ok_or_else(|| CloudpodsError::Tool {
            tool: tool(),
            detail: format!("did not finish within {INSTALL_TIMEOUT:?}"),
        })?;
    if !ran.status.success() {
        let text = ran.text();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        return Err(CloudpodsError::Tool {
            tool: tool(),
            detail: format!(
                "{} for {}: {}",
                ran.status,
                layout.data_dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        });
    }
    std::fs::write(&mark, "").map_err(|e| CloudpodsError::io("write", &mark, e))?;
    done.push(format!(
        "installed the system tables in {}",
        layout.data_dir.display()
    ));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_puts_everything_under_the_layout_and_extra_options_last() {
        let layout = Layout {
            data_dir: "/var/lib/cloudpods/mysql".into(),
            run_dir: "/run/mysqld".into(),
            port: 3306,
            bind: "127.0.0.1".into(),
            user: "mysql".into(),
        };
        let text = config(
            &layout,
            Path::new("/etc/yunion/mysql/init.sql"),
            &[("max_connections".into(), Value::from(2000))],
        );
        assert!(text.contains("datadir = /var/lib/cloudpods/mysql\n"));
        assert!(text.contains("socket = /run/mysqld/mysqld.sock\n"));
        assert!(text.contains("init-file = /etc/yunion/mysql/init.sql\n"));
        assert!(text.contains("bind-address = 127.0.0.1\n"));
        let (default, own) = (
            text.find("max_connections = 1000").unwrap(),
            text.find("max_connections = 2000").unwrap(),
        );
        assert!(default < own, "the operator's option comes later and wins");
        let sql = init_sql("Abc123def").unwrap();
        assert!(sql.contains("CREATE USER IF NOT EXISTS 'cloudlet'@'%' IDENTIFIED BY 'Abc123def'"));
        assert!(init_sql("a'b").is_err());
    }
}
