//! Users, API tokens, workspaces and the audit log.

use super::{AdminApi, check_name};
use crate::auth::{Action, Principal, new_token};
use crate::error::{Error, Result};
use crate::state::command::Command;
use crate::state::model::{ApiToken, Role, User};
use ferry_proto::admin::v1 as pb;

fn user_info(u: &User) -> pb::UserInfo {
    pb::UserInfo {
        name: u.name.clone(),
        cluster_admin: u.cluster_admin,
        roles: u
            .roles
            .iter()
            .map(|(w, r)| (w.clone(), r.as_str().to_string()))
            .collect(),
        created_ms: u.created_ms,
        token_id: String::new(),
        workspace: String::new(),
        has_password: !u.password_hash.is_empty(),
    }
}

pub(crate) fn token_info(t: &ApiToken) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        user: t.user.clone(),
        name: t.name.clone(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        revoked_ms: t.revoked_ms,
    }
}

fn require_user(api: &AdminApi, name: &str) -> Result<User> {
    api.ctx.store.user(name)?.ok_or_else(|| Error::NotFound {
        what: "user",
        name: name.to_string(),
        hint: "see `ferry user list`",
    })
}

/// The user a call acts on: the caller when `requested` is empty or names them; anyone else
/// only for a cluster admin. The user must exist.
async fn own_or_administered(
    api: &AdminApi,
    p: &Principal,
    requested: &str,
    call: &str,
) -> Result<String> {
    let user = if requested.is_empty() {
        p.user.clone()
    } else {
        requested.to_string()
    };
    if user != p.user {
        api.allow(p, Action::AdministerCluster, &p.workspace, call, &user)
            .await?;
    }
    require_user(api, &user)?;
    Ok(user)
}

pub async fn whoami(api: &AdminApi, p: &Principal, _: pb::WhoamiRequest) -> Result<pb::UserInfo> {
    let u = require_user(api, &p.user)?;
    Ok(pb::UserInfo {
        token_id: p.token_id.clone(),
        workspace: p.workspace.clone(),
        ..user_info(&u)
    })
}

pub async fn create_user(
    api: &AdminApi,
    p: &Principal,
    req: pb::CreateUserRequest,
) -> Result<pb::UserInfo> {
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "CreateUser",
        &req.name,
    )
    .await?;
    check_name("user", &req.name)?;
    api.audited(
        p,
        "CreateUser",
        &req.name,
        Command::CreateUser {
            name: req.name.clone(),
            cluster_admin: req.cluster_admin,
            at_ms: api.ctx.now_ms(),
        },
    )
    .await?;
    Ok(user_info(&require_user(api, &req.name)?))
}

pub async fn list_users(
    api: &AdminApi,
    p: &Principal,
    _: pb::ListUsersRequest,
) -> Result<pb::ListUsersResponse> {
    api.allow(
        p,
        Action::AdministerWorkspace,
        &p.workspace,
        "ListUsers",
        "",
    )
    .await?;
    let users = api
        .ctx
        .store
        .users()?
        .iter()
        // A workspace admin sees the workspace's members; a cluster admin sees everyone.
        .filter(|u| p.cluster_admin || u.roles.contains_key(&p.workspace))
        .map(user_info)
        .collect();
    Ok(pb::ListUsersResponse { users })
}

pub async fn set_role(
    api: &AdminApi,
    p: &Principal,
    req: pb::SetRoleRequest,
) -> Result<pb::UserInfo> {
    let target = format!("{} in {}", req.user, p.workspace);
    api.allow(
        p,
        Action::AdministerWorkspace,
        &p.workspace,
        "SetRole",
        &target,
    )
    .await?;
    let role = match req.role.as_str() {
        "" => None,
        r => Some(Role::parse(r).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "role \"{r}\" is not one of viewer, operator, developer, admin"
            ))
        })?),
    };
    api.audited(
        p,
        "SetRole",
        &target,
        Command::SetRole {
            user: req.user.clone(),
            workspace: p.workspace.clone(),
            role,
        },
    )
    .await?;
    Ok(user_info(&require_user(api, &req.user)?))
}

pub async fn create_token(
    api: &AdminApi,
    p: &Principal,
    req: pb::CreateTokenRequest,
) -> Result<pb::CreateTokenResponse> {
    let user = own_or_administered(api, p, &req.user, "CreateToken").await?;
    let now = api.ctx.now_ms();
    let expires = if req.ttl_secs == 0 {
        0
    } else {
        now.saturating_add((req.ttl_secs as i64).saturating_mul(1000))
    };
    let (token, record) = new_token(&user, &req.name, now, expires);
    let info = token_info(&record);
    api.audited(
        p,
        "CreateToken",
        &format!("{} for {user}", record.id),
        Command::CreateToken { token: record },
    )
    .await?;
    Ok(pb::CreateTokenResponse {
        token,
        info: Some(info),
    })
}

pub async fn list_tokens(
    api: &AdminApi,
    p: &Principal,
    _: pb::ListTokensRequest,
) -> Result<pb::ListTokensResponse> {
    let tokens = api
        .ctx
        .store
        .tokens()?
        .iter()
        .filter(|t| p.cluster_admin || t.user == p.user)
        .map(token_info)
        .collect();
    Ok(pb::ListTokensResponse { tokens })
}

