//! Who may do what through the admin API, decided in one place.
//!
//! Every admin call carries a bearer token (`authorization: Bearer fat_…`); the interceptor
//! turns it into a [`Principal`] (or refuses the call) before any handler runs, so no call works
//! without one. Handlers then ask [`Principal::check`] for the [`Action`] they perform in the
//! call's workspace (`x-ferry-workspace`, default `default`). Roles follow DataWorks: viewers
//! read; developers change tasks and data sources (and may run a task to try it); operators run,
//! rerun, kill, backfill and freeze; workspace admins do all of that and manage members; cluster
//! admins manage users, workspaces, resource groups and agents.
//!
//! Tokens are random (32 bytes) and kept only as SHA-256 hashes, so a copy of the store does not
//! hold a usable token; they can expire and be revoked.

use crate::clock::SharedClock;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::state::Store;
use crate::state::command::{Applied, Command};
use crate::state::model::{ApiToken, AuditRecord, Role, User};
use ferry_common::secret::{hash_token, random_token};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Status};

/// Metadata key naming the workspace a call acts in.
pub const WORKSPACE_HEADER: &str = "x-ferry-workspace";
/// The workspace every cluster starts with.
pub const DEFAULT_WORKSPACE: &str = "default";
/// The user the first start creates.
pub const FIRST_ADMIN: &str = "admin";

/// What a call does, for authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// List and show anything in the workspace, read logs.
    Read,
    /// Run a task now (developers try their tasks; operators run them).
    Run,
    /// Rerun, kill, freeze, mark success, backfill.
    Operate,
    /// Create and change tasks and data sources; test connectivity.
    Develop,
    /// Manage the workspace's members.
    AdministerWorkspace,
    /// Users, workspaces, resource groups, agents.
    AdministerCluster,
}

impl Action {
    fn allowed(self, role: Role) -> bool {
        match self {
            Action::Read => true,
            Action::Run => role >= Role::Operator,
            Action::Operate => matches!(role, Role::Operator | Role::Admin),
            Action::Develop => matches!(role, Role::Developer | Role::Admin),
            Action::AdministerWorkspace => role == Role::Admin,
            Action::AdministerCluster => false,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Run => "run tasks",
            Action::Operate => "operate instances (operator or admin)",
            Action::Develop => "change tasks and data sources (developer or admin)",
            Action::AdministerWorkspace => "administer the workspace",
            Action::AdministerCluster => "administer the cluster",
        }
    }
}

/// The authenticated caller of one admin call.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub cluster_admin: bool,
    pub roles: BTreeMap<String, Role>,
    pub token_id: String,
    /// The workspace the call acts in.
    pub workspace: String,
    /// The caller's address, for the audit log.
    pub from: String,
}

impl Principal {
    /// The caller's role in `workspace` (cluster admins are admins everywhere).
    pub fn role_in(&self, workspace: &str) -> Option<Role> {
        if self.cluster_admin {
            return Some(Role::Admin);
        }
        self.roles.get(workspace).copied()
    }

    /// Whether the caller may do `action` in `workspace`.
    pub fn may(&self, action: Action, workspace: &str) -> bool {
        if self.cluster_admin {
            return true;
        }
        if action == Action::AdministerCluster {
            return false;
        }
        self.role_in(workspace).is_some_and(|r| action.allowed(r))
    }

    /// Refuses the call unless the caller may do `action` in `workspace`.
    pub fn check(&self, action: Action, workspace: &str) -> Result<()> {
        if self.may(action, workspace) {
            return Ok(());
        }
        let role = self
            .role_in(workspace)
            .map(|r| format!("role {}", r.as_str()))
            .unwrap_or_else(|| "no role".to_string());
        Err(Error::PermissionDenied(format!(
            "user {} has {role} in workspace {workspace} and may not {}",
            self.user,
            action.describe()
        )))
    }

    /// An audit record of this caller doing `action` on `target`.
    pub fn audit(&self, action: &str, target: &str, outcome: &str, at_ms: i64) -> AuditRecord {
        AuditRecord {
            at_ms,
            user: self.user.clone(),
            action: action.to_string(),
            workspace: self.workspace.clone(),
            target: target.to_string(),
            from: self.from.clone(),
            outcome: outcome.to_string(),
        }
    }
}

