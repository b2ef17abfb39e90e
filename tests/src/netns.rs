//! Private networks for tests: Linux network namespaces joined to the test host by a veth pair,
//! and PostgreSQL servers that listen only inside one of them.
//!
//! A namespace holds a server of a user's private network: it can dial out to the scheduler on
//! the test host's side of the veth, while its databases listen on the namespace's own loopback,
//! which nothing outside can reach. Everything is removed on drop. Making namespaces needs root
//! and iproute2; [`available`] says why a test cannot run where they are missing, and the test
//! prints that reason and skips.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Why namespaces cannot be made here, if they cannot.
pub fn available() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("network namespace tests need root (ip netns add)".into());
    }
    let probe = format!("ferry-probe-{}", std::process::id());
    match run(Command::new("ip").args(["netns", "add", &probe])) {
        Ok(_) => {
            let _ = run(Command::new("ip").args(["netns", "del", &probe]));
            None
        }
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

/// A namespace joined to the host by a veth pair on a /30: host side `.1`, namespace side `.2`.
pub struct Netns {
    pub name: String,
    pub host_ip: String,
    pub ns_ip: String,
    host_if: String,
}

impl Netns {
    /// Creates namespace `ferry-<tag>-<pid>` on subnet `10.<a>.<b>.0/30`.
    pub fn create(tag: &str, a: u8, b: u8) -> Result<Self> {
        let id = std::process::id() % 100_000;
        let name = format!("ferry-{tag}-{id}");
        let host_if = format!("fh{tag}{id}");
        let ns_if = format!("fn{tag}{id}");
        let (host_ip, ns_ip) = (format!("10.{a}.{b}.1"), format!("10.{a}.{b}.2"));
        let _ = run(Command::new("ip").args(["netns", "del", &name]));
        let _ = run(Command::new("ip").args(["link", "del", &host_if]));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ns_ip: ns_ip.clone(),
            host_if: host_if.clone(),
        };
        run(Command::new("ip").args([
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]))?;
        run(Command::new("ip").args(["link", "set", &ns_if, "netns", &name]))?;
        run(Command::new("ip").args(["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]))?;
        run(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
        ns.exec(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        ns.exec(&["ip", "link", "set", &ns_if, "up"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace and returns its output.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Pulls the namespace's cable: its link to the host goes down, every connection across it
    /// goes silent (no reset), as when a network drops.
    pub fn cut(&self) -> Result<()> {
        run(Command::new("ip").args(["link", "set", &self.host_if, "down"])).map(|_| ())
    }

    /// Plugs the cable back in (the addresses stay).
    pub fn heal(&self) -> Result<()> {
        run(Command::new("ip").args(["link", "set", &self.host_if, "up"])).map(|_| ())
    }

    /// Whether a TCP connection from inside the namespace to `addr` succeeds.
    pub fn can_connect(&self, addr: &str) -> bool {
        let script = format!(
            "exec 3<>/dev/tcp/{}/{} && echo open",
            addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr),
            addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("0")
        );
        self.exec(&["timeout", "3", "bash", "-c", &script])
            .is_ok_and(|o| o.contains("open"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
        let _ = run(Command::new("ip").args(["link", "del", &self.host_if]));
    }
}

/// A PostgreSQL server listening on 127.0.0.1:`port` inside a namespace only, with trust auth
/// for `postgres` and a database `private`.
pub struct PrivatePg {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

fn pg_bin(name: &str) -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("PostgreSQL server binaries under {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    let bin = versions
        .last()
        .map(|v| v.join("bin").join(name))
        .filter(|p| p.exists())
        .with_context(|| format!("no {name} under {}", root.display()))?;
    Ok(bin)
}

impl PrivatePg {
    pub fn start(ns: &Netns, port: u16, scratch: &Path) -> Result<Self> {
        let dir = scratch.join(format!("pg-{}", ns.name));
        std::fs::create_dir_all(&dir)?;
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir))?;
        // The scratch folder's parents must be traversable by the postgres user.
        let mut p = dir.parent();
        while let Some(d) = p {
            if d == Path::new("/") {
                break;
            }
            let _ = run(Command::new("chmod").arg("o+x").arg(d));
            p = d.parent();
        }
        let data = dir.join("data");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("initdb")?)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"]))?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "runuser", "-u", "postgres", "--"])
            .arg(pg_bin("postgres")?)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let me = Self { port, dir, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = ns.exec(&[
                &pg_bin("pg_isready")?.display().to_string(),
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]);
            if ready.is_ok() {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "private PostgreSQL did not start: {}",
                    std::fs::read_to_string(me.dir.join("server.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        me.psql(ns, "postgres", "CREATE DATABASE private")?;
        Ok(me)
    }

    /// Runs SQL with psql inside the namespace.
    pub fn psql(&self, ns: &Netns, db: &str, sql: &str) -> Result<String> {
        ns.exec(&[
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-tAq",
            "-c",
            sql,
        ])
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `ip netns exec` ran runuser, which ran postgres: stop the server itself too.
        let pid_file = self.dir.join("data").join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string))
        {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port nothing listens on in this namespace right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A test LAN: a switch namespace holding a bridge, and `hosts` namespaces each plugged into it
/// by a veth pair, at `10.<a>.<b>.<i+1>/24`. Everything lives in namespaces this test made,
/// so nothing touches the host's own interfaces, routes or sysctls. [`Lan::cut`] pulls one
/// host's cable at the switch (its port goes down) and [`Lan::heal`] plugs it back: a real
/// partition, seen by the kernel as a dead link.
pub struct Lan {
    switch: String,
    pub hosts: Vec<LanHost>,
}

/// One machine of a [`Lan`].
pub struct LanHost {
    /// The namespace to run its processes in.
    pub ns: String,
    pub ip: String,
    /// Its port on the switch.
    port: String,
}

impl Lan {
    /// Creates the switch `ferry-<tag>sw-<pid>` and hosts `ferry-<tag><i>-<pid>`.
    pub fn create(tag: &str, a: u8, b: u8, hosts: usize) -> Result<Self> {
        let id = std::process::id() % 100_000;
        let switch = format!("ferry-{tag}sw-{id}");
        let _ = run(Command::new("ip").args(["netns", "del", &switch]));
        run(Command::new("ip").args(["netns", "add", &switch]))?;
        let mut lan = Self {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        lan.sw(&["link", "add", "br0", "type", "bridge"])?;
        lan.sw(&["link", "set", "br0", "up"])?;
        lan.sw(&["link", "set", "lo", "up"])?;
        for i in 0..hosts {
            let ns = format!("ferry-{tag}{i}-{id}");
            let _ = run(Command::new("ip").args(["netns", "del", &ns]));
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            let port = format!("p{i}");
            let ip = format!("10.{a}.{b}.{}", i + 1);
            lan.hosts.push(LanHost {
                ns: ns.clone(),
                ip: ip.clone(),
                port: port.clone(),
            });
            lan.sw(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            lan.sw(&["link", "set", &port, "master", "br0"])?;
            lan.sw(&["link", "set", &port, "up"])?;
            let host = |args: &[&str]| run(Command::new("ip").args(["-n", &ns]).args(args));
            host(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            host(&["link", "set", "eth0", "up"])?;
            host(&["link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    fn sw(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.switch]).args(args))
    }

    /// Unplugs host `i` from the switch: it reaches no one and no one reaches it.
    pub fn cut(&self, i: usize) -> Result<()> {
        self.sw(&["link", "set", &self.hosts[i].port, "down"])
            .map(|_| ())
    }

    /// Plugs host `i` back in.
    pub fn heal(&self, i: usize) -> Result<()> {
        self.sw(&["link", "set", &self.hosts[i].port, "up"])
            .map(|_| ())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = run(Command::new("ip").args(["netns", "del", &h.ns]));
        }
        let _ = run(Command::new("ip").args(["netns", "del", &self.switch]));
    }
}
