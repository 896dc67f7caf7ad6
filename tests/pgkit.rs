//! A throwaway PostgreSQL server for the end-to-end tests: [`PgCluster::start`] initdb's a cluster
//! (superuser `gateway`, trust auth) in a fresh temp dir and runs it on `127.0.0.1` on an ephemeral
//! port, with its Unix socket ([`PgCluster::socket_url`]) and log in that dir; TLS on TCP is off
//! until [`PgCluster::enable_tls`]. It uses the server binaries of the `postgresql`
//! package (`/usr/lib/postgresql/*/bin`, or `$PG_BIN`); when they are missing it panics, so tests
//! that need PostgreSQL never skip silently.
//!
//! CI runs the tests as root, and initdb/postgres/pg_ctl refuse to run as root: then the cluster
//! belongs to the `postgres` user (or `nobody`) and those three run under its uid/gid. One initdb'd
//! template per test process is copied for each cluster, which is several times faster than initdb.
//!
//! The server must never outlive the test process, however that process ends (panic = "abort",
//! Ctrl-C, `kill -9`): each dir has a watchdog `sh` holding the read end of a pipe whose write end
//! only this process holds. When the pipe closes (on drop, or when the kernel closes our fds at
//! death) the watchdog stops the server (`-m immediate`) and removes the dir. It ignores SIGINT,
//! SIGHUP and SIGTERM so a Ctrl-C at the terminal cannot kill it before it has cleaned up.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the server gets to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ephemeral ports to try when another process takes ours between probe and bind.
const PORT_TRIES: usize = 5;
/// `$1` pg_ctl, `$2` data dir (empty: no server), `$3` dir to remove. See the module docs.
const WATCHDOG: &str = "trap '' INT HUP TERM; read -r _ || :; \
    if [ -n \"$2\" ]; then \"$1\" -D \"$2\" -m immediate -w stop >/dev/null 2>&1; fi; rm -rf \"$3\"";

/// A throwaway PostgreSQL cluster in a temp dir, listening on 127.0.0.1 on an ephemeral port.
#[derive(Debug)]
pub struct PgCluster {
    /// The temp dir: holds `data/`, `server.log` and the Unix socket; removed on drop.
    dir: PathBuf,
    /// The data directory (`dir/data`).
    data: PathBuf,
    /// The server log (`dir/server.log`), shown in panics.
    log: PathBuf,
    /// The TCP port, kept across `stop`/`start_again`.
    port: u16,
    /// Stops the server and removes `dir` when its stdin closes; `None` once dropped.
    watchdog: Option<Child>,
}

/// The unprivileged user that owns clusters when we run as root.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

impl PgCluster {
    /// initdb (superuser `gateway`, auth trust, no password) in a fresh temp dir and start the
    /// server; waits until it accepts connections.
    ///
    /// # Panics
    /// When the binaries are missing or the server does not start, with the server log.
    pub fn start() -> PgCluster {
        bin(); // panics with the install hint before anything is created
        let template = template();
        let dir = new_dir();
        let data = dir.join("data");
        let mut cluster = PgCluster {
            watchdog: Some(watchdog(&dir, Some(&data))),
            log: dir.join("server.log"),
            dir,
            data,
            port: 0,
        };
        let out = run(Command::new("cp").args(["-a".as_ref(), template, &cluster.data]));
        if !out.status.success() {
            panic!("cannot copy the template cluster: {}", stderr(&out));
        }
        for attempt in 1..=PORT_TRIES {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(e) if attempt < PORT_TRIES && e.contains("Address already in use") => {}
                Err(e) => panic!("PostgreSQL did not start on port {}:\n{e}", cluster.port),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid (the first line of `data/postmaster.pid`), while the server runs.
    ///
    /// # Panics
    /// When the file cannot be read (the server is not running).
    pub fn postmaster_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .unwrap_or_else(|e| panic!("no postmaster.pid: {e}"));
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("postmaster.pid without a pid: {text:?}"))
    }

