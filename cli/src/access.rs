//! `ferry login`, `whoami`, `user`, `token`, `workspace` and `audit`: who may use the scheduler,
//! and what they did.

use crate::client::{Admin, Credentials, remove_credentials, save_credentials, status};
use crate::format::{table, time};
use anyhow::{Context, bail};
use clap::Subcommand;
use ferry_proto::admin::v1 as pb;
use std::io::Read;

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user (cluster admins); give it a token with `ferry token create --user`.
    Create {
        name: String,
        /// May manage users, workspaces, resource groups and agents.
        #[arg(long)]
        cluster_admin: bool,
    },
    /// Users of the workspace (all users, for cluster admins).
    List,
    /// Give a user a role in the workspace: viewer, operator, developer or admin.
    Grant {
        name: String,
        #[arg(long)]
        role: String,
    },
    /// Take a user's role in the workspace away.
    Revoke { name: String },
    /// Set the password a user logs in to the web console with (yours without NAME; anyone's
    /// as a cluster admin). Asked twice on a terminal, without echo.
    Passwd {
        name: Option<String>,
        /// Read the password from the first line of standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
        /// Remove the password: the user then works with API tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        remove: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create an API token (for yourself, or for --user as a cluster admin); shown once.
    Create {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 90d, 12h, 30m (default: never expires).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Your tokens (everyone's, for cluster admins).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Create a workspace (cluster admins).
    Create { name: String },
    /// Workspaces you have a role in.
    List,
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Re-encrypt every stored secret under the current master key (cluster admins). Run it
    /// after starting the schedulers with a new --master-key-file and the old one in
    /// --previous-master-key-file; then the old key can go.
    Reseal,
}

pub async fn secrets(admin: &mut Admin, cmd: SecretsCmd) -> anyhow::Result<i32> {
    match cmd {
        SecretsCmd::Reseal => {
            let r = admin
                .reseal_secrets(pb::ResealSecretsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "resealed under key {}: {} data source(s), {} task version(s) with inline passwords",
                r.key_id, r.datasources, r.task_versions
            );
        }
    }
    Ok(0)
}

/// `90d` / `12h` / `30m` / `45s` -> seconds.
pub fn duration_secs(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("\"{text}\" is not a duration like 90d, 12h or 30m"))?;
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" | "" => 1,
        _ => bail!("\"{text}\": use d, h, m or s"),
    };
    Ok(n.saturating_mul(scale))
}

fn print_user(u: &pb::UserInfo) {
    let mut roles: Vec<String> = u.roles.iter().map(|(w, r)| format!("{w}:{r}")).collect();
    roles.sort();
    println!(
        "user {}{}  roles: {}",
        u.name,
        if u.cluster_admin {
            " (cluster admin)"
        } else {
            ""
        },
        if roles.is_empty() {
            "-".to_string()
        } else {
            roles.join(", ")
        }
    );
}

fn token_rows(tokens: &[pb::TokenInfo]) {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.user.clone(),
                t.name.clone(),
                time(t.created_ms),
                if t.expires_ms > 0 {
                    time(t.expires_ms)
                } else {
                    "never".into()
                },
                if t.revoked_ms > 0 {
                    format!("revoked {}", time(t.revoked_ms))
                } else {
                    "active".into()
                },
            ]
        })
        .collect();
    table(
        &["ID", "USER", "NAME", "CREATED", "EXPIRES", "STATE"],
        &rows,
    );
}

/// Reads a token given on standard input.
pub fn token_from_stdin() -> anyhow::Result<String> {
    let mut t = String::new();
    std::io::stdin()
        .read_to_string(&mut t)
        .context("cannot read the token from standard input")?;
    Ok(t.trim().to_string())
}

