//! File roots: the folders a job's file paths must stay inside.
//!
//! A file data source confines its jobs to its folder, and `ferry-agent --file-root` confines
//! everything the agent runs; a path must satisfy both. A path is refused when it has a `..`
//! component, when it names a place outside every root (an absolute path elsewhere), or when a
//! symbolic link on the way leads out: existing parts are canonicalized and the result checked
//! again. Files the agent creates are opened with `O_NOFOLLOW` so a link planted at the target
//! is never written through. Checks run before any byte is read or written.

use ferry_common::job::{JobSpec, ReaderConfig, WriterConfig};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The folders paths must stay inside; no roots means no confinement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roots {
    /// Canonical folders; a path must fall under one of them.
    allowed: Vec<PathBuf>,
    /// How the roots are named in errors.
    what: String,
}

/// Canonicalizes the folders given to `--file-root`; each must exist.
pub fn agent_roots(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    dirs.iter()
        .map(|d| {
            let c = d
                .canonicalize()
                .map_err(|e| format!("file root {}: {e}", d.display()))?;
            if !c.is_dir() {
                return Err(format!("file root {} is not a folder", d.display()));
            }
            Ok(c)
        })
        .collect()
}

impl Roots {
    /// The roots for a job: its data source's folder (if any) intersected with the agent's
    /// roots (already canonical; empty when the agent has none).
    pub fn new(datasource_root: Option<&str>, agent: &[PathBuf]) -> Result<Self, String> {
        let Some(ds) = datasource_root else {
            return Ok(Self {
                allowed: agent.to_vec(),
                what: agent_names(agent),
            });
        };
        let ds_canon = planned_canonical(Path::new(ds))
            .map_err(|e| format!("data source folder {ds}: {e}"))?;
        if agent.is_empty() {
            return Ok(Self {
                allowed: vec![ds_canon],
                what: format!("the data source's folder {ds}"),
            });
        }
        // Under both: the data source's folder when an agent root holds it, else the agent
        // roots that lie inside the data source's folder.
        let allowed: Vec<PathBuf> = if agent.iter().any(|a| ds_canon.starts_with(a)) {
            vec![ds_canon]
        } else {
            agent
                .iter()
                .filter(|a| a.starts_with(&ds_canon))
                .cloned()
                .collect()
        };
        if allowed.is_empty() {
            return Err(format!(
                "the data source's folder {ds} is outside {}",
                agent_names(agent)
            ));
        }
        Ok(Self {
            what: format!(
                "the data source's folder {ds} within {}",
                agent_names(agent)
            ),
            allowed,
        })
    }

    /// Whether any confinement applies.
    pub fn confined(&self) -> bool {
        !self.allowed.is_empty()
    }

    fn inside(&self, p: &Path) -> bool {
        self.allowed.iter().any(|r| p.starts_with(r))
    }

    fn outside(&self, shown: &Path, how: &str) -> String {
        format!(
            "{} {how} outside {}; Ferry touches no file there",
            shown.display(),
            self.what
        )
    }

    /// Lexical checks: no `..`, and an absolute form under a root (as named or canonical).
    fn check_lexical(&self, path: &Path) -> Result<PathBuf, String> {
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "{} contains \"..\"; paths must stay inside {}",
                path.display(),
                self.what
            ));
        }
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot resolve {}: {e}", path.display()))?
                .join(path)
        };
        // Drop `.` components so `root/./x` compares as `root/x`.
        let absolute: PathBuf = absolute
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        // The root may be named through a link (/tmp -> /private/tmp): compare the canonical
        // form of the longest existing ancestor of the folder. The last component is left as
        // named, so a link there is reported as one by the caller.
        let canon = match (absolute.parent(), absolute.file_name()) {
            (Some(parent), Some(name)) => canonical_prefix(parent)?.join(name),
            _ => canonical_prefix(&absolute)?,
        };
        if !self.inside(&canon) {
            return Err(self.outside(path, "is"));
        }
        Ok(absolute)
    }

    /// An existing file or folder to read: its canonical path, which is under a root.
    pub fn existing(&self, path: &Path) -> Result<PathBuf, String> {
        if !self.confined() {
            return Ok(path.to_path_buf());
        }
        let absolute = self.check_lexical(path)?;
        let canon = absolute.canonicalize().map_err(|e| match e.kind() {
            ErrorKind::NotFound => format!("source file {} does not exist", path.display()),
            _ => format!("cannot read {}: {e}", path.display()),
        })?;
        if !self.inside(&canon) {
            return Err(self.outside(path, "leads (through a symbolic link)"));
        }
        Ok(canon)
    }

    /// A folder to write into, created if missing; its canonical path, under a root. Nothing
    /// is created unless the folder's existing part is inside a root.
    pub fn folder_to_write(&self, dir: &Path) -> Result<PathBuf, String> {
        if !self.confined() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create folder {}: {e}", dir.display()))?;
            return Ok(dir.to_path_buf());
        }
        let absolute = self.check_lexical(dir)?;
        std::fs::create_dir_all(&absolute)
            .map_err(|e| format!("cannot create folder {}: {e}", dir.display()))?;
        let canon = absolute
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        if !self.inside(&canon) {
            return Err(self.outside(dir, "leads (through a symbolic link)"));
        }
        Ok(canon)
    }
}

