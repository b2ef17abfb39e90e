//! The REST API: the admin operations over HTTP and JSON, for the web console and for scripts
//! that would rather not speak gRPC.
//!
//! Nothing here decides anything. Each route builds the protobuf request of one admin RPC from
//! the path, the query string and the JSON body (the proto field names; missing fields take
//! their defaults) and calls the very `AdminService` / `ClusterService` method the gRPC server
//! calls, after the same authentication (bearer token, `X-Ferry-Workspace`) and the same leader
//! gate. So the CLI, the console and a `curl` script cannot disagree about what an operation does
//! or who may do it. The one route table below also produces the OpenAPI document
//! (`/api/v1/openapi.json`) from the messages' derived schemas, so the document describes exactly
//! what is served.
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with the HTTP status of the gRPC
//! code; a body that is not JSON says where (line and column), an unknown field or parameter is
//! refused by name rather than ignored (a misspelt filter would otherwise list everything).

use crate::admin::AdminApi;
use crate::auth::{WORKSPACE_HEADER, authenticate, bearer, workspace_or_default};
use crate::cluster::{self, ClusterApi};
use crate::context::Context;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_proto::admin::v1 as pb;
use ferry_proto::admin::v1::admin_service_server::AdminService;
use ferry_proto::admin::v1::cluster_service_server::ClusterService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use tokio_stream::StreamExt;
use tonic::{Code, Status};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathItem, PathsBuilder, Ref, RefOr, Required, ResponseBuilder, ResponsesBuilder,
};
use utoipa::{PartialSchema, ToSchema};

/// Where the API lives; the version is part of the path so a v2 can sit beside it.
pub const BASE: &str = "/api/v1";

/// Largest request body (a job file may be large; the gRPC side allows the same).
const MAX_BODY: usize = 64 << 20;

#[derive(Clone)]
struct Rest {
    ctx: Arc<Context>,
    admin: Arc<AdminApi>,
    cluster: Arc<ClusterApi>,
}

/// An error answer: the gRPC code's name and HTTP status, and the message that says what to do.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `unauthenticated`, `permission_denied`, `not_found`,
    /// `already_exists`, `failed_precondition`, `unavailable`, `internal`, ...
    pub code: String,
    pub message: String,
}

/// The HTTP status and error code name of a gRPC code.
pub fn http_status(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::Ok => (StatusCode::OK, "ok"),
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "invalid_argument"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        Code::FailedPrecondition | Code::Aborted => (StatusCode::CONFLICT, "failed_precondition"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        Code::Cancelled => (StatusCode::REQUEST_TIMEOUT, "cancelled"),
        Code::Unknown | Code::Internal | Code::DataLoss => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

fn error_response(status: &Status) -> Response {
    let (http, code) = http_status(status.code());
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: status.message().to_string(),
        },
    };
    (http, json_body(&body)).into_response()
}

fn json_body<T: Serialize>(value: &T) -> ([(header::HeaderName, HeaderValue); 2], Vec<u8>) {
    // Serializing plain data structs cannot fail; an empty object is the safe fallback.
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        bytes,
    )
}

