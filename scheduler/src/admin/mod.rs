//! The admin gRPC service behind the `ferry` CLI.
//!
//! Every call is authenticated by the interceptor in [`crate::auth`] before it arrives here;
//! each handler checks the caller's role for what it does, validates fully, and only then
//! proposes a command, wrapped with an audit record of who did it, from where, and when, so a
//! refused request changes nothing and every change is accounted for. Handlers live with their
//! subject: [`access`] (users, tokens, workspaces, audit), [`catalog`] (groups, agents, data
//! sources), [`tasks`] (submit, run, wizard), [`instances`] (list, logs, rerun, kill, freeze,
//! backfill), [`dag`] (the graph around an instance), [`alerts`] (rules and deliveries).

mod access;
pub(crate) use access::token_info;
mod alerts;
mod catalog;
mod dag;
mod instances;
mod tasks;

use crate::auth::{Action, Principal, principal};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::state::command::{Applied, Command};
use ferry_proto::admin::v1 as pb;
use ferry_proto::admin::v1::admin_service_server::AdminService;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct AdminApi {
    ctx: Arc<Context>,
}

impl AdminApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    /// Refuses the call (and records the refusal) unless `p` may do `action` in `workspace`.
    async fn allow(
        &self,
        p: &Principal,
        action: Action,
        workspace: &str,
        call: &str,
        target: &str,
    ) -> Result<()> {
        match p.check(action, workspace) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(user = %p.user, call, target, reason = %e, "admin call refused");
                let record = p.audit(call, target, &format!("denied: {e}"), self.ctx.now_ms());
                // Best effort: a refusal that cannot be recorded is still a refusal.
                let _ = self
                    .ctx
                    .store
                    .propose(Command::RecordAudit { record })
                    .await;
                Err(e)
            }
        }
    }

    /// Proposes `change` with an audit record of `p` doing `call` on `target`.
    async fn audited(
        &self,
        p: &Principal,
        call: &str,
        target: &str,
        change: Command,
    ) -> Result<Applied> {
        let record = p.audit(call, target, "ok", self.ctx.now_ms());
        self.ctx
            .store
            .propose(Command::Audited {
                record,
                change: Box::new(change),
            })
            .await
    }
}

/// Names of groups, data sources, tasks, users and workspaces: letters, digits, `_`, `-` and
/// `.`, 1 to 64.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name \"{name}\" is invalid: use 1 to 64 letters, digits, '_', '-' or '.'"
        )))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::InstanceEvent, Status>> + Send>>;

