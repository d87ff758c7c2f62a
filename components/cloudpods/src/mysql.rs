//! The database side of a component: its database and its user, created idempotently through
//! an administrator account, with the MariaDB/MySQL command-line client (`mariadb`).
//!
//! Why the client and not a crate: the MySQL client crates (`mysql_async` 0.36, even with its
//! minimal features) bring regex, ICU (through `idna`), flate2 and num-bigint into the one
//! `cloudlet` binary, whose size is its memory on every node (ARCHITECTURE.md); a bootstrap step
//! runs a handful of statements once. It runs the distribution's client, as `netovs` runs
//! `ovs-ofctl`. The administrator's password goes to the client in a 0600 option file, never on
//! its command line.
//!
//! It owns the SQL of "a database and its user"; it never chooses names or passwords (the plan
//! does) and never drops anything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::CloudpodsError;
use crate::tool::PrivateFile;

/// How long one client call may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// A MySQL or MariaDB server and the account that administers it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MysqlServer {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The administrator (may create databases and users, and grant).
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for MysqlServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl MysqlServer {
    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A component's database and the user it connects as.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Database {
    /// The database, e.g. `keystone`.
    pub name: String,
    /// The user, e.g. `keystone`.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A database or user name that can be written into a statement unquoted-safe: lowercase
/// letters, digits and `_`, starting with a letter, at most 32 characters (MySQL's user limit).
pub fn check_identifier(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid database or user name {name:?}: expected up to 32 lowercase letters, digits \
             and '_', starting with a letter"
        ))
    }
}

/// A password that can be written into a statement's string literal: printable ASCII without
/// quotes or backslashes, 1 to 128 characters.
pub fn check_password(password: &str) -> Result<(), String> {
    let valid = (1..=128).contains(&password.len())
        && password
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"'\"\\`".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(
            "a database password must be 1 to 128 printable ASCII characters without quotes, \
             backquotes or backslashes"
                .to_owned(),
        )
    }
}

/// The statements that make `db` exist with its user, whatever exists already: the database
/// (utf8, as Cloudpods' connections ask), the user with this password (set again if the user
/// existed), and every privilege on the database.
pub fn ensure_database_sql(db: &Database) -> Result<String, CloudpodsError> {
    check_identifier(&db.name).map_err(CloudpodsError::Invalid)?;
    check_identifier(&db.user).map_err(CloudpodsError::Invalid)?;
    check_password(&db.password)
        .map_err(|why| CloudpodsError::Invalid(format!("database {}: {why}", db.name)))?;
    let (name, user, password) = (&db.name, &db.user, &db.password);
    let mut sql = format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n"
    );
    // Any host, and loopback by address as the operator makes them: on a server that resolves
    // names, an anonymous local account would otherwise win over `'user'@'%'` for a
    // connection from the server's own machine.
    for host in ["%", "127.0.0.1", "::1"] {
        sql.push_str(&format!(
            "CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{password}';\n\
             ALTER USER '{user}'@'{host}' IDENTIFIED BY '{password}';\n\
             GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'{host}';\n"
        ));
    }
    sql.push_str("FLUSH PRIVILEGES;\n");
    Ok(sql)
}

/// The `mariadb` client, pointed at one server as its administrator.
#[derive(Debug)]
pub struct MysqlClient {
    server: MysqlServer,
    program: PathBuf,
}

impl MysqlClient {
    /// A client of `server` that runs `program` (`mariadb`, found on PATH, unless a path).
    pub fn new(server: MysqlServer, program: impl Into<PathBuf>) -> Self {
        Self {
            server,
            program: program.into(),
        }
    }

    /// Makes `db` and its user exist (see [`ensure_database_sql`]).
    pub async fn ensure_database(&self, db: &Database) -> Result<(), CloudpodsError> {
        let sql = ensure_database_sql(db)?;
        self.execute(
            &format!("create database {} and user {}", db.name, db.user),
            &sql,
        )
        .await
        .map(drop)
    }

    /// Whether the server accepts this account's queries (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), CloudpodsError> {
        self.execute("SELECT 1", "SELECT 1;\n").await.map(drop)
    }

    /// Runs `sql` (statements separated by `;`) in one client session; `what` names it in
    /// errors. Returns the client's standard output.
    pub async fn execute(&self, what: &str, sql: &str) -> Result<String, CloudpodsError> {
        let (server, program, what, sql) = (
            self.server.clone(),
            self.program.clone(),
            what.to_owned(),
            sql.to_owned(),
        );
        tokio::task::spawn_blocking(move || execute(&server, &program, &what, &sql))
            .await
            .map_err(|e| CloudpodsError::Tool {
                tool: "mariadb".to_owned(),
                detail: format!("the client's thread failed: {e}"),
            })?
    }
}