fn bad_request(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

/// The fields a request message accepts with their schemas (its schema's properties).
type Fields = BTreeMap<String, RefOr<Schema>>;

fn fields_of<T: PartialSchema>() -> Fields {
    match T::schema() {
        RefOr::T(Schema::Object(o)) => o.properties.into_iter().collect(),
        _ => Fields::new(),
    }
}

fn refuse_unknown(
    known: &Fields,
    keys: impl Iterator<Item = String>,
    place: &str,
) -> Result<(), Status> {
    let unknown: Vec<String> = keys.filter(|k| !known.contains_key(k)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let accepted = if known.is_empty() {
        "none".to_string()
    } else {
        known.keys().cloned().collect::<Vec<_>>().join(", ")
    };
    Err(bad_request(format!(
        "unknown {place} {}; this call accepts: {accepted}",
        unknown
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Builds the protobuf request from path parameters, the query string and (for POST, PUT and
/// PATCH) the JSON body.
async fn decode<T: DeserializeOwned + PartialSchema>(
    method: &Method,
    path: BTreeMap<String, String>,
    request: Request,
) -> Result<T, Status> {
    let query = request.uri().query().unwrap_or("").to_string();
    let has_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let fields = fields_of::<T>();
    if !has_body {
        // Query and path parameters, typed by the message's schema (numbers, booleans).
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        refuse_unknown(
            &fields,
            pairs.iter().map(|(k, _)| k.clone()),
            "query parameter",
        )?;
        let mut object = serde_json::Map::new();
        for (k, v) in pairs {
            if path.contains_key(&k) {
                return Err(bad_request(format!(
                    "\"{k}\" is given in the path; leave it out of the query string"
                )));
            }
            if object.contains_key(&k) {
                return Err(bad_request(format!(
                    "query parameter \"{k}\" is given twice"
                )));
            }
            let typed = typed_parameter(fields.get(&k), &k, &v)?;
            object.insert(k, typed);
        }
        for (k, v) in path {
            object.insert(k, serde_json::Value::String(v));
        }
        return from_json(serde_json::Value::Object(object));
    }
    if !query.is_empty() {
        return Err(bad_request(
            "this call takes its parameters in the JSON body, not the query string",
        ));
    }
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| bad_request(format!("the request body could not be read: {e}")))?;
    let mut value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| bad_request(format!("the body is not valid JSON: {e}")))?
    };
    let serde_json::Value::Object(object) = &mut value else {
        return Err(bad_request("the body must be a JSON object"));
    };
    refuse_unknown(&fields, object.keys().cloned(), "field")?;
    for (k, v) in path {
        match object.get(&k) {
            Some(serde_json::Value::String(s)) if *s == v => {}
            Some(other) => {
                return Err(bad_request(format!(
                    "\"{k}\" is {other} in the body but \"{v}\" in the path; give it once"
                )));
            }
            None => {
                object.insert(k, serde_json::Value::String(v));
            }
        }
    }
    from_json(value)
}

fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Status> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let at = e.path().to_string();
        bad_request(format!("field \"{at}\": {}", e.inner()))
    })
}

/// A query parameter's text as the JSON value its field (of schema `field`) takes.
fn typed_parameter(
    field: Option<&RefOr<Schema>>,
    name: &str,
    text: &str,
) -> Result<serde_json::Value, Status> {
    let kind = match field {
        Some(RefOr::T(Schema::Object(field))) => match &field.schema_type {
            SchemaType::Type(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    };
    match kind {
        Some(Type::Integer) => text
            .trim()
            .parse::<i64>()
            .map(serde_json::Value::from)
            .map_err(|_| {
                bad_request(format!(
                    "query parameter \"{name}\" must be a whole number, not \"{text}\""
                ))
            }),
        Some(Type::Number) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number)
            .ok_or_else(|| {
                bad_request(format!(
                    "query parameter \"{name}\" must be a number, not \"{text}\""
                ))
            }),
        Some(Type::Boolean) => match text.trim() {
            "true" | "1" | "" => Ok(serde_json::Value::Bool(true)),
            "false" | "0" => Ok(serde_json::Value::Bool(false)),
            _ => Err(bad_request(format!(
                "query parameter \"{name}\" must be true or false, not \"{text}\""
            ))),
        },
        _ => Ok(serde_json::Value::String(text.to_string())),
    }
}

/// Authenticates the caller exactly as the gRPC interceptor does (after the same leader gate).
fn caller(
    rest: &Rest,
    headers: &HeaderMap,
    from: String,
    leader_only: bool,
) -> Result<crate::auth::Principal, Status> {
    if leader_only {
        cluster::gate(&rest.ctx)?;
    }
    let token = bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let workspace =
        workspace_or_default(headers.get(WORKSPACE_HEADER).and_then(|v| v.to_str().ok()));
    authenticate(
        &rest.ctx.store,
        &rest.ctx.clock,
        token.as_deref(),
        workspace,
        from.clone(),
    )
    .inspect_err(|status| {
        tracing::warn!(%from, reason = %status.message(), "REST call refused: not authenticated");
    })
}

/// `message` as the tonic request the service methods take, with its caller attached.
fn as_grpc<T>(message: T, principal: crate::auth::Principal) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(principal);
    request
}

fn peer(request: &Request) -> String {
    request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|c| c.remote_addr())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// One unary call: decode, authenticate, call the service method, answer JSON.
async fn unary<T, R, F, Fut>(
    rest: Rest,
    path: BTreeMap<String, String>,
    request: Request,
    leader_only: bool,
    call: F,
) -> Response
where
    T: DeserializeOwned + PartialSchema,
    R: Serialize,
    F: FnOnce(Rest, tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let method = request.method().clone();
    let headers = request.headers().clone();
    let from = peer(&request);
    let result = async {
        // Authenticate first: an anonymous caller learns nothing, not even a decoding error.
        let principal = caller(&rest, &headers, from, leader_only)?;
        let message = decode::<T>(&method, path, request).await?;
        call(rest, as_grpc(message, principal)).await
    }
    .await;
    match result {
        Ok(response) => (StatusCode::OK, json_body(response.get_ref())).into_response(),
        Err(status) => error_response(&status),
    }
}

/// The instance's changes, progress and log lines as server-sent events (`event: state |
/// progress | log`, `data:` the message as JSON), until the instance ends.
async fn events(State(rest): State<Rest>, Path(id): Path<String>, request: Request) -> Response {
    let headers = request.headers().clone();
    let from = peer(&request);
    let call = async {
        let principal = caller(&rest, &headers, from, true)?;
        AdminService::watch_instance(
            &*rest.admin,
            as_grpc(pb::GetInstanceRequest { id }, principal),
        )
        .await
    };
    let stream = match call.await {
        Ok(response) => response.into_inner(),
        Err(status) => return error_response(&status),
    };
    let events = stream.map(|item| {
        let event = match item {
            Ok(pb::InstanceEvent { body: Some(body) }) => {
                let (name, data) = match &body {
                    pb::instance_event::Body::State(s) => ("state", serde_json::to_string(s)),
                    pb::instance_event::Body::Progress(p) => ("progress", serde_json::to_string(p)),
                    pb::instance_event::Body::Log(l) => ("log", serde_json::to_string(l)),
                };
                Event::default()
                    .event(name)
                    .data(data.unwrap_or_else(|_| "{}".into()))
            }
            Ok(pb::InstanceEvent { body: None }) => Event::default().comment("empty"),
            Err(status) => {
                let (_, code) = http_status(status.code());
                let body = ErrorDetail {
                    code: code.to_string(),
                    message: status.message().to_string(),
                };
                Event::default()
                    .event("error")
                    .data(serde_json::to_string(&body).unwrap_or_else(|_| "{}".into()))
            }
        };
        Ok::<_, std::convert::Infallible>(event)
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Console login: user name and password for a session token (the one call without a token).
async fn login(State(rest): State<Rest>, request: Request) -> Response {
    let from = peer(&request);
    let result = async {
        cluster::gate(&rest.ctx)?;
        let req = decode::<pb::LoginRequest>(&Method::POST, BTreeMap::new(), request).await?;
        let (token, record) =
            crate::auth::login(&rest.ctx, &req.user, &req.password, req.ttl_secs, &from).await?;
        Ok::<_, Status>(pb::CreateTokenResponse {
            token,
            info: Some(crate::admin::token_info(&record)),
        })
    }
    .await;
    match result {
        Ok(answer) => (StatusCode::OK, json_body(&answer)).into_response(),
        Err(status) => error_response(&status),
    }
}

/// What the OpenAPI document says about one route.
struct RouteDoc {
    method: HttpMethod,
    path: &'static str,
    operation: &'static str,
    tag: &'static str,
    summary: &'static str,
    request: NamedSchema,
    response: NamedSchema,
    nested: Vec<NamedSchema>,
    path_params: Vec<&'static str>,
}

/// A component schema and its name.
type NamedSchema = (String, RefOr<Schema>);

fn schema_of<T: ToSchema>() -> (NamedSchema, Vec<NamedSchema>) {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    ((T::name().into_owned(), T::schema()), nested)
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn http_method(method: &str) -> HttpMethod {
    match method {
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "patch" => HttpMethod::Patch,
        "delete" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// The route table: `method path tag Service::rpc(Request) -> Response "summary"`. Each line is
/// one axum route calling the service method and one OpenAPI operation.
macro_rules! rest_routes {
    ($($method:ident $path:literal $tag:literal $service:ident :: $rpc:ident ( $req:ident ) -> $resp:ident $summary:literal;)*) => {
        fn api_router(rest: Rest) -> Router {
            let mut router: Router<Rest> = Router::new();
            $(
                router = router.route(
                    concat!("/api/v1", $path),
                    axum::routing::$method(
                        |State(rest): State<Rest>,
                         path: Option<Path<BTreeMap<String, String>>>,
                         request: Request| async move {
                            let path = path.map(|Path(p)| p).unwrap_or_default();
                            let leader_only = service_is_gated(stringify!($service));
                            unary::<pb::$req, pb::$resp, _, _>(
                                rest,
                                path,
                                request,
                                leader_only,
                                |rest, request| async move {
                                    rest_call!(rest, $service, $rpc, request)
                                },
                            )
                            .await
                        },
                    ),
                );
            )*
            router
                .route(concat!("/api/v1", "/instances/{id}/events"), axum::routing::get(events))
                .route("/api/v1/login", axum::routing::post(login))
                .route("/api/v1/openapi.json", axum::routing::get(openapi_json))
                .route("/api/v1", axum::routing::any(unknown_route))
                .route("/api/v1/{*rest}", axum::routing::any(unknown_route))
                .method_not_allowed_fallback(wrong_method)
                .with_state(rest)
        }

        fn route_docs() -> Vec<RouteDoc> {
            vec![$({
                let (request, mut nested) = schema_of::<pb::$req>();
                let (response, more) = schema_of::<pb::$resp>();
                nested.extend(more);
                RouteDoc {
                    method: http_method(stringify!($method)),
                    path: $path,
                    operation: stringify!($rpc),
                    tag: $tag,
                    summary: $summary,
                    request,
                    response,
                    nested,
                    path_params: path_params($path),
                }
            }),*]
        }
    };
}

macro_rules! rest_call {
    ($rest:ident, Admin, $rpc:ident, $request:ident) => {
        AdminService::$rpc(&*$rest.admin, $request).await
    };
    ($rest:ident, Cluster, $rpc:ident, $request:ident) => {
        ClusterService::$rpc(&*$rest.cluster, $request).await
    };
}

/// The admin service answers only on the leader (as over gRPC); cluster status answers anywhere.
fn service_is_gated(service: &str) -> bool {
    service == "Admin"
}

rest_routes! {
    get "/whoami" "access" Admin::whoami(WhoamiRequest) -> UserInfo "The caller: user, roles, token, workspace.";
    get "/users" "access" Admin::list_users(ListUsersRequest) -> ListUsersResponse "List users (cluster admin).";
    post "/users" "access" Admin::create_user(CreateUserRequest) -> UserInfo "Create a user (cluster admin).";
    put "/users/{user}/password" "access" Admin::set_password(SetPasswordRequest) -> UserInfo "Set a user's console password (your own; anyone's as cluster admin); empty removes it.";
    put "/users/{user}/role" "access" Admin::set_role(SetRoleRequest) -> UserInfo "Set a user's role in the workspace (`viewer`, `developer`, `operator`, `admin`, `none`).";
    get "/tokens" "access" Admin::list_tokens(ListTokensRequest) -> ListTokensResponse "List API tokens (yours; all for a cluster admin).";
    post "/tokens" "access" Admin::create_token(CreateTokenRequest) -> CreateTokenResponse "Create an API token; the token is shown once.";
    delete "/tokens/{id}" "access" Admin::revoke_token(RevokeTokenRequest) -> TokenInfo "Revoke an API token.";
    get "/workspaces" "access" Admin::list_workspaces(ListWorkspacesRequest) -> ListWorkspacesResponse "List workspaces.";
    post "/workspaces" "access" Admin::create_workspace(CreateWorkspaceRequest) -> WorkspaceInfo "Create a workspace (cluster admin).";
    get "/audit" "access" Admin::list_audit(ListAuditRequest) -> ListAuditResponse "The audit trail: who did what, from where, when.";
    post "/secrets/reseal" "access" Admin::reseal_secrets(ResealSecretsRequest) -> ResealSecretsResponse "Re-seal every stored secret under the current master key (cluster admin).";
    get "/groups" "catalog" Admin::list_groups(ListGroupsRequest) -> ListGroupsResponse "List resource groups with their agents online.";
    post "/groups" "catalog" Admin::create_group(CreateGroupRequest) -> CreateGroupResponse "Create a resource group; answers its registration token (once) and install command.";
    post "/groups/{name}/token" "catalog" Admin::rotate_group_token(RotateGroupTokenRequest) -> CreateGroupResponse "Replace a group's registration token.";
    patch "/groups/{group}/options" "catalog" Admin::set_group_options(SetGroupOptionsRequest) -> GroupInfo "Set a group's concurrency limit and whether it runs shell tasks.";
    post "/groups/{group}/binding" "catalog" Admin::bind_group(BindGroupRequest) -> GroupInfo "Let the workspace use a group (`bind: true`) or stop it.";
    get "/agents" "catalog" Admin::list_agents(ListAgentsRequest) -> ListAgentsResponse "List agents (of one group with `group`).";
    post "/agents/{id}/drain" "catalog" Admin::drain_agent(DrainAgentRequest) -> AgentInfo "Stop giving an agent new attempts (or resume with `drain: false`).";
    post "/agents/{id}/revoke" "catalog" Admin::revoke_agent(RevokeAgentRequest) -> AgentInfo "Revoke an agent's credentials.";
    get "/datasources" "catalog" Admin::list_data_sources(ListDataSourcesRequest) -> ListDataSourcesResponse "List data sources (secrets are never shown).";
    post "/datasources" "catalog" Admin::add_data_source(AddDataSourceRequest) -> DataSourceInfo "Add a data source (the same name again replaces it).";
    get "/datasources/{name}" "catalog" Admin::get_data_source(GetDataSourceRequest) -> DataSourceInfo "One data source.";
    delete "/datasources/{name}" "catalog" Admin::remove_data_source(RemoveDataSourceRequest) -> RemoveDataSourceResponse "Remove a data source no task uses.";
    post "/datasources/{name}/test" "catalog" Admin::test_data_source(TestDataSourceRequest) -> TestDataSourceResponse "Test connectivity from the agents of a group (and describe a table).";
    get "/tasks" "tasks" Admin::list_tasks(ListTasksRequest) -> ListTasksResponse "List tasks.";
    post "/tasks" "tasks" Admin::create_task(CreateTaskRequest) -> TaskInfo "Create a task or submit a new version of it.";
    get "/tasks/{name}" "tasks" Admin::get_task(GetTaskRequest) -> TaskInfo "One task with its current version.";
    post "/wizard/script" "tasks" Admin::wizard_script(WizardScriptRequest) -> WizardScriptResponse "Wizard mode: read two tables' columns through an agent and write the sync job with the proposed column mapping (submits nothing).";
    post "/tasks/{name}/run" "tasks" Admin::run_task(RunTaskRequest) -> InstanceInfo "Run a task now for a business date (joined when already waiting or running).";
    post "/tasks/{name}/freeze" "tasks" Admin::freeze_task(FreezeTaskRequest) -> TaskInfo "Freeze (`freeze: true`) or unfreeze a task.";
    post "/tasks/{task}/backfill" "operations" Admin::backfill(BackfillRequest) -> BackfillResponse "Backfill a task over business dates, optionally with its downstream.";
    get "/instances" "operations" Admin::list_instances(ListInstancesRequest) -> ListInstancesResponse "Instances in cycle-time order (`descending` for newest first), filtered by business date, task, name `search`, state and group; paged by `limit` with `offset` or `page_token`; answers `total` and `counts` by state.";
    get "/instances/{id}" "operations" Admin::get_instance(GetInstanceRequest) -> InstanceInfo "One instance with its attempts, parameters and history.";
    get "/instances/{instance}/logs" "operations" Admin::get_logs(GetLogsRequest) -> GetLogsResponse "An instance's log (one attempt with `attempt`).";
    post "/instances/{id}/rerun" "operations" Admin::rerun_instance(RerunInstanceRequest) -> RerunInstanceResponse "Rerun an ended instance (and its downstream with `downstream: true`).";
    post "/instances/{id}/kill" "operations" Admin::kill_instance(InstanceActionRequest) -> InstanceInfo "Kill a waiting or running instance.";
    post "/instances/{id}/freeze" "operations" Admin::freeze_instance(FreezeInstanceRequest) -> InstanceInfo "Freeze (`freeze: true`) or unfreeze an instance; frozen blocks its downstream.";
    post "/instances/{id}/mark-success" "operations" Admin::mark_success(InstanceActionRequest) -> InstanceInfo "Mark an ended instance successful so its downstream runs.";
    get "/dag" "operations" Admin::get_dag(GetDagRequest) -> DagResponse "The DAG around an `instance` or a `task` (`depth_up`/`depth_down` hops, default 2, at most 10), or a whole business date up to 2,000 instances; `borders` flags nodes whose graph goes on.";
    get "/alerts" "alerts" Admin::list_alert_rules(ListAlertRulesRequest) -> ListAlertRulesResponse "List alert rules.";
    post "/alerts" "alerts" Admin::add_alert_rule(AddAlertRuleRequest) -> AlertRuleInfo "Add an alert rule (on failure, timeout or a baseline) with its webhook.";
    delete "/alerts/{name}" "alerts" Admin::remove_alert_rule(RemoveAlertRuleRequest) -> RemoveAlertRuleResponse "Remove an alert rule.";
    get "/alerts/deliveries" "alerts" Admin::list_alert_deliveries(ListAlertDeliveriesRequest) -> ListAlertDeliveriesResponse "Recent alert deliveries and their outcome.";
    get "/cluster" "cluster" Cluster::cluster_status(ClusterStatusRequest) -> ClusterStatusResponse "Cluster members, leader, term, commit and applied index (cluster admin).";
    get "/cluster/leader" "cluster" Cluster::leader(LeaderRequest) -> LeaderResponse "Which scheduler leads (any node answers).";
}

async fn unknown_route(method: Method, uri: axum::http::Uri) -> Response {
    error_response(&Status::not_found(format!(
        "no API route {method} {}; the routes are listed in {BASE}/openapi.json",
        uri.path()
    )))
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "method_not_allowed".into(),
            message: format!(
                "{} does not take {method}; the methods of each route are in {BASE}/openapi.json",
                uri.path()
            ),
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, json_body(&body)).into_response()
}

async fn openapi_json() -> Response {
    (StatusCode::OK, json_body(openapi())).into_response()
}

/// The OpenAPI 3.1 document of the REST API, built once from the route table.
pub fn openapi() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build_openapi)
}

fn build_openapi() -> OpenApi {
    let error_ref = || RefOr::Ref(Ref::from_schema_name("ErrorBody"));
    let mut components = ComponentsBuilder::new()
        .schema("ErrorBody", ErrorBody::schema())
        .schema("ErrorDetail", ErrorDetail::schema())
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token: printed at the first start for `admin`, or `ferry token create`.",
                    ))
                    .build(),
            ),
        );
    // Paths with several methods are merged into one path item.
    let mut items: BTreeMap<String, PathItem> = BTreeMap::new();
    for doc in route_docs() {
        let (req_name, req_schema) = doc.request.clone();
        let (resp_name, resp_schema) = doc.response.clone();
        components = components
            .schema(req_name.clone(), req_schema.clone())
            .schema(resp_name.clone(), resp_schema);
        for (name, schema) in doc.nested {
            components = components.schema(name, schema);
        }
        let mut op = OperationBuilder::new()
            .operation_id(Some(doc.operation))
            .tag(doc.tag)
            .summary(Some(doc.summary))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        for name in &doc.path_params {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(
                        ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
                    )),
            );
        }
        op = op.parameter(
            ParameterBuilder::new()
                .name(WORKSPACE_HEADER)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some("The workspace the call acts in (default `default`)."))
                .schema(Some(
                    ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
                )),
        );
        let body_method = matches!(
            doc.method,
            HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
        );
        if body_method {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(
                                req_name.clone(),
                            ))))
                            .build(),
                    )
                    .description(Some(
                        "Fields of the request message (path parameters may be left out); missing fields take their defaults.",
                    ))
                    .build(),
            ));
        } else if let RefOr::T(Schema::Object(object)) = &req_schema {
            for (name, schema) in &object.properties {
                if doc.path_params.contains(&name.as_str()) {
                    continue;
                }
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Query)
                        .required(Required::False)
                        .schema(Some(schema.clone())),
                );
            }
        }
        let responses = ResponsesBuilder::new()
            .response(
                "200",
                ResponseBuilder::new().description("OK").content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(
                            resp_name,
                        ))))
                        .build(),
                ),
            )
            .response(
                "default",
                ResponseBuilder::new()
                    .description("An error: 400 invalid, 401 no or bad token, 403 role too low, 404 not found, 409 conflict, 503 not the leader or no quorum.")
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(error_ref())).build(),
                    ),
            )
            .build();
        let operation = op.responses(responses).build();
        let full = format!("{BASE}{}", doc.path);
        let item = items.entry(full).or_default();
        set_operation(item, doc.method, operation);
    }
    items.insert(format!("{BASE}/instances/{{id}}/events"), events_item());
    let (login_schema, login_nested) = schema_of::<pb::LoginRequest>();
    components = components.schema(login_schema.0, login_schema.1);
    for (name, schema) in login_nested {
        components = components.schema(name, schema);
    }
    items.insert(format!("{BASE}/login"), login_item());
    let mut paths = PathsBuilder::new();
    for (path, item) in items {
        paths = paths.path(path, item);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Ferry REST API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The admin operations of the `ferry` CLI over HTTP and JSON. Bodies and answers are the admin protobuf messages with their proto field names.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

/// The one streaming route: server-sent events of an instance.
fn events_item() -> PathItem {
    let mut item = PathItem::default();
    item.get = Some(
        OperationBuilder::new()
            .operation_id(Some("WatchInstance"))
            .tag("operations")
            .summary(Some(
                "An instance's state changes, progress and log lines as server-sent events (`event: state|progress|log|error`, `data:` the message as JSON) until it ends.",
            ))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(
                        ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)),
                    )),
            )
            .responses(
                ResponsesBuilder::new()
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description("The event stream; each event's data is an InstanceInfo, SyncStats or LogLine.")
                            .content("text/event-stream", ContentBuilder::new().build()),
                    )
                    .response(
                        "default",
                        ResponseBuilder::new().description("An error").content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(
                                    "ErrorBody",
                                ))))
                                .build(),
                        ),
                    )
                    .build(),
            )
            .build(),
    );
    item
}