/// A new random API token (shown once) and its record.
pub fn new_token(user: &str, name: &str, now_ms: i64, expires_ms: i64) -> (String, ApiToken) {
    let token = random_token("fat_");
    let hash = hash_token(&token);
    let record = ApiToken {
        id: hash[..12].to_string(),
        user: user.to_string(),
        hash,
        name: name.to_string(),
        created_ms: now_ms,
        expires_ms,
        revoked_ms: 0,
    };
    (token, record)
}

/// Looks the bearer token up and builds the caller, or says why the call is refused.
pub fn authenticate(
    store: &Store,
    clock: &SharedClock,
    token: Option<&str>,
    workspace: String,
    from: String,
) -> std::result::Result<Principal, Status> {
    let Some(token) = token else {
        return Err(Status::unauthenticated(
            "no API token: log in with `ferry login` (or set FERRY_TOKEN)",
        ));
    };
    let hash = hash_token(token);
    let record = store
        .token_by_hash(&hash)
        .map_err(Status::from)?
        .ok_or_else(|| {
            Status::unauthenticated("the API token is not valid; log in again with `ferry login`")
        })?;
    let now = clock.now_ms();
    if record.revoked_ms > 0 {
        return Err(Status::unauthenticated(format!(
            "the API token {} was revoked; ask an admin for a new one",
            record.id
        )));
    }
    if record.expires_ms > 0 && now >= record.expires_ms {
        return Err(Status::unauthenticated(format!(
            "the API token {} expired; create a new one with `ferry token create`",
            record.id
        )));
    }
    let user: User = store
        .user(&record.user)
        .map_err(Status::from)?
        .ok_or_else(|| Status::unauthenticated(format!("user {} no longer exists", record.user)))?;
    Ok(Principal {
        user: user.name,
        cluster_admin: user.cluster_admin,
        roles: user.roles,
        token_id: record.id,
        workspace,
        from,
    })
}

/// The token of an `authorization: Bearer …` value (gRPC metadata or HTTP header).
pub fn bearer(value: Option<&str>) -> Option<String> {
    value
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
}

/// The workspace a call names (`x-ferry-workspace`), or the default one.
pub fn workspace_or_default(value: Option<&str>) -> String {
    value
        .filter(|w| !w.is_empty())
        .unwrap_or(DEFAULT_WORKSPACE)
        .to_string()
}

/// Authenticates every admin call before its handler runs, and puts the [`Principal`] in the
/// request's extensions.
#[derive(Clone)]
pub struct Authenticator {
    pub ctx: Arc<Context>,
    /// Refuse calls on a scheduler that does not lead, naming the leader.
    pub leader_only: bool,
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        if self.leader_only {
            crate::cluster::gate(&self.ctx)?;
        }
        let token = bearer(
            req.metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
        );
        let workspace = workspace_or_default(
            req.metadata()
                .get(WORKSPACE_HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        let from = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        match authenticate(
            &self.ctx.store,
            &self.ctx.clock,
            token.as_deref(),
            workspace,
            from.clone(),
        ) {
            Ok(p) => {
                req.extensions_mut().insert(p);
                Ok(req)
            }
            Err(status) => {
                tracing::warn!(%from, reason = %status.message(), "admin call refused: not authenticated");
                Err(status)
            }
        }
    }
}

/// The caller of a request the interceptor let through.
pub fn principal<T>(req: &Request<T>) -> Result<Principal> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("no API token: log in with `ferry login`".into()))
}

/// On a store without users (the first start): the `default` workspace and the first admin with
/// a token, returned so it can be shown once. `preset` (FERRY_BOOTSTRAP_TOKEN) lets automation
/// choose it. Later starts change nothing and return `None`.
pub async fn bootstrap(ctx: &Context, preset: Option<&str>) -> Result<Option<String>> {
    if !ctx.store.users()?.is_empty() {
        return Ok(None);
    }
    let now = ctx.now_ms();
    let (token, mut record) = new_token(FIRST_ADMIN, "first admin token", now, 0);
    let token = match preset {
        Some(p) if p.len() >= 32 => {
            let hash = hash_token(p);
            record.id = hash[..12].to_string();
            record.hash = hash;
            p.to_string()
        }
        Some(_) => {
            return Err(Error::InvalidArgument(
                "FERRY_BOOTSTRAP_TOKEN must be at least 32 characters".into(),
            ));
        }
        None => token,
    };
    let applied = ctx
        .store
        .propose(Command::Bootstrap {
            workspace: DEFAULT_WORKSPACE.into(),
            user: FIRST_ADMIN.into(),
            token: record,
            at_ms: now,
        })
        .await?;
    // Another scheduler of the cluster bootstrapped first: its token is the one.
    Ok((applied == Applied::Done).then_some(token))
}