pub async fn revoke_token(
    api: &AdminApi,
    p: &Principal,
    req: pb::RevokeTokenRequest,
) -> Result<pb::TokenInfo> {
    let token = api
        .ctx
        .store
        .tokens()?
        .into_iter()
        .find(|t| t.id == req.id)
        .ok_or_else(|| Error::NotFound {
            what: "token",
            name: req.id.clone(),
            hint: "see `ferry token list`",
        })?;
    if token.user != p.user {
        api.allow(
            p,
            Action::AdministerCluster,
            &p.workspace,
            "RevokeToken",
            &req.id,
        )
        .await?;
    }
    api.audited(
        p,
        "RevokeToken",
        &req.id,
        Command::RevokeToken {
            id: req.id.clone(),
            at_ms: api.ctx.now_ms(),
        },
    )
    .await?;
    let t = api
        .ctx
        .store
        .tokens()?
        .into_iter()
        .find(|t| t.id == req.id)
        .unwrap_or(token);
    Ok(token_info(&t))
}

pub async fn create_workspace(
    api: &AdminApi,
    p: &Principal,
    req: pb::CreateWorkspaceRequest,
) -> Result<pb::WorkspaceInfo> {
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "CreateWorkspace",
        &req.name,
    )
    .await?;
    check_name("workspace", &req.name)?;
    let at_ms = api.ctx.now_ms();
    api.audited(
        p,
        "CreateWorkspace",
        &req.name,
        Command::CreateWorkspace {
            name: req.name.clone(),
            at_ms,
        },
    )
    .await?;
    Ok(pb::WorkspaceInfo {
        name: req.name,
        created_ms: at_ms,
    })
}

pub async fn list_workspaces(
    api: &AdminApi,
    p: &Principal,
    _: pb::ListWorkspacesRequest,
) -> Result<pb::ListWorkspacesResponse> {
    let workspaces = api
        .ctx
        .store
        .workspaces()?
        .into_iter()
        .filter(|w| p.role_in(&w.name).is_some())
        .map(|w| pb::WorkspaceInfo {
            name: w.name,
            created_ms: w.created_ms,
        })
        .collect();
    Ok(pb::ListWorkspacesResponse { workspaces })
}

pub async fn list_audit(
    api: &AdminApi,
    p: &Principal,
    req: pb::ListAuditRequest,
) -> Result<pb::ListAuditResponse> {
    api.allow(
        p,
        Action::AdministerWorkspace,
        &p.workspace,
        "ListAudit",
        "",
    )
    .await?;
    let limit = if req.limit == 0 {
        200
    } else {
        req.limit.min(10_000)
    } as usize;
    // Workspace admins read their workspace's records; cluster admins read all.
    let mut records: Vec<_> = api
        .ctx
        .store
        .audit(
            req.since_ms,
            if p.cluster_admin { limit } else { limit * 20 },
        )?
        .into_iter()
        .filter(|r| p.cluster_admin || r.workspace == p.workspace)
        .collect();
    let skip = records.len().saturating_sub(limit);
    let entries = records
        .drain(skip..)
        .map(|r| pb::AuditEntry {
            at_ms: r.at_ms,
            user: r.user,
            action: r.action,
            workspace: r.workspace,
            target: r.target,
            from: r.from,
            outcome: r.outcome,
        })
        .collect();
    Ok(pb::ListAuditResponse { entries })
}

pub async fn reseal_secrets(
    api: &AdminApi,
    p: &Principal,
    _: pb::ResealSecretsRequest,
) -> Result<pb::ResealSecretsResponse> {
    api.allow(
        p,
        Action::AdministerCluster,
        &p.workspace,
        "ResealSecrets",
        "",
    )
    .await?;
    let mut datasources = 0;
    for mut record in api.ctx.store.datasources()? {
        if api.ctx.secrets.reseal(&mut record.config)? {
            let name = record.name.clone();
            api.audited(p, "ResealSecrets", &name, Command::PutDataSource { record })
                .await?;
            datasources += 1;
        }
    }
    let mut task_versions = 0;
    for v in api.ctx.store.all_versions()? {
        if let Some(job_text) = api.ctx.secrets.reseal_job_text(&v.job_text)? {
            api.audited(
                p,
                "ResealSecrets",
                &format!("{} v{}", v.task, v.version),
                Command::ResealJobText {
                    task: v.task.clone(),
                    version: v.version,
                    job_text,
                },
            )
            .await?;
            task_versions += 1;
        }
    }
    // Alert webhooks carry tokens too; counted with the data sources (secrets held by the
    // catalog).
    for mut rule in api.ctx.store.alert_rules()? {
        let url = rule.url.expose();
        if url.starts_with("sealed:") && !api.ctx.secrets.is_current(url) {
            api.ctx.secrets.open_one(&mut rule.url)?;
            api.ctx.secrets.seal_one(&mut rule.url)?;
            let id = rule.id();
            api.audited(p, "ResealSecrets", &id, Command::PutAlertRule { rule })
                .await?;
            datasources += 1;
        }
    }
    Ok(pb::ResealSecretsResponse {
        key_id: api.ctx.secrets.key_id().to_string(),
        datasources,
        task_versions,
    })
}

/// Sets or removes a console password: one's own, or anyone's for a cluster admin.
pub async fn set_password(
    api: &AdminApi,
    p: &Principal,
    req: pb::SetPasswordRequest,
) -> Result<pb::UserInfo> {
    let user = own_or_administered(api, p, &req.user, "SetPassword").await?;
    let hash = if req.password.is_empty() {
        String::new()
    } else {
        let password = req.password;
        tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
            .await
            .map_err(|e| Error::Unavailable(format!("password hashing stopped: {e}")))??
    };
    let what = if hash.is_empty() { "removed" } else { "set" };
    api.audited(
        p,
        "SetPassword",
        &format!("{user} ({what})"),
        Command::SetPassword {
            user: user.clone(),
            hash,
        },
    )
    .await?;
    Ok(user_info(&require_user(api, &user)?))
}