/// Each method: the caller, then the handler of its subject.
macro_rules! handle {
    ($self:ident, $request:ident, $module:ident :: $f:ident) => {{
        let p = principal(&$request)?;
        Ok(Response::new(
            $module::$f($self, &p, $request.into_inner()).await?,
        ))
    }};
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn whoami(
        &self,
        r: Request<pb::WhoamiRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        handle!(self, r, access::whoami)
    }
    async fn create_user(
        &self,
        r: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        handle!(self, r, access::create_user)
    }
    async fn list_users(
        &self,
        r: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        handle!(self, r, access::list_users)
    }
    async fn set_role(
        &self,
        r: Request<pb::SetRoleRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        handle!(self, r, access::set_role)
    }
    async fn create_token(
        &self,
        r: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        handle!(self, r, access::create_token)
    }
    async fn list_tokens(
        &self,
        r: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        handle!(self, r, access::list_tokens)
    }
    async fn revoke_token(
        &self,
        r: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        handle!(self, r, access::revoke_token)
    }
    async fn create_workspace(
        &self,
        r: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::WorkspaceInfo>, Status> {
        handle!(self, r, access::create_workspace)
    }
    async fn list_workspaces(
        &self,
        r: Request<pb::ListWorkspacesRequest>,
    ) -> Result<Response<pb::ListWorkspacesResponse>, Status> {
        handle!(self, r, access::list_workspaces)
    }
    async fn bind_group(
        &self,
        r: Request<pb::BindGroupRequest>,
    ) -> Result<Response<pb::GroupInfo>, Status> {
        handle!(self, r, catalog::bind_group)
    }
    async fn list_audit(
        &self,
        r: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        handle!(self, r, access::list_audit)
    }

    async fn reseal_secrets(
        &self,
        r: Request<pb::ResealSecretsRequest>,
    ) -> Result<Response<pb::ResealSecretsResponse>, Status> {
        handle!(self, r, access::reseal_secrets)
    }

    async fn set_password(
        &self,
        r: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        handle!(self, r, access::set_password)
    }

    async fn create_group(
        &self,
        r: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        handle!(self, r, catalog::create_group)
    }
    async fn rotate_group_token(
        &self,
        r: Request<pb::RotateGroupTokenRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        handle!(self, r, catalog::rotate_group_token)
    }
    async fn list_groups(
        &self,
        r: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        handle!(self, r, catalog::list_groups)
    }
    async fn list_agents(
        &self,
        r: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        handle!(self, r, catalog::list_agents)
    }
    async fn drain_agent(
        &self,
        r: Request<pb::DrainAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        handle!(self, r, catalog::drain_agent)
    }
    async fn revoke_agent(
        &self,
        r: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        handle!(self, r, catalog::revoke_agent)
    }
    async fn add_data_source(
        &self,
        r: Request<pb::AddDataSourceRequest>,
    ) -> Result<Response<pb::DataSourceInfo>, Status> {
        handle!(self, r, catalog::add_data_source)
    }
    async fn list_data_sources(
        &self,
        r: Request<pb::ListDataSourcesRequest>,
    ) -> Result<Response<pb::ListDataSourcesResponse>, Status> {
        handle!(self, r, catalog::list_data_sources)
    }
    async fn get_data_source(
        &self,
        r: Request<pb::GetDataSourceRequest>,
    ) -> Result<Response<pb::DataSourceInfo>, Status> {
        handle!(self, r, catalog::get_data_source)
    }
    async fn remove_data_source(
        &self,
        r: Request<pb::RemoveDataSourceRequest>,
    ) -> Result<Response<pb::RemoveDataSourceResponse>, Status> {
        handle!(self, r, catalog::remove_data_source)
    }
    async fn test_data_source(
        &self,
        r: Request<pb::TestDataSourceRequest>,
    ) -> Result<Response<pb::TestDataSourceResponse>, Status> {
        handle!(self, r, catalog::test_data_source)
    }

    async fn create_task(
        &self,
        r: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        handle!(self, r, tasks::create_task)
    }
    async fn list_tasks(
        &self,
        r: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        handle!(self, r, tasks::list_tasks)
    }
    async fn run_task(
        &self,
        r: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::InstanceInfo>, Status> {
        handle!(self, r, tasks::run_task)
    }
    async fn get_instance(
        &self,
        r: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::InstanceInfo>, Status> {
        handle!(self, r, instances::get_instance)
    }
    async fn list_instances(
        &self,
        r: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        handle!(self, r, instances::list_instances)
    }

    async fn get_task(
        &self,
        r: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        handle!(self, r, tasks::get_task)
    }
    async fn wizard_script(
        &self,
        r: Request<pb::WizardScriptRequest>,
    ) -> Result<Response<pb::WizardScriptResponse>, Status> {
        handle!(self, r, tasks::wizard_script)
    }
    async fn freeze_task(
        &self,
        r: Request<pb::FreezeTaskRequest>,
    ) -> Result<Response<pb::TaskInfo>, Status> {
        handle!(self, r, tasks::freeze_task)
    }
    async fn rerun_instance(
        &self,
        r: Request<pb::RerunInstanceRequest>,
    ) -> Result<Response<pb::RerunInstanceResponse>, Status> {
        handle!(self, r, instances::rerun_instance)
    }
    async fn kill_instance(
        &self,
        r: Request<pb::InstanceActionRequest>,
    ) -> Result<Response<pb::InstanceInfo>, Status> {
        handle!(self, r, instances::kill_instance)
    }
    async fn freeze_instance(
        &self,
        r: Request<pb::FreezeInstanceRequest>,
    ) -> Result<Response<pb::InstanceInfo>, Status> {
        handle!(self, r, instances::freeze_instance)
    }
    async fn mark_success(
        &self,
        r: Request<pb::InstanceActionRequest>,
    ) -> Result<Response<pb::InstanceInfo>, Status> {
        handle!(self, r, instances::mark_success)
    }
    async fn backfill(
        &self,
        r: Request<pb::BackfillRequest>,
    ) -> Result<Response<pb::BackfillResponse>, Status> {
        handle!(self, r, instances::backfill)
    }
    async fn get_dag(
        &self,
        r: Request<pb::GetDagRequest>,
    ) -> Result<Response<pb::DagResponse>, Status> {
        handle!(self, r, dag::get_dag)
    }
    async fn set_group_options(
        &self,
        r: Request<pb::SetGroupOptionsRequest>,
    ) -> Result<Response<pb::GroupInfo>, Status> {
        handle!(self, r, catalog::set_group_options)
    }

    type WatchInstanceStream = EventStream;

    async fn watch_instance(
        &self,
        r: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<Self::WatchInstanceStream>, Status> {
        handle!(self, r, instances::watch_instance)
    }
    async fn get_logs(
        &self,
        r: Request<pb::GetLogsRequest>,
    ) -> Result<Response<pb::GetLogsResponse>, Status> {
        handle!(self, r, instances::get_logs)
    }

    async fn add_alert_rule(
        &self,
        r: Request<pb::AddAlertRuleRequest>,
    ) -> Result<Response<pb::AlertRuleInfo>, Status> {
        handle!(self, r, alerts::add_alert_rule)
    }
    async fn list_alert_rules(
        &self,
        r: Request<pb::ListAlertRulesRequest>,
    ) -> Result<Response<pb::ListAlertRulesResponse>, Status> {
        handle!(self, r, alerts::list_alert_rules)
    }
    async fn remove_alert_rule(
        &self,
        r: Request<pb::RemoveAlertRuleRequest>,
    ) -> Result<Response<pb::RemoveAlertRuleResponse>, Status> {
        handle!(self, r, alerts::remove_alert_rule)
    }
    async fn list_alert_deliveries(
        &self,
        r: Request<pb::ListAlertDeliveriesRequest>,
    ) -> Result<Response<pb::ListAlertDeliveriesResponse>, Status> {
        handle!(self, r, alerts::list_alert_deliveries)
    }
}