/// Checks the token against the scheduler and saves it.
pub async fn login(
    admin: &mut Admin,
    schedulers: &[String],
    token: String,
    workspace: Option<String>,
) -> anyhow::Result<i32> {
    let me = admin
        .whoami(pb::WhoamiRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let path = save_credentials(&Credentials {
        schedulers: schedulers.to_vec(),
        token,
        workspace,
    })?;
    println!(
        "logged in as {} (token {}); saved to {}",
        me.name,
        me.token_id,
        path.display()
    );
    Ok(0)
}

pub fn logout() -> anyhow::Result<i32> {
    if remove_credentials()? {
        println!("logged out: saved credentials removed");
    } else {
        println!("no saved credentials");
    }
    Ok(0)
}

pub async fn whoami(admin: &mut Admin) -> anyhow::Result<i32> {
    let me = admin
        .whoami(pb::WhoamiRequest {})
        .await
        .map_err(status)?
        .into_inner();
    print_user(&me);
    println!("token {}, workspace {}", me.token_id, me.workspace);
    Ok(0)
}

pub async fn user(admin: &mut Admin, cmd: UserCmd) -> anyhow::Result<i32> {
    match cmd {
        UserCmd::Create {
            name,
            cluster_admin,
        } => {
            let u = admin
                .create_user(pb::CreateUserRequest {
                    name,
                    cluster_admin,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_user(&u);
        }
        UserCmd::List => {
            let r = admin
                .list_users(pb::ListUsersRequest {})
                .await
                .map_err(status)?
                .into_inner();
            for u in &r.users {
                print_user(u);
            }
        }
        UserCmd::Grant { name, role } => {
            let u = admin
                .set_role(pb::SetRoleRequest { user: name, role })
                .await
                .map_err(status)?
                .into_inner();
            print_user(&u);
        }
        UserCmd::Passwd {
            name,
            password_stdin,
            remove,
        } => {
            let password = if remove {
                String::new()
            } else {
                read_password(password_stdin)?
            };
            let u = admin
                .set_password(pb::SetPasswordRequest {
                    user: name.unwrap_or_default(),
                    password,
                })
                .await
                .map_err(status)?
                .into_inner();
            if remove {
                println!("password of {} removed", u.name);
            } else {
                println!(
                    "password of {} set: log in to the console at the scheduler's address",
                    u.name
                );
            }
        }
        UserCmd::Revoke { name } => {
            let u = admin
                .set_role(pb::SetRoleRequest {
                    user: name,
                    role: String::new(),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_user(&u);
        }
    }
    Ok(0)
}

pub async fn token(admin: &mut Admin, cmd: TokenCmd) -> anyhow::Result<i32> {
    match cmd {
        TokenCmd::Create {
            user,
            name,
            expires_in,
        } => {
            let ttl_secs = expires_in
                .as_deref()
                .map(duration_secs)
                .transpose()?
                .unwrap_or(0);
            let r = admin
                .create_token(pb::CreateTokenRequest {
                    user: user.unwrap_or_default(),
                    name,
                    ttl_secs,
                })
                .await
                .map_err(status)?
                .into_inner();
            let info = r.info.unwrap_or_default();
            println!("token {} for {} (shown once):", info.id, info.user);
            println!("{}", r.token);
        }
        TokenCmd::List => {
            let r = admin
                .list_tokens(pb::ListTokensRequest {})
                .await
                .map_err(status)?
                .into_inner();
            token_rows(&r.tokens);
        }
        TokenCmd::Revoke { id } => {
            let t = admin
                .revoke_token(pb::RevokeTokenRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            println!("token {} of {} revoked", t.id, t.user);
        }
    }
    Ok(0)
}

pub async fn workspace(admin: &mut Admin, cmd: WorkspaceCmd) -> anyhow::Result<i32> {
    match cmd {
        WorkspaceCmd::Create { name } => {
            let w = admin
                .create_workspace(pb::CreateWorkspaceRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            println!("workspace {} created", w.name);
        }
        WorkspaceCmd::List => {
            let r = admin
                .list_workspaces(pb::ListWorkspacesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Vec<String>> = r
                .workspaces
                .iter()
                .map(|w| vec![w.name.clone(), time(w.created_ms)])
                .collect();
            table(&["WORKSPACE", "CREATED"], &rows);
        }
    }
    Ok(0)
}

pub async fn audit(admin: &mut Admin, since: Option<String>, limit: u32) -> anyhow::Result<i32> {
    let since_ms = match since {
        Some(s) => {
            let now = chrono::Utc::now().timestamp_millis();
            now - (duration_secs(&s)? as i64) * 1000
        }
        None => 0,
    };
    let r = admin
        .list_audit(pb::ListAuditRequest { since_ms, limit })
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<Vec<String>> = r
        .entries
        .iter()
        .map(|e| {
            vec![
                time(e.at_ms),
                e.user.clone(),
                e.action.clone(),
                e.workspace.clone(),
                e.target.clone(),
                e.from.clone(),
                e.outcome.clone(),
            ]
        })
        .collect();
    table(
        &[
            "WHEN",
            "USER",
            "ACTION",
            "WORKSPACE",
            "TARGET",
            "FROM",
            "OUTCOME",
        ],
        &rows,
    );
    Ok(0)
}

/// The new password: from standard input's first line, or asked twice on the terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no terminal to ask for the password on: pass it with --password-stdin");
    }
    let first = rpassword::prompt_password("new password: ")?;
    let second = rpassword::prompt_password("again: ")?;
    if first != second {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_secs("90d").ok(), Some(90 * 86_400));
        assert_eq!(duration_secs("12h").ok(), Some(12 * 3600));
        assert_eq!(duration_secs("30").ok(), Some(30));
        assert!(duration_secs("soon").is_err());
        assert!(duration_secs("3w").is_err());
    }
}