/// Hands the agent's roots to every file connector of `job` and checks the paths of those
/// that do not check their own (SQLite): the job fails before anything is opened.
pub fn confine_job(job: &mut JobSpec, agent: &[PathBuf]) -> Result<(), String> {
    if agent.is_empty() {
        return Ok(());
    }
    let roots = Roots::new(None, agent)?;
    match &mut job.reader {
        ReaderConfig::TxtFile(r) => r.agent_roots = agent.to_vec(),
        ReaderConfig::Sqlite(r) => {
            roots.existing(Path::new(r.path.as_deref().unwrap_or_default()))?;
        }
        _ => {}
    }
    match &mut job.writer {
        WriterConfig::TxtFile(w) => w.agent_roots = agent.to_vec(),
        WriterConfig::Sqlite(w) => {
            let path = Path::new(w.path.as_deref().unwrap_or_default());
            let dir = path.parent().unwrap_or(Path::new("."));
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("..");
            plain_file_name(name)?;
            roots.folder_to_write(dir)?;
            if is_symlink(path) {
                return Err(format!(
                    "{} is a symbolic link; Ferry does not write through links",
                    path.display()
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn agent_names(agent: &[PathBuf]) -> String {
    let names: Vec<String> = agent.iter().map(|p| p.display().to_string()).collect();
    format!("this agent's file roots ({})", names.join(", "))
}

/// The canonical form of `absolute`: its longest existing ancestor canonicalized, the rest
/// (which has no `..`) appended.
fn canonical_prefix(absolute: &Path) -> Result<PathBuf, String> {
    let mut rest: Vec<OsString> = Vec::new();
    let mut cur = absolute.to_path_buf();
    loop {
        match cur.canonicalize() {
            Ok(c) => {
                let mut out = c;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let Some(name) = cur.file_name() else {
                    return Err(format!("cannot resolve {}: {e}", absolute.display()));
                };
                rest.push(name.to_os_string());
                if !cur.pop() {
                    return Err(format!("cannot resolve {}: {e}", absolute.display()));
                }
            }
            Err(e) => return Err(format!("cannot resolve {}: {e}", absolute.display())),
        }
    }
}

/// A file name for a file to write: one plain component, no separator, no `..`.
pub fn plain_file_name(name: &str) -> Result<&str, String> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(name),
        _ => Err(format!(
            "fileName \"{name}\" must be a plain file name (no folders, no \"..\"); put folders in path"
        )),
    }
}

/// Opens a file for writing without following a symbolic link at its name: `create_new`
/// creates it (failing if anything is there), otherwise it is appended to.
pub fn open_for_write(path: &Path, create_new: bool) -> Result<File, String> {
    let mut opts = OpenOptions::new();
    if create_new {
        opts.write(true).create_new(true);
    } else {
        opts.append(true).create(true);
    }
    opts.custom_flags(o_nofollow());
    opts.open(path).map_err(|e| {
        if is_symlink(path) {
            format!(
                "{} is a symbolic link; Ferry does not write through links",
                path.display()
            )
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })
}

/// Opens a file to read; a symbolic link at its name (swapped in after the path was checked)
/// is not followed.
pub fn open_for_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(o_nofollow())
        .open(path)
}

/// Whether `path` itself is a symbolic link (not following it).
pub fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(target_os = "linux")]
fn o_nofollow() -> i32 {
    0o400000
}

#[cfg(target_os = "macos")]
fn o_nofollow() -> i32 {
    0x0100
}

#[cfg(test)]
mod tests;

/// The canonical form of `p`, also when it does not exist yet (a writer's data source folder
/// is made by its first job): its longest existing ancestor canonicalized, with the missing
/// components after it, which may not be `..`.
fn planned_canonical(p: &Path) -> std::io::Result<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Ok(c);
    }
    let mut missing = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for part in missing.iter().rev() {
                out.push(part);
            }
            return Ok(out);
        }
        match (cur.file_name(), cur.parent()) {
            (Some(name), Some(parent)) => {
                missing.push(name.to_os_string());
                cur = parent;
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no part of it exists, and it holds `..` or is relative",
                ));
            }
        }
    }
}