/// `ws/name`: how tasks and data sources are keyed, one namespace per workspace.
pub fn qualify(workspace: &str, name: &str) -> String {
    format!("{workspace}/{name}")
}

/// The name without its workspace.
pub fn short(qualified: &str) -> &str {
    qualified
        .split_once('/')
        .map(|(_, n)| n)
        .unwrap_or(qualified)
}

/// The workspace of a qualified name.
pub fn workspace_of(qualified: &str) -> &str {
    qualified
        .split_once('/')
        .map(|(w, _)| w)
        .unwrap_or(DEFAULT_WORKSPACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(cluster_admin: bool, roles: &[(&str, Role)]) -> Principal {
        Principal {
            user: "u".into(),
            cluster_admin,
            roles: roles.iter().map(|(w, r)| (w.to_string(), *r)).collect(),
            token_id: "t".into(),
            workspace: "a".into(),
            from: String::new(),
        }
    }

    /// Every role against every action, in its own workspace and in another one.
    #[test]
    fn role_matrix() {
        use Action::*;
        let actions = [
            Read,
            Run,
            Operate,
            Develop,
            AdministerWorkspace,
            AdministerCluster,
        ];
        let expect: &[(Role, [bool; 6])] = &[
            (Role::Viewer, [true, false, false, false, false, false]),
            (Role::Operator, [true, true, true, false, false, false]),
            (Role::Developer, [true, true, false, true, false, false]),
            (Role::Admin, [true, true, true, true, true, false]),
        ];
        for (role, allowed) in expect {
            let who = p(false, &[("a", *role)]);
            for (action, ok) in actions.iter().zip(allowed) {
                assert_eq!(who.may(*action, "a"), *ok, "{role:?} {action:?}");
                assert!(
                    !who.may(*action, "b"),
                    "{role:?} {action:?} leaks to workspace b"
                );
                assert_eq!(who.check(*action, "a").is_ok(), *ok);
            }
        }
        let root = p(true, &[]);
        assert!(actions.iter().all(|a| root.may(*a, "anything")));
        let nobody = p(false, &[]);
        assert!(actions.iter().all(|a| !nobody.may(*a, "a")));
    }

    #[test]
    fn qualified_names() {
        assert_eq!(qualify("ws", "orders"), "ws/orders");
        assert_eq!(short("ws/orders"), "orders");
        assert_eq!(workspace_of("ws/orders"), "ws");
    }
}

/// Shortest console password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest (argon2 would take any length; nobody types more, and it bounds the work).
pub const MAX_PASSWORD: usize = 1024;
/// A console session lasts this long unless the login asks for less (or more, up to a week).
pub const SESSION_SECS: u64 = 12 * 3600;
const MAX_SESSION_SECS: u64 = 7 * 24 * 3600;
/// Consecutive failed logins of one user before it is locked out for a while.
const FREE_FAILURES: u32 = 5;
/// The longest lock-out.
const MAX_LOCKOUT_MS: i64 = 15 * 60 * 1000;

/// The argon2id hash of a password someone types (OWASP's default parameters), as a PHC string.
/// Slow on purpose; call it off the async threads.
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    check_password(password)?;
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Secrets(format!("password hashing failed: {e}")))
}