/// `POST /login`: the one route without a bearer token.
fn login_item() -> PathItem {
    let json_ref = |name: &str| {
        ContentBuilder::new()
            .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(name))))
            .build()
    };
    let mut item = PathItem::default();
    item.post = Some(
        OperationBuilder::new()
            .operation_id(Some("Login"))
            .tag("access")
            .summary(Some(
                "Console login: a user name and password (set with `ferry user passwd`) for a session token (12 h by default). Five failures in a row lock the user's password logins out for 2 s, doubling up to 15 min; tokens keep working.",
            ))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json_ref("LoginRequest"))
                    .build(),
            ))
            .responses(
                ResponsesBuilder::new()
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description("The session token (shown once) and its record.")
                            .content("application/json", json_ref("CreateTokenResponse")),
                    )
                    .response(
                        "default",
                        ResponseBuilder::new()
                            .description("401 wrong user name or password, 429 locked out, 400 malformed.")
                            .content("application/json", json_ref("ErrorBody")),
                    )
                    .build(),
            )
            .build(),
    );
    item
}

fn set_operation(
    item: &mut PathItem,
    method: HttpMethod,
    operation: utoipa::openapi::path::Operation,
) {
    let slot = match method {
        HttpMethod::Get => &mut item.get,
        HttpMethod::Post => &mut item.post,
        HttpMethod::Put => &mut item.put,
        HttpMethod::Patch => &mut item.patch,
        HttpMethod::Delete => &mut item.delete,
        HttpMethod::Head => &mut item.head,
        HttpMethod::Options => &mut item.options,
        HttpMethod::Trace => &mut item.trace,
    };
    *slot = Some(operation);
}

/// The REST routes, to be served beside gRPC on the scheduler's address.
pub fn routes(ctx: Arc<Context>) -> Router {
    let rest = Rest {
        admin: Arc::new(AdminApi::new(ctx.clone())),
        cluster: Arc::new(ClusterApi::new(ctx.clone())),
        ctx,
    };
    api_router(rest)
}