/// [`MysqlClient::execute`], blocking.
fn execute(
    server: &MysqlServer,
    program: &Path,
    what: &str,
    sql: &str,
) -> Result<String, CloudpodsError> {
    let fail = |detail: String| CloudpodsError::Mysql {
        server: server.address(),
        what: what.to_owned(),
        detail,
    };
    // The account in an option file only this user can read, removed when `options` drops.
    let options = PrivateFile::new(
        &std::env::temp_dir(),
        ".cloudlet-mysql-",
        option_file(server).as_bytes(),
    )
    .map_err(|e| fail(format!("cannot write the client's option file: {e}")))?;
    let mut defaults = std::ffi::OsString::from("--defaults-extra-file=");
    defaults.push(options.path());
    let mut command = std::process::Command::new(program);
    command
        .arg(defaults)
        .args(["--batch", "--skip-column-names", "--connect-timeout=10"]);
    let ran = match crate::tool::run(&mut command, sql.as_bytes(), CLIENT_TIMEOUT) {
        Ok(Some(ran)) => ran,
        Ok(None) => return Err(fail(format!("no answer within {CLIENT_TIMEOUT:?}"))),
        Err(e) => {
            return Err(CloudpodsError::Tool {
                tool: program.display().to_string(),
                detail: match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "not found: install the MariaDB client (apt-get install mariadb-client)"
                            .to_owned()
                    }
                    _ => format!("cannot run it: {e}"),
                },
            });
        }
    };
    if ran.status.success() {
        Ok(String::from_utf8_lossy(&ran.stdout).trim().to_owned())
    } else {
        Err(fail(format!("{} ({})", ran.text(), ran.status)))
    }
}

/// A `[client]` option file for `server`'s account; values quoted, `\` and `"` escaped.
fn option_file(server: &MysqlServer) -> String {
    let quote = |v: &str| {
        let mut out = String::with_capacity(v.len() + 2);
        out.push('"');
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    format!(
        "[client]\nhost={}\nport={}\nuser={}\npassword={}\nprotocol=TCP\n",
        quote(&server.host),
        server.port,
        quote(&server.user),
        quote(&server.password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_are_idempotent_and_refuse_what_could_break_out_of_them() {
        let db = Database {
            name: "keystone".into(),
            user: "keystone".into(),
            password: "s3cretPassw0rd".into(),
        };
        let sql = ensure_database_sql(&db).unwrap();
        assert!(sql.contains("CREATE DATABASE IF NOT EXISTS `keystone`"));
        assert!(
            sql.contains("CREATE USER IF NOT EXISTS 'keystone'@'%' IDENTIFIED BY 's3cretPassw0rd'")
        );
        assert!(sql.contains("ALTER USER 'keystone'@'%' IDENTIFIED BY 's3cretPassw0rd'"));
        assert!(sql.contains("GRANT ALL PRIVILEGES ON `keystone`.* TO 'keystone'@'%'"));
        assert!(sql.contains("CREATE USER IF NOT EXISTS 'keystone'@'::1' IDENTIFIED BY"));
        for (name, user, password) in [
            ("key`stone", "keystone", "pw"),
            ("keystone", "a'b", "pw"),
            ("keystone", "keystone", "x'; DROP DATABASE mysql; --"),
            ("keystone", "keystone", ""),
            ("Keystone", "keystone", "pw"),
        ] {
            let bad = Database {
                name: name.into(),
                user: user.into(),
                password: password.into(),
            };
            assert!(
                ensure_database_sql(&bad).is_err(),
                "{name} {user} {password}"
            );
        }
    }

    #[test]
    fn the_option_file_quotes_what_the_operator_wrote() {
        let server = MysqlServer {
            host: "db.example".into(),
            port: 3307,
            user: "root".into(),
            password: "a\"b\\c d".into(),
        };
        assert_eq!(
            option_file(&server),
            "[client]\nhost=\"db.example\"\nport=3307\nuser=\"root\"\npassword=\"a\\\"b\\\\c d\"\nprotocol=TCP\n"
        );
        assert!(
            !format!("{server:?}").contains("a\"b"),
            "Debug never shows it"
        );
    }
}