fn check_password(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD {
        return Err(Error::InvalidArgument(format!(
            "the password is too short: use at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > MAX_PASSWORD {
        return Err(Error::InvalidArgument(format!(
            "the password is too long: at most {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// Whether `password` matches the stored hash (false for an empty or damaged hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified against for unknown users so a login takes as long
/// whether or not the user exists.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_token("decoy_")).unwrap_or_default())
}

/// Failed logins per user name: after [`FREE_FAILURES`] in a row, each further try waits twice
/// as long (2 s, 4 s, ... up to 15 min), so a password cannot be guessed at argon2's speed.
/// Kept in memory on the leader: a restart forgets it, which only gives a guesser a few tries.
#[derive(Default)]
struct Lockouts {
    by_user: std::collections::HashMap<String, (u32, i64)>,
}

fn lockouts() -> &'static std::sync::Mutex<Lockouts> {
    static L: std::sync::OnceLock<std::sync::Mutex<Lockouts>> = std::sync::OnceLock::new();
    L.get_or_init(Default::default)
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong user name or password")]
    Wrong,
    #[error("too many failed logins for this user; try again in {0} s")]
    LockedOut(i64),
    #[error(transparent)]
    Other(#[from] Error),
}

impl From<LoginError> for Status {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Wrong => Status::unauthenticated(e.to_string()),
            LoginError::LockedOut(_) => Status::resource_exhausted(e.to_string()),
            LoginError::Other(e) => Status::from(e),
        }
    }
}

/// Console login: checks the password and creates a session token (recorded in the audit log
/// either way). Unknown users and wrong passwords get the same answer in the same time.
pub async fn login(
    ctx: &Context,
    user: &str,
    password: &str,
    ttl_secs: u64,
    from: &str,
) -> std::result::Result<(String, ApiToken), LoginError> {
    let now = ctx.now_ms();
    let locked_for = {
        let l = lockouts()
            .lock()
            .map_err(|_| Error::Unavailable("login state poisoned".into()))?;
        l.by_user
            .get(user)
            .map(|(_, until)| until - now)
            .filter(|ms| *ms > 0)
    };
    let audit = |outcome: &str| AuditRecord {
        at_ms: now,
        user: user.chars().take(64).collect(),
        action: "Login".into(),
        workspace: String::new(),
        target: String::new(),
        from: from.to_string(),
        outcome: outcome.to_string(),
    };
    if let Some(ms) = locked_for {
        let secs = (ms + 999) / 1000;
        tracing::warn!(%from, user, "console login refused: locked out after failed logins");
        let _ = ctx
            .store
            .propose(Command::RecordAudit {
                record: audit("denied: locked out after failed logins"),
            })
            .await;
        return Err(LoginError::LockedOut(secs));
    }
    let stored = ctx.store.user(user)?;
    let hash = stored
        .as_ref()
        .map(|u| u.password_hash.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| decoy_hash().to_string());
    let typed = password.to_string();
    let matched = password.len() <= MAX_PASSWORD
        && tokio::task::spawn_blocking(move || verify_password(&typed, &hash))
            .await
            .unwrap_or(false)
        && stored.as_ref().is_some_and(|u| !u.password_hash.is_empty());
    if !matched {
        {
            let mut l = lockouts()
                .lock()
                .map_err(|_| Error::Unavailable("login state poisoned".into()))?;
            // Bounded: names of users that do not exist are not remembered past a few thousand.
            if l.by_user.len() > 10_000 {
                l.by_user.clear();
            }
            let entry = l.by_user.entry(user.to_string()).or_insert((0, 0));
            entry.0 += 1;
            if entry.0 >= FREE_FAILURES {
                let doubling = (entry.0 - FREE_FAILURES).min(20);
                entry.1 = now + (2000i64 << doubling).min(MAX_LOCKOUT_MS);
            }
        }
        tracing::warn!(%from, user, "console login refused: wrong user name or password");
        let _ = ctx
            .store
            .propose(Command::RecordAudit {
                record: audit("denied: wrong user name or password"),
            })
            .await;
        return Err(LoginError::Wrong);
    }
    if let Ok(mut l) = lockouts().lock() {
        l.by_user.remove(user);
    }
    let ttl = match ttl_secs {
        0 => SESSION_SECS,
        t => t.min(MAX_SESSION_SECS),
    };
    let expires = now.saturating_add((ttl as i64).saturating_mul(1000));
    let (token, record) = new_token(user, "console session", now, expires);
    ctx.store
        .propose(Command::Audited {
            record: AuditRecord {
                target: record.id.clone(),
                ..audit("ok")
            },
            change: Box::new(Command::CreateToken {
                token: record.clone(),
            }),
        })
        .await?;
    tracing::info!(%from, user, token = %record.id, "console login");
    Ok((token, record))
}
