//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, started
//! with `pg_ctl` on a Unix socket in that directory (no TCP port, so no clash with anything
//! else on the machine), stopped and deleted on drop.
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user
//! (`runuser -u postgres --`) in a directory handed over to it. `DURABLE_TEST_POSTGRES`, when
//! set, names a server to use instead (a libpq connection string, such as
//! `host=/var/run/postgresql user=postgres`); each test then gets a database of its own
//! there.
//!
//! No embedded-PostgreSQL crate: they download binaries. This uses what the machine has
//! (Debian's `postgresql` package: `apt-get install -y postgresql`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The server for `test`, or `None` (with a one-line notice saying how to enable it) when
/// PostgreSQL is not available and not required.
///
/// # Panics
/// When PostgreSQL is unavailable and `DURABLE_REQUIRE_POSTGRES` is set (as `.ci/run`
/// sets it).
pub fn server_or_skip(test: &str) -> Option<Server> {
    match Server::start() {
        Ok(server) => Some(server),
        Err(why) if std::env::var_os("DURABLE_REQUIRE_POSTGRES").is_some() => {
            panic!("{test}: PostgreSQL is required here but unavailable: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped, PostgreSQL is unavailable: {why}");
            None
        }
    }
}

/// The variable that names a PostgreSQL server to test against instead of a local cluster.
pub const SERVER_VAR: &str = "DURABLE_TEST_POSTGRES";

/// Why PostgreSQL tests cannot run here, and how to make them.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (install PostgreSQL with `apt-get install -y postgresql`, or set {SERVER_VAR} to a server's connection string)",
            self.0
        )
    }
}

/// A PostgreSQL server for tests: a cluster this process started, or the one
/// [`SERVER_VAR`] names.
pub struct Server {
    /// The connection string without a database.
    base: String,
    /// The cluster this process started (`None` for a server named by [`SERVER_VAR`]).
    cluster: Option<Cluster>,
}

struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
}

impl Server {
    /// The server [`SERVER_VAR`] names, or a new local cluster.
    ///
    /// # Errors
    /// [`Unavailable`] when neither works, saying why.
    pub fn start() -> Result<Server, Unavailable> {
        if let Ok(base) = std::env::var(SERVER_VAR) {
            return Ok(Server {
                base,
                cluster: None,
            });
        }
        let bin = bin_dir().ok_or_else(|| {
            Unavailable("no PostgreSQL binaries (`initdb`, `pg_ctl`) on this machine".into())
        })?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("durable-pg-")
            .tempdir()
            .map_err(|e| Unavailable(format!("cannot create a directory for the cluster: {e}")))?;
        if as_postgres {
            hand_over(dir.path())?;
        }
        let cluster = Cluster {
            dir,
            bin,
            as_postgres,
        };
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )?;
        let socket_dir = cluster.dir.path();
        // Socket only; fsync stays on: the durability tests need it.
        let options = format!(
            "-k {} -p 5432 -c listen_addresses='' -c max_connections=200",
            socket_dir.display()
        );
        let log = cluster.dir.path().join("log");
        cluster.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        )?;
        Ok(Server {
            base: format!("host={} port=5432 user=postgres", socket_dir.display()),
            cluster: Some(cluster),
        })
    }

    /// A new, empty database on this server; returns its connection string.
    ///
    /// # Errors
    /// [`Unavailable`] when it cannot be created.
    pub fn database(&self, prefix: &str) -> Result<String, Unavailable> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let created = match &self.cluster {
            Some(cluster) => cluster.run(
                "createdb",
                &[
                    "-h".as_ref(),
                    cluster.dir.path().as_os_str(),
                    "-p".as_ref(),
                    "5432".as_ref(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    name.as_ref(),
                ],
            ),
            None => {
                let createdb =
                    bin_dir().map_or_else(|| "createdb".into(), |bin| bin.join("createdb"));
                let output = Command::new(createdb)
                    .args(["--maintenance-db", &self.base, &name])
                    .output()
                    .map_err(|e| Unavailable(format!("cannot run `createdb`: {e}")))?;
                checked("createdb", output)
            }
        };
        created?;
        Ok(format!("{} dbname={name}", self.base))
    }

    /// The connection string of the server, without a database.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Stops the cluster this process started (`pg_ctl stop -m fast`: connections are
    /// cut), as a database that goes away.
    ///
    /// # Errors
    /// [`Unavailable`] for a server named by [`SERVER_VAR`], or when `pg_ctl` fails.
    pub fn stop(&self) -> Result<(), Unavailable> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"])
    }

    /// Starts the cluster again after [`Server::stop`].
    ///
    /// # Errors
    /// As [`Server::stop`].
    pub fn restart(&self) -> Result<(), Unavailable> {
        let cluster = self.own()?;
        let log = cluster.dir.path().join("log");
        let options = format!(
            "-k {} -p 5432 -c listen_addresses='' -c max_connections=200",
            cluster.dir.path().display()
        );
        self.pg_ctl(&["-l", &log.to_string_lossy(), "-o", &options, "-w", "start"])
    }

    fn own(&self) -> Result<&Cluster, Unavailable> {
        self.cluster.as_ref().ok_or_else(|| {
            Unavailable(format!("the server {SERVER_VAR} names is not ours to stop"))
        })
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Unavailable> {
        let cluster = self.own()?;
        let data = cluster.dir.path().join("data");
        let mut all: Vec<&std::ffi::OsStr> = vec!["-D".as_ref(), data.as_os_str()];
        all.extend(args.iter().map(|arg| std::ffi::OsStr::new(*arg)));
        cluster.run("pg_ctl", &all)
    }
}

impl Cluster {
    /// Runs one of PostgreSQL's programs, as `postgres` when this process is root.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), Unavailable> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Unavailable(format!("cannot run `{}`: {e}", path.display())))?;
        checked(program, output)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(cluster) = &self.cluster {
            let data = cluster.dir.path().join("data");
            let _ = cluster.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "-w".as_ref(),
                    "stop".as_ref(),
                ],
            );
        }
    }
}

fn checked(program: &str, output: Output) -> Result<(), Unavailable> {
    if output.status.success() {
        return Ok(());
    }
    Err(Unavailable(format!(
        "`{program}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, else Debian's
/// `/usr/lib/postgresql/<version>/bin` (not on `PATH`), newest first.
fn bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").exists() && dir.join("pg_ctl").exists();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|dir| has_tools(dir))
        .collect();
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Gives the cluster's directory to the `postgres` user, which PostgreSQL runs as.
fn hand_over(dir: &Path) -> Result<(), Unavailable> {
    let output = Command::new("chown")
        .arg("postgres:")
        .arg(dir)
        .output()
        .map_err(|e| Unavailable(format!("cannot run `chown`: {e}")))?;
    checked("chown postgres", output)
        .map_err(|Unavailable(why)| Unavailable(format!("{why}; is there a `postgres` user?")))
}