    /// Creates database `name` and returns its URL `postgres://gateway@127.0.0.1:PORT/NAME`.
    ///
    /// # Panics
    /// When `CREATE DATABASE` fails, with psql's stderr.
    pub fn create_database(&self, name: &str) -> String {
        let quoted = name.replace('"', "\"\"");
        self.sql("postgres", &format!("CREATE DATABASE \"{quoted}\""));
        format!("postgres://gateway@127.0.0.1:{}/{name}", self.port)
    }

    /// The folder holding the server's Unix socket (`.s.PGSQL.<port>`): the cluster's temp dir.
    /// This process can reach it: the dir is its own, or (when it runs as root) the cluster
    /// owner's, which root enters whatever its mode.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Database `name`'s URL over the Unix socket, the folder percent-encoded as the host:
    /// `postgres://gateway@%2Ftmp%2Fpgkit-...:PORT/NAME` (the port names the socket file). The
    /// database must exist ([`PgCluster::create_database`]).
    pub fn socket_url(&self, name: &str) -> String {
        format!(
            "postgres://gateway@{}:{}/{name}",
            percent_encode(&self.dir.to_string_lossy()),
            self.port
        )
    }

    /// Serves TLS on TCP from now on with `cert_pem` (the chain) and `key_pem`, written into the
    /// data dir as the cluster owner's, and waits until a TLS connection is accepted. The Unix
    /// socket stays plain (PostgreSQL offers no TLS there).
    ///
    /// # Panics
    /// When the files cannot be written or the server does not take TLS within the timeout.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        for (file, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.data.join(file);
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
            if let Some(o) = owner() {
                std::os::unix::fs::chown(&path, Some(o.uid), Some(o.gid))
                    .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
            }
        }
        self.sql("postgres", "ALTER SYSTEM SET ssl = on");
        self.sql("postgres", "SELECT pg_reload_conf()");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = run(Command::new(bin().join("psql"))
                .args("-X -q -At -h 127.0.0.1 -U gateway -d postgres -c SELECT -p".split(' '))
                .arg(self.port.to_string())
                .env("PGSSLMODE", "require")
                .env("PGCONNECT_TIMEOUT", "10"));
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the server did not take TLS within {READY_TIMEOUT:?}: {}\nlog:\n{}",
                    stderr(&out),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one SQL statement or script in database `db` with psql (`-v ON_ERROR_STOP=1`, `-At`,
    /// no command tags) and returns its stdout, trimmed.
    ///
    /// # Panics
    /// When psql fails, with its stderr.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let mut child = Command::new(bin().join("psql"))
            .args("-X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U gateway -f -".split(' '))
            .args(["-p", &self.port.to_string(), "-d", db])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .unwrap_or_else(|e| panic!("cannot write to psql: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for psql: {e}"));
        if !out.status.success() {
            panic!(
                "psql failed in `{db}` ({}) on:\n{sql}\n{}",
                out.status,
                stderr(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown), keeping the data: for "database restarted" tests.
    ///
    /// # Panics
    /// When `pg_ctl stop` fails.
    pub fn stop(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "stop"]);
        if !out.status.success() {
            panic!("pg_ctl stop failed: {}\n{}", stderr(&out), self.log_text());
        }
    }

    /// Starts it again on the same port and data; waits until ready.
    ///
    /// # Panics
    /// When the server does not start, with the server log.
    pub fn start_again(&self) {
        if let Err(e) = self.try_start() {
            panic!("PostgreSQL did not restart on port {}:\n{e}", self.port);
        }
    }

    fn try_start(&self) -> Result<(), String> {
        // A fresh log per attempt, so "Address already in use" is about this one.
        let _ = std::fs::remove_file(&self.log);
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='{}' \
             -c fsync=on -c shared_buffers=16MB -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        let log = self.log.to_string_lossy().into_owned();
        let out = self.pg_ctl(&["-l", &log, "-o", &options, "-w", "-t", "30", "start"]);
        if !out.status.success() {
            return Err(format!(
                "pg_ctl: {}\nlog:\n{}",
                stderr(&out),
                self.log_text()
            ));
        }
        loop {
            let ready = run(Command::new(bin().join("pg_isready"))
                .args("-q -h 127.0.0.1 -U gateway -d postgres -p".split(' '))
                .arg(self.port.to_string()));
            if ready.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        run(as_owner(
            Command::new(bin().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(args),
        ))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take()); // the watchdog stops the server and removes the dir
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir); // in case the watchdog could not
    }
}

