//! A private PostgreSQL server for a test: Debian's PostgreSQL (`initdb`, `pg_ctl` from
//! `/usr/lib/postgresql/*/bin`) on a free loopback port, its data directory under cargo's
//! target directory, stopped when the test ends. As root, its programs run as the `postgres`
//! user (PostgreSQL refuses to run as root). Never a mock.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A PostgreSQL cluster of its own.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    running: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// Make a cluster for the test `name` and start it.
    pub fn start(name: &str) -> Self {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("initdb").exists())
                    .collect()
            })
            .unwrap_or_default();
        bins.sort();
        let bin = bins.pop().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server in /usr/lib/postgresql: the archive tests need a real \
                 PostgreSQL. scripts/test.sh installs it; or: apt-get install postgresql"
            )
        });
        let port = super::free_port();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("pg")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the PostgreSQL data directory");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of {} to postgres failed", dir.display());
        }
        let mut server = Self {
            bin,
            dir,
            port,
            running: false,
        };
        let init = server.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "hioload",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ],
            true,
        );
        assert!(init.status.success(), "initdb failed: {init:?}");
        server.restart();
        server
    }

    /// Run one of PostgreSQL's programs (as `postgres` when we are root), with the data
    /// directory as the last argument if `dir`.
    fn run(&self, program: &str, args: &[&str], dir: bool) -> Output {
        let path = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        cmd.args(args);
        if dir {
            cmd.arg(&self.dir);
        }
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()))
    }

    /// `postgres://hioload@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://hioload@127.0.0.1:{}/postgres", self.port)
    }

    /// Start it (again), keeping its data.
    pub fn restart(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy().into_owned();
        let out = self.run(
            "pg_ctl",
            &["-w", "-t", "30", "-o", &opts, "-l", &log, "start", "-D"],
            true,
        );
        assert!(out.status.success(), "pg_ctl start failed: {out:?}");
        self.running = true;
    }

    /// Stop it at once (as a crash would: no checkpoint).
    pub fn stop(&mut self) {
        if self.running {
            let _ = self.run("pg_ctl", &["-w", "-m", "immediate", "stop", "-D"], true);
            self.running = false;
        }
    }

    /// Run SQL with `psql`; its unaligned, tuples-only output.
    pub fn sql(&self, query: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "hioload", "-d", "postgres", "-Atc", query])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {query:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
