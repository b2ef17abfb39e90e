//! Several real `ferry-scheduler` processes as one raft cluster, for failover tests.
//!
//! Every scheduler gets the same master key file and the same `--peers` list; each has its own
//! data folder and log. The [`Cluster`] inside carries the CLI and the agents, pointed at every
//! scheduler at once (`--scheduler u1,u2,u3`), as a user would configure them. Schedulers run
//! on loopback, or each in its own host of a test [`Lan`] so a test can cut one off the network.

use crate::netns::Lan;
use crate::{Cluster, Proc, bin, wait_for};
use anyhow::{Context, Result, anyhow};
use std::time::Duration;

/// A replicated cluster of schedulers and the CLI and agents that use it.
pub struct Replicated {
    pub c: Cluster,
    /// Scheduler `i` has raft id `i + 1`; `None` while it is down.
    pub nodes: Vec<Option<Proc>>,
    pub urls: Vec<String>,
    listens: Vec<String>,
    /// The namespace each scheduler runs in, on a LAN.
    netns: Vec<Option<String>>,
    extra: Vec<String>,
    starts: usize,
    /// Schedulers started with `--join` (added later with `ferry cluster add`).
    joined: Vec<bool>,
}

impl Replicated {
    /// `n` schedulers on loopback ports.
    pub fn start(n: usize, extra: &[&str]) -> Result<Self> {
        // Hold every port until all are chosen, so no two schedulers get the same one.
        let held: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let mut listens = Vec::new();
        for l in &held {
            listens.push(l.local_addr()?.to_string());
        }
        drop(held);
        Self::start_on(listens, vec![None; n], None, extra)
    }

    /// `n` schedulers on hosts `0..n` of `lan`; the CLI and agents run on host `n`.
    pub fn start_in_lan(lan: &Lan, n: usize, extra: &[&str]) -> Result<Self> {
        let listens = (0..n)
            .map(|i| format!("{}:7100", lan.hosts[i].ip))
            .collect();
        let netns = (0..n).map(|i| Some(lan.hosts[i].ns.clone())).collect();
        Self::start_on(listens, netns, Some(lan.hosts[n].ns.clone()), extra)
    }

    fn start_on(
        listens: Vec<String>,
        netns: Vec<Option<String>>,
        client_ns: Option<String>,
        extra: &[&str],
    ) -> Result<Self> {
        let mut c = Cluster::without_scheduler()?;
        c.netns = client_ns;
        let urls: Vec<String> = listens.iter().map(|l| format!("http://{l}")).collect();
        c.url = urls.join(",");
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(c.path("master.key"), hex)?;
        let n = listens.len();
        let mut r = Self {
            c,
            nodes: (0..n).map(|_| None).collect(),
            urls,
            listens,
            netns,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            starts: 0,
            joined: vec![false; n],
        };
        for i in 0..n {
            r.spawn(i)?;
        }
        for i in 0..n {
            r.wait_serving(i)?;
        }
        // The first leader bootstraps the first admin and writes its token file.
        let token = wait_for(Duration::from_secs(30), "the first admin token", || {
            (0..n).find_map(|i| {
                std::fs::read_to_string(r.c.path(&format!("admin-{}.token", i + 1)))
                    .ok()
                    .filter(|t| !t.trim().is_empty())
            })
        })?;
        r.c.token = token.trim().to_string();
        Ok(r)
    }

    fn peers(&self) -> String {
        self.urls
            .iter()
            .zip(&self.joined)
            .enumerate()
            .filter(|(_, (_, joined))| !**joined)
            .map(|(i, (u, _))| format!("{}={u}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts one more scheduler on loopback with `--join` (empty, waiting to be added with
    /// `ferry cluster add`); returns its index (its raft id is index + 1).
    pub fn start_joining(&mut self) -> Result<usize> {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let i = self.urls.len();
        self.urls.push(format!("http://{listen}"));
        self.listens.push(listen);
        self.netns.push(None);
        self.nodes.push(None);
        self.joined.push(true);
        self.spawn(i)?;
        self.wait_serving(i)?;
        Ok(i)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let id = i + 1;
        let _ = std::fs::remove_file(self.c.path(&format!("sched-{id}.addr")));
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            self.listens[i].clone(),
            "--advertise-url".into(),
            self.urls[i].clone(),
            "--data-dir".into(),
            self.c.path(&format!("sched-{id}")).display().to_string(),
            "--master-key-file".into(),
            self.c.path("master.key").display().to_string(),
            "--addr-file".into(),
            self.c
                .path(&format!("sched-{id}.addr"))
                .display()
                .to_string(),
            "--admin-token-file".into(),
            self.c
                .path(&format!("admin-{id}.token"))
                .display()
                .to_string(),
            "--offline-after-secs".into(),
            "3".into(),
        ];
        if self.joined[i] {
            args.push("--join".into());
        } else {
            args.extend(["--peers".into(), self.peers()]);
        }
        args.extend(self.extra.iter().cloned());
        self.starts += 1;
        let proc = Proc::spawn_in(
            self.netns[i].as_deref(),
            &bin("ferry-scheduler")?,
            &args,
            self.c.path(&format!("scheduler-{id}-{}.log", self.starts)),
        )?;
        self.nodes[i] = Some(proc);
        Ok(())
    }

    fn wait_serving(&mut self, i: usize) -> Result<()> {
        let addr_file = self.c.path(&format!("sched-{}.addr", i + 1));
        let node = self.nodes[i]
            .as_mut()
            .ok_or_else(|| anyhow!("scheduler {} is not running", i + 1))?;
        wait_for(Duration::from_secs(30), "scheduler address file", || {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Some(Err(anyhow!(
                    "scheduler exited with {status}:\n{}",
                    node.log_text()
                )));
            }
            addr_file.exists().then_some(Ok(()))
        })?
    }

    /// SIGKILL scheduler `i`, as a crash would.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.kill9();
        }
    }

    /// Starts scheduler `i` again on its data, address and flags.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill9(i);
        self.spawn(i)?;
        self.wait_serving(i)
    }

    /// `ferry cluster status` as scheduler `i` sees it.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let mut one = Cluster::without_scheduler()?;
        one.url = self.urls[i].clone();
        one.token = self.c.token.clone();
        one.netns = self.c.netns.clone();
        let out = one
            .ferry(&["--output", "json", "cluster", "status"])?
            .ok()?;
        serde_json::from_str(&out.stdout).context("cluster status JSON")
    }

    /// The index of the scheduler that leads, once one running scheduler says it does and
    /// every other running, reachable one agrees.
    pub fn leader(&self, timeout: Duration) -> Result<usize> {
        wait_for(
            timeout,
            "a leader every running scheduler agrees on",
            || {
                let mut leader = None;
                for i in 0..self.nodes.len() {
                    if self.nodes[i].is_none() {
                        continue;
                    }
                    let s = self.status(i).ok()?;
                    let id = s["leader_id"].as_u64()?;
                    if id == 0 || leader.is_some_and(|l| l != id) {
                        return None;
                    }
                    leader = Some(id);
                }
                let l = leader? as usize - 1;
                self.nodes[l].is_some().then_some(l)
            },
        )
    }

    /// The scheduler logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(self.c.dir.path()) {
            let mut names: Vec<_> = dir
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("scheduler-") && n.ends_with(".log"))
                })
                .collect();
            names.sort();
            for p in names {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out.push_str(&format!("==== {} (last lines)\n", p.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}