/// The server binaries: `$PG_BIN`, else the newest `/usr/lib/postgresql/*/bin` holding initdb.
fn bin() -> &'static Path {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
            return dir.join("initdb").is_file().then_some(dir);
        }
        let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                let version: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .max()
            .map(|(_, bin)| bin)
    });
    found.as_deref().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin or $PG_BIN; \
             install the postgresql package (.ci/run does)"
        )
    })
}

/// `None` when we are not root; else the `postgres` user from /etc/passwd, or `nobody`.
fn owner() -> Option<Owner> {
    static OWNER: OnceLock<Option<Owner>> = OnceLock::new();
    *OWNER.get_or_init(|| {
        // /proc/self belongs to our effective uid: no libc needed.
        let uid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if uid != 0 {
            return None;
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let postgres = passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some(Owner {
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                }),
                _ => None,
            }
        });
        let nobody = Owner {
            uid: 65534,
            gid: 65534,
        };
        Some(postgres.unwrap_or(nobody))
    })
}

/// Runs `cmd` as the cluster's owner (see [`owner`]).
fn as_owner(cmd: &mut Command) -> &mut Command {
    if let Some(o) = owner() {
        cmd.uid(o.uid).gid(o.gid);
    }
    cmd.current_dir("/")
}

/// A new empty dir `$TMPDIR/pgkit-<pid>-<n>`, mode 0700, owned by the cluster's owner.
fn new_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pgkit-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.display()));
    if let Some(o) = owner() {
        std::os::unix::fs::chown(&dir, Some(o.uid), Some(o.gid))
            .unwrap_or_else(|e| panic!("cannot chown {}: {e}", dir.display()));
    }
    dir
}

/// Starts the watchdog of `dir` (see the module docs); it stops the server of `data` if any.
fn watchdog(dir: &Path, data: Option<&Path>) -> Child {
    as_owner(Command::new("sh").args(["-c", WATCHDOG, "pgkit-watchdog"]))
        .arg(bin().join("pg_ctl"))
        .arg(data.unwrap_or(Path::new("")))
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the watchdog: {e}"))
}

/// The initdb'd data dir copied by every cluster of this process (made on first use).
fn template() -> &'static Path {
    /// The data dir and the watchdog that removes it when this process ends.
    static TEMPLATE: OnceLock<(PathBuf, Child)> = OnceLock::new();
    let (data, _watchdog) = TEMPLATE.get_or_init(|| {
        let dir = new_dir();
        let keeper = watchdog(&dir, None);
        let data = dir.join("data");
        let initdb = |locale: &str| {
            let _ = std::fs::remove_dir_all(&data);
            run(as_owner(&mut Command::new(bin().join("initdb")))
                .args("-U gateway --auth=trust -E UTF8 -N".split(' '))
                .args([locale, "-D"])
                .arg(&data))
        };
        let out = initdb("--locale=C.UTF-8");
        let out = if out.status.success() {
            out
        } else {
            initdb("--no-locale")
        };
        if !out.status.success() {
            panic!("initdb failed ({}):\n{}", out.status, stderr(&out));
        }
        (data, keeper)
    });
    data
}

/// `text` with every byte but ASCII letters, digits and `-._~` as `%XX` (a URL's host).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
