//! The REST API against a real scheduler on loopback: every route answers, refusals come back as
//! JSON with the right HTTP status, and what REST does is what gRPC sees (one service layer).

use ferry_proto::admin::v1 as pb;
use ferry_proto::admin::v1::admin_service_client::AdminServiceClient;
use ferry_scheduler::context::Config;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const ADMIN_TOKEN: &str = "fat_rest_test_admin_token_0123456789abcdef";

const STREAM_JOB: &str = r#"{"job":{"setting":{"speed":{"channel":1}},"content":[{"reader":{"name":"streamreader","parameter":{"column":[{"type":"long","value":1}],"sliceRecordCount":3}},"writer":{"name":"streamwriter","parameter":{"print":false}}}]}}"#;

struct Server {
    addr: SocketAddr,
    http: reqwest::Client,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// One answer: status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(self) -> Result<Value> {
        if self.status != 200 {
            return Err(format!("expected 200, got {}: {}", self.status, self.body).into());
        }
        Ok(self.body)
    }

    /// A refusal: the status and the error code, with a message that is not empty.
    fn refused(&self, status: u16, code: &str) -> Result<String> {
        let got_code = self.body["error"]["code"].as_str().unwrap_or_default();
        let message = self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if self.status != status || got_code != code || message.is_empty() {
            return Err(format!(
                "expected {status} {code}, got {} {}",
                self.status, self.body
            )
            .into());
        }
        Ok(message)
    }
}

impl Server {
    async fn start() -> Result<Self> {
        Self::start_with_clock(ferry_scheduler::clock::system()).await
    }

    async fn start_with_clock(clock: ferry_scheduler::clock::SharedClock) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = Config::new(dir.path().join("data"), format!("http://{addr}"));
        config.bootstrap_token = Some(ADMIN_TOKEN.into());
        config.admin_token_file = Some(dir.path().join("admin.token"));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) =
                ferry_scheduler::server::run_with_clock(listener, config, clock, stop).await
            {
                eprintln!("scheduler stopped: {e}");
            }
        });
        let http = ferry_scheduler::alerts::http_client()?;
        let server = Server {
            addr,
            http,
            shutdown,
            handle,
            _dir: dir,
        };
        // Ready once the first admin exists (bootstrap happens before serving).
        for _ in 0..200 {
            if let Ok(a) = server.call(Method::GET, "/whoami", None).await
                && a.status == 200
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the scheduler did not answer /api/v1/whoami within 10 s".into())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.addr)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        workspace: Option<&str>,
        body: Option<String>,
    ) -> Result<Answer> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(w) = workspace {
            req = req.header("x-ferry-workspace", w);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await?;
        if !content_type.starts_with("application/json") {
            return Err(format!("{path}: answer is {content_type:?}, not JSON: {text}").into());
        }
        let body = serde_json::from_str(&text)?;
        Ok(Answer { status, body })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Answer> {
        self.send(
            method,
            path,
            Some(ADMIN_TOKEN),
            None,
            body.map(|b| b.to_string()),
        )
        .await
    }

    async fn grpc(&self) -> Result<AdminServiceClient<tonic::transport::Channel>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?;
        Ok(AdminServiceClient::new(channel))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}

/// A path segment: instance ids hold `/` (`workspace/task@cycle`).
fn encode(segment: &str) -> String {
    segment.replace('%', "%25").replace('/', "%2F")
}

fn grpc_request<T>(message: T) -> Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse()?);
    Ok(r)
}

/// Every route of the document, as (method, path with sample parameters).
fn documented_routes(doc: &Value) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for method in item.keys() {
                let m = match method.as_str() {
                    "get" => Method::GET,
                    "post" => Method::POST,
                    "put" => Method::PUT,
                    "patch" => Method::PATCH,
                    "delete" => Method::DELETE,
                    _ => continue,
                };
                let concrete = path
                    .trim_start_matches("/api/v1")
                    .split('/')
                    .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((m, concrete));
            }
        }
    }
    out
}

/// Every `$ref` in the document names a schema it defines.
fn dangling_refs(doc: &Value) -> Vec<String> {
    fn walk(v: &Value, refs: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    refs.push(r.clone());
                }
                o.values().for_each(|x| walk(x, refs));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, refs)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(doc, &mut refs);
    refs.into_iter()
        .filter(|r| {
            let name = r.trim_start_matches("#/components/schemas/");
            doc["components"]["schemas"].get(name).is_none()
        })
        .collect()
}

#[tokio::test]
async fn the_document_lists_every_route_and_no_route_is_open() -> Result<()> {
    let s = Server::start().await?;
    let doc = s
        .send(Method::GET, "/openapi.json", None, None, None)
        .await?
        .ok()?;
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.")
    );
    let routes = documented_routes(&doc);
    // The console and the CLI need all of these.
    for (m, p) in [
        (Method::GET, "/instances"),
        (Method::POST, "/instances/x/rerun"),
        (Method::POST, "/datasources/x/test"),
        (Method::GET, "/dag"),
        (Method::POST, "/tasks"),
        (Method::GET, "/cluster"),
    ] {
        assert!(
            routes.iter().any(|(rm, rp)| *rm == m && rp == p),
            "{m} {p} missing from the document"
        );
    }
    assert!(
        routes.len() >= 40,
        "only {} routes documented",
        routes.len()
    );
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
        .filter_map(|i| i.as_object())
        .flat_map(|i| i.values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "operation ids repeat: {ids:?}");
    assert_eq!(dangling_refs(&doc), Vec::<String>::new());

    // The class: no documented route answers without a token, or with a wrong one (login, the
    // one that takes a password instead, is tested on its own).
    for (m, p) in routes.iter().filter(|(_, p)| p != "/login") {
        let body = matches!(*m, Method::POST | Method::PUT | Method::PATCH).then(|| "{}".into());
        let anonymous = s.send(m.clone(), p, None, None, body.clone()).await?;
        anonymous
            .refused(401, "unauthenticated")
            .map_err(|e| format!("{m} {p} without a token: {e}"))?;
        let forged = s.send(m.clone(), p, Some("fat_forged"), None, body).await?;
        forged
            .refused(401, "unauthenticated")
            .map_err(|e| format!("{m} {p} with a forged token: {e}"))?;
    }
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn malformed_requests_are_refused_by_name() -> Result<()> {
    let s = Server::start().await?;
    let send_raw = |body: &'static str| {
        s.send(
            Method::POST,
            "/groups",
            Some(ADMIN_TOKEN),
            None,
            Some(body.to_string()),
        )
    };
    // Not JSON: the position is named.
    let m = send_raw("{\n  \"name\": \"rg\",\n  oops\n}")
        .await?
        .refused(400, "invalid_argument")?;
    assert!(m.contains("line 3"), "{m}");
    // Not an object.
    send_raw("[1,2]").await?.refused(400, "invalid_argument")?;
    // An unknown field is refused, with the accepted ones.
    let m = send_raw(r#"{"nmae":"rg"}"#)
        .await?
        .refused(400, "invalid_argument")?;
    assert!(m.contains("\"nmae\"") && m.contains("name"), "{m}");
    // A field of the wrong type names the field.
    let m = send_raw(r#"{"name": 7}"#)
        .await?
        .refused(400, "invalid_argument")?;
    assert!(m.contains("name"), "{m}");
    // Query parameters: unknown, mistyped, repeated, or on a call that takes a body.
    let m = s
        .call(Method::GET, "/instances?stat=failed", None)
        .await?
        .refused(400, "invalid_argument")?;
    assert!(m.contains("\"stat\"") && m.contains("state"), "{m}");
    let m = s
        .call(Method::GET, "/instances?limit=many", None)
        .await?
        .refused(400, "invalid_argument")?;
    assert!(m.contains("limit"), "{m}");
    s.call(Method::GET, "/instances?task=a&task=b", None)
        .await?
        .refused(400, "invalid_argument")?;
    s.call(Method::POST, "/groups?name=rg", Some(json!({})))
        .await?
        .refused(400, "invalid_argument")?;
    // Path and body disagree.
    s.call(
        Method::POST,
        "/tasks/one/run",
        Some(json!({"name": "other"})),
    )
    .await?
    .refused(400, "invalid_argument")?;
    // Unknown routes answer JSON too.
    let m = s
        .call(Method::GET, "/no/such/thing", None)
        .await?
        .refused(404, "not_found")?;
    assert!(m.contains("openapi.json"), "{m}");
    // A route with the wrong method answers JSON too.
    let m = s
        .call(Method::DELETE, "/whoami", None)
        .await?
        .refused(405, "method_not_allowed")?;
    assert!(m.contains("DELETE"), "{m}");
    // Nothing above created a group.
    let groups = s.call(Method::GET, "/groups", None).await?.ok()?;
    assert_eq!(groups["groups"].as_array().map(Vec::len), Some(0));
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn every_operation_works_over_rest_as_over_grpc() -> Result<()> {
    let s = Server::start().await?;
    let mut grpc = s.grpc().await?;

    // Access.
    let me = s.call(Method::GET, "/whoami", None).await?.ok()?;
    assert_eq!(me["name"], "admin");
    assert_eq!(me["cluster_admin"], true);
    s.call(Method::POST, "/users", Some(json!({"name": "ann"})))
        .await?
        .ok()?;
    s.call(Method::POST, "/users", Some(json!({"name": "ann"})))
        .await?
        .refused(409, "already_exists")?;
    let users = s.call(Method::GET, "/users", None).await?.ok()?;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(2));
    let ann = s
        .call(
            Method::PUT,
            "/users/ann/role",
            Some(json!({"role": "viewer"})),
        )
        .await?
        .ok()?;
    assert_eq!(ann["roles"]["default"], "viewer");
    s.call(
        Method::PUT,
        "/users/nobody/role",
        Some(json!({"role": "viewer"})),
    )
    .await?
    .refused(404, "not_found")?;
    let created = s
        .call(
            Method::POST,
            "/tokens",
            Some(json!({"user": "ann", "name": "console"})),
        )
        .await?
        .ok()?;
    let ann_token = created["token"].as_str().unwrap_or_default().to_string();
    let ann_token_id = created["info"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!ann_token.is_empty());
    let tokens = s.call(Method::GET, "/tokens", None).await?.ok()?;
    assert!(
        tokens["tokens"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["id"] == ann_token_id.as_str()))
    );
    // A viewer reads but may not change.
    let as_ann = s
        .send(Method::GET, "/whoami", Some(&ann_token), None, None)
        .await?
        .ok()?;
    assert_eq!(as_ann["name"], "ann");
    s.send(
        Method::POST,
        "/groups",
        Some(&ann_token),
        None,
        Some(json!({"name": "x"}).to_string()),
    )
    .await?
    .refused(403, "permission_denied")?;
    s.send(
        Method::POST,
        "/datasources",
        Some(&ann_token),
        None,
        Some(json!({"name": "pg", "type": "postgresql"}).to_string()),
    )
    .await?
    .refused(403, "permission_denied")?;
    s.call(Method::POST, "/workspaces", Some(json!({"name": "sales"})))
        .await?
        .ok()?;
    let ws = s.call(Method::GET, "/workspaces", None).await?.ok()?;
    assert_eq!(ws["workspaces"].as_array().map(Vec::len), Some(2));
    // A workspace ann is not a member of.
    s.send(Method::GET, "/tasks", Some(&ann_token), Some("sales"), None)
        .await?
        .refused(403, "permission_denied")?;
    let audit = s.call(Method::GET, "/audit?limit=500", None).await?.ok()?;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"CreateUser"), "{actions:?}");
    let resealed = s.call(Method::POST, "/secrets/reseal", None).await?.ok()?;
    assert!(resealed["key_id"].as_str().is_some_and(|k| !k.is_empty()));

    // Catalog.
    let group = s
        .call(Method::POST, "/groups", Some(json!({"name": "rg"})))
        .await?
        .ok()?;
    let first_token = group["registration_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        group["install_command"]
            .as_str()
            .is_some_and(|c| c.contains("ferry-agent"))
    );
    let rotated = s.call(Method::POST, "/groups/rg/token", None).await?.ok()?;
    assert_ne!(
        rotated["registration_token"].as_str(),
        Some(first_token.as_str())
    );
    let options = s
        .call(
            Method::PATCH,
            "/groups/rg/options",
            Some(json!({"max_concurrency": 4, "allow_shell": ""})),
        )
        .await?
        .ok()?;
    assert_eq!(options["max_concurrency"], 4);
    s.send(
        Method::POST,
        "/groups/rg/binding",
        Some(ADMIN_TOKEN),
        Some("sales"),
        Some(json!({"bind": true}).to_string()),
    )
    .await?
    .ok()?;
    let groups = s.call(Method::GET, "/groups", None).await?.ok()?;
    assert_eq!(groups["groups"][0]["name"], "rg");
    let agents = s.call(Method::GET, "/agents?group=rg", None).await?.ok()?;
    assert_eq!(agents["agents"].as_array().map(Vec::len), Some(0));
    s.call(
        Method::POST,
        "/agents/ghost/drain",
        Some(json!({"drain": true})),
    )
    .await?
    .refused(404, "not_found")?;
    s.call(Method::POST, "/agents/ghost/revoke", None)
        .await?
        .refused(404, "not_found")?;
    let ds = s
        .call(
            Method::POST,
            "/datasources",
            Some(json!({
                "name": "pg",
                "type": "postgresql",
                "fields": {"host": "127.0.0.1", "port": "5432", "database": "test", "username": "root"},
                "secrets": {"password": "s3cret-value"},
                "groups": ["rg"]
            })),
        )
        .await?
        .ok()?;
    assert!(
        !ds.to_string().contains("s3cret-value"),
        "secret shown: {ds}"
    );
    let listed = s.call(Method::GET, "/datasources", None).await?.ok()?;
    assert!(!listed.to_string().contains("s3cret-value"));
    assert_eq!(listed["datasources"].as_array().map(Vec::len), Some(1));
    let one = s.call(Method::GET, "/datasources/pg", None).await?.ok()?;
    assert_eq!(one["type"], "postgresql");
    // No agent is online in the group: the test says so rather than hanging.
    let m = s
        .call(
            Method::POST,
            "/datasources/pg/test",
            Some(json!({"group": "rg", "timeout_ms": 2000})),
        )
        .await?
        .refused(409, "failed_precondition")?;
    assert!(m.contains("no online agent"), "{m}");
    s.call(Method::GET, "/datasources/nope", None)
        .await?
        .refused(404, "not_found")?;
    // What REST created, gRPC sees.
    let via_grpc = grpc
        .get_data_source(grpc_request(pb::GetDataSourceRequest {
            name: "pg".into(),
        })?)
        .await?
        .into_inner();
    assert_eq!(via_grpc.r#type, "postgresql");

    // Tasks and instances.
    let task = s
        .call(
            Method::POST,
            "/tasks",
            Some(json!({"name": "t1", "group": "rg", "job_json": STREAM_JOB})),
        )
        .await?
        .ok()?;
    assert_eq!(task["name"], "t1");
    let bad_job = s
        .call(
            Method::POST,
            "/tasks",
            Some(json!({"name": "t2", "group": "rg", "job_json": "{\"job\": {\n  \"content\": [,]\n}}"})),
        )
        .await?
        .refused(400, "invalid_argument")?;
    assert!(
        bad_job.contains("line 2"),
        "job errors name the line: {bad_job}"
    );
    let tasks = s.call(Method::GET, "/tasks", None).await?.ok()?;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(1));
    s.call(Method::GET, "/tasks/t1", None).await?.ok()?;
    s.call(Method::GET, "/tasks/none", None)
        .await?
        .refused(404, "not_found")?;
    let instance = s
        .call(
            Method::POST,
            "/tasks/t1/run",
            Some(json!({"bizdate": "2026-11-20"})),
        )
        .await?
        .ok()?;
    let id = instance["id"].as_str().unwrap_or_default().to_string();
    let enc = encode(&id);
    assert!(!id.is_empty());
    assert_eq!(instance["bizdate"], "20261120");
    let listed = s
        .call(Method::GET, "/instances?bizdate=20261120&task=t1", None)
        .await?
        .ok()?;
    assert_eq!(listed["instances"][0]["id"], id.as_str());
    let shown = s
        .call(Method::GET, &format!("/instances/{enc}"), None)
        .await?
        .ok()?;
    assert_eq!(shown["task"], "t1");
    let via_grpc = grpc
        .get_instance(grpc_request(pb::GetInstanceRequest { id: id.clone() })?)
        .await?
        .into_inner();
    assert_eq!(serde_json::to_value(&via_grpc)?, shown);
    s.call(Method::GET, &format!("/instances/{enc}/logs"), None)
        .await?
        .ok()?;
    s.call(Method::GET, "/instances/nope", None)
        .await?
        .refused(404, "not_found")?;
    // Waiting (no agent): a rerun is refused, a kill ends it, then rerun works.
    s.call(Method::POST, &format!("/instances/{enc}/rerun"), None)
        .await?
        .refused(409, "failed_precondition")?;
    let killed = s
        .call(Method::POST, &format!("/instances/{enc}/kill"), None)
        .await?
        .ok()?;
    assert_eq!(killed["state"], "killed");
    let marked = s
        .call(
            Method::POST,
            &format!("/instances/{enc}/mark-success"),
            None,
        )
        .await?
        .ok()?;
    assert_eq!(marked["state"], "success");
    let rerun = s
        .call(
            Method::POST,
            &format!("/instances/{enc}/rerun"),
            Some(json!({"downstream": true})),
        )
        .await?
        .ok()?;
    assert_eq!(rerun["ids"][0], id.as_str());
    let frozen = s
        .call(
            Method::POST,
            &format!("/instances/{enc}/freeze"),
            Some(json!({"freeze": true})),
        )
        .await?
        .ok()?;
    assert_eq!(frozen["state"], "frozen");
    let dag = s
        .call(Method::GET, "/dag?bizdate=2026-11-20", None)
        .await?
        .ok()?;
    assert_eq!(dag["instances"].as_array().map(Vec::len), Some(1));
    s.call(Method::GET, "/dag?bizdate=yesterday-ish", None)
        .await?
        .refused(400, "invalid_argument")?;
    let task = s
        .call(
            Method::POST,
            "/tasks/t1/freeze",
            Some(json!({"freeze": true})),
        )
        .await?
        .ok()?;
    assert_eq!(task["frozen"], true);
    s.call(
        Method::POST,
        "/tasks/t1/freeze",
        Some(json!({"freeze": false})),
    )
    .await?
    .ok()?;
    let backfill = s
        .call(
            Method::POST,
            "/tasks/t1/backfill",
            Some(json!({"from": "2026-11-01", "to": "2026-11-03"})),
        )
        .await?
        .ok()?;
    assert_eq!(backfill["days"].as_array().map(Vec::len), Some(3));
    s.call(
        Method::POST,
        "/tasks/t1/backfill",
        Some(json!({"from": "2026-11-05", "to": "2026-11-01"})),
    )
    .await?
    .refused(400, "invalid_argument")?;

    // Alerts.
    s.call(
        Method::POST,
        "/alerts",
        Some(json!({"name": "oncall", "url": "http://127.0.0.1:9/hook", "on": ["failure"]})),
    )
    .await?
    .ok()?;
    let rules = s.call(Method::GET, "/alerts", None).await?.ok()?;
    assert_eq!(rules["rules"][0]["name"], "oncall");
    s.call(Method::GET, "/alerts/deliveries?limit=10", None)
        .await?
        .ok()?;
    s.call(Method::DELETE, "/alerts/oncall", None).await?.ok()?;
    s.call(Method::DELETE, "/alerts/oncall", None)
        .await?
        .refused(404, "not_found")?;

    // Cluster.
    let status = s.call(Method::GET, "/cluster", None).await?.ok()?;
    assert!(status["members"].as_array().is_some_and(|m| !m.is_empty()));
    let leader = s.call(Method::GET, "/cluster/leader", None).await?.ok()?;
    assert_eq!(leader["is_leader"], true);
    s.send(Method::GET, "/cluster", Some(&ann_token), None, None)
        .await?
        .refused(403, "permission_denied")?;

    // Cleanup paths and the revoked token.
    s.call(Method::DELETE, "/datasources/pg", None)
        .await?
        .ok()?;
    s.call(Method::DELETE, &format!("/tokens/{ann_token_id}"), None)
        .await?
        .ok()?;
    s.send(Method::GET, "/whoami", Some(&ann_token), None, None)
        .await?
        .refused(401, "unauthenticated")?;
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn instance_events_stream_as_server_sent_events() -> Result<()> {
    let s = Server::start().await?;
    s.call(Method::POST, "/groups", Some(json!({"name": "rg"})))
        .await?
        .ok()?;
    s.call(
        Method::POST,
        "/tasks",
        Some(json!({"name": "t1", "group": "rg", "job_json": STREAM_JOB})),
    )
    .await?
    .ok()?;
    let instance = s
        .call(
            Method::POST,
            "/tasks/t1/run",
            Some(json!({"bizdate": "20261120"})),
        )
        .await?
        .ok()?;
    let id = instance["id"].as_str().unwrap_or_default().to_string();
    let enc = encode(&id);
    let mut resp = s
        .http
        .get(s.url(&format!("/instances/{enc}/events")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    if resp.status().as_u16() != 200 {
        return Err(format!("events: {} {}", resp.status(), resp.text().await?).into());
    }
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    // The first event is the instance's state; killing it sends the change.
    let mut seen = String::new();
    let read = async {
        let mut killed = false;
        while let Some(chunk) = resp.chunk().await? {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if !killed && seen.contains("event: state") {
                killed = true;
                s.call(Method::POST, &format!("/instances/{enc}/kill"), None)
                    .await?
                    .ok()?;
            }
            if seen.contains("\"state\":\"killed\"") {
                break;
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .map_err(|_| format!("no killed state event within 20 s; got: {seen}"))??;
    assert!(seen.contains(&format!("\"id\":\"{id}\"")), "{seen}");
    // Without a token: refused as JSON like every other call.
    s.send(
        Method::GET,
        &format!("/instances/{enc}/events"),
        None,
        None,
        None,
    )
    .await?
    .refused(401, "unauthenticated")?;
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn console_login_with_a_password_gives_a_session_token() -> Result<()> {
    let clock = ferry_scheduler::clock::ManualClock::new(1_795_000_000_000);
    let s = Server::start_with_clock(clock.clone()).await?;
    let login = |user: &str, password: &str| {
        s.send(
            Method::POST,
            "/login",
            None,
            None,
            Some(json!({"user": user, "password": password}).to_string()),
        )
    };
    // No password set yet: tokens only.
    login("admin", "correct horse battery")
        .await?
        .refused(401, "unauthenticated")?;
    let m = s
        .call(
            Method::PUT,
            "/users/admin/password",
            Some(json!({"password": "short"})),
        )
        .await?
        .refused(400, "invalid_argument")?;
    assert!(m.contains("at least 10"), "{m}");
    let me = s
        .call(
            Method::PUT,
            "/users/admin/password",
            Some(json!({"password": "correct horse battery"})),
        )
        .await?
        .ok()?;
    assert_eq!(me["has_password"], true);
    // The hash is never answered.
    let users = s.call(Method::GET, "/users", None).await?.ok()?;
    assert!(!users.to_string().contains("argon2"), "{users}");

    let session = login("admin", "correct horse battery").await?.ok()?;
    let token = session["token"].as_str().unwrap_or_default().to_string();
    let expires = session["info"]["expires_ms"].as_i64().unwrap_or_default();
    assert_eq!(expires, 1_795_000_000_000 + 12 * 3600 * 1000);
    let me = s
        .send(Method::GET, "/whoami", Some(&token), None, None)
        .await?
        .ok()?;
    assert_eq!(me["name"], "admin");
    // Wrong password and unknown user: the same answer.
    let wrong = login("admin", "not the password")
        .await?
        .refused(401, "unauthenticated")?;
    let unknown = login("nobody", "not the password")
        .await?
        .refused(401, "unauthenticated")?;
    assert_eq!(wrong, unknown);

    // Another user sets their own password; a viewer may not set someone else's.
    s.call(Method::POST, "/users", Some(json!({"name": "ann"})))
        .await?
        .ok()?;
    s.call(
        Method::PUT,
        "/users/ann/role",
        Some(json!({"role": "viewer"})),
    )
    .await?
    .ok()?;
    s.call(
        Method::PUT,
        "/users/ann/password",
        Some(json!({"password": "ann's long password"})),
    )
    .await?
    .ok()?;
    let ann = login("ann", "ann's long password").await?.ok()?;
    let ann_token = ann["token"].as_str().unwrap_or_default().to_string();
    s.send(
        Method::PUT,
        "/users/admin/password",
        Some(&ann_token),
        None,
        Some(json!({"password": "taken over!!"}).to_string()),
    )
    .await?
    .refused(403, "permission_denied")?;
    login("admin", "correct horse battery").await?.ok()?;

    // Guessing: five failures in a row lock the user's logins out, even the right password,
    // while its tokens keep working; the lock-out passes with time.
    for _ in 0..5 {
        login("ann", "guess guess guess")
            .await?
            .refused(401, "unauthenticated")?;
    }
    let m = login("ann", "ann's long password")
        .await?
        .refused(429, "resource_exhausted")?;
    assert!(m.contains("try again in 2 s"), "{m}");
    s.send(Method::GET, "/whoami", Some(&ann_token), None, None)
        .await?
        .ok()?;
    clock.advance(2_001);
    login("ann", "ann's long password").await?.ok()?;

    // Sessions expire with the clock.
    clock.advance(12 * 3600 * 1000);
    s.send(Method::GET, "/whoami", Some(&token), None, None)
        .await?
        .refused(401, "unauthenticated")?;

    // Every login, good or bad, is in the audit log (read with a new session: the first one
    // expired above).
    let fresh = login("admin", "correct horse battery").await?.ok()?;
    let fresh = fresh["token"].as_str().unwrap_or_default().to_string();
    let audit = s
        .send(Method::GET, "/audit?limit=1000", Some(&fresh), None, None)
        .await?
        .ok()?;
    let logins: Vec<String> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "Login")
        .map(|e| format!("{} {}", e["user"], e["outcome"]))
        .collect();
    assert!(
        logins.iter().any(|l| l.contains("\"admin\" \"ok\"")),
        "{logins:?}"
    );
    assert!(
        logins
            .iter()
            .any(|l| l.contains("nobody") && l.contains("denied: wrong")),
        "{logins:?}"
    );
    assert!(
        logins.iter().any(|l| l.contains("locked out")),
        "{logins:?}"
    );
    s.stop().await;
    Ok(())
}

/// The console edits a data source without ever seeing its password: `keep_secrets` keeps the
/// stored one when the form leaves it empty, a new one replaces it, and without `keep_secrets`
/// (the CLI's `datasource add`) the record is exactly what was sent.
#[tokio::test]
async fn editing_a_data_source_keeps_its_password_unless_given() -> Result<()> {
    let s = Server::start().await?;
    let base = json!({"name": "shop", "type": "postgresql",
        "fields": {"host": "db1", "database": "shop", "username": "etl"}});
    let mut with_password = base.clone();
    with_password["secrets"] = json!({"password": "first secret"});
    let saved = s
        .call(Method::POST, "/datasources", Some(with_password))
        .await?
        .ok()?;
    assert_eq!(saved["secret_fields"], json!(["password"]));
    let mut edit = base.clone();
    edit["fields"]["host"] = json!("db2");
    edit["keep_secrets"] = json!(true);
    let edited = s
        .call(Method::POST, "/datasources", Some(edit.clone()))
        .await?
        .ok()?;
    assert_eq!(edited["fields"]["host"], "db2");
    assert_eq!(edited["secret_fields"], json!(["password"]));
    assert!(!edited.to_string().contains("first secret"), "{edited}");
    let replaced = s
        .call(Method::POST, "/datasources", Some(base))
        .await?
        .ok()?;
    assert_eq!(replaced["secret_fields"], json!([]));
    s.stop().await;
    Ok(())
}

/// The console is served on the scheduler's address, under a policy that forbids inline script,
/// and the wizard's REST route refuses plainly when no agent can read the tables.
#[tokio::test]
async fn the_console_is_served_and_the_wizard_needs_an_agent() -> Result<()> {
    let s = Server::start().await?;
    let root = s.http.get(format!("http://{}/", s.addr)).send().await?;
    // The scheduler's root leads to the console.
    assert_eq!(root.url().path(), "/console/");
    let page = s
        .http
        .get(format!("http://{}/console/", s.addr))
        .send()
        .await?;
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(page.text().await?.contains("/console/app.js"));
    s.call(Method::POST, "/groups", Some(json!({"name": "rg"})))
        .await?
        .ok()?;
    s.call(
        Method::POST,
        "/datasources",
        Some(json!({"name": "pg", "type": "postgresql",
            "fields": {"host": "db1", "database": "shop", "username": "etl"}})),
    )
    .await?
    .ok()?;
    let message = s
        .call(
            Method::POST,
            "/wizard/script",
            Some(json!({"group": "rg", "from": "pg.orders", "to": "pg.orders_copy"})),
        )
        .await?
        .refused(409, "failed_precondition")?;
    assert!(message.contains("no online agent"), "{message}");
    s.call(
        Method::POST,
        "/wizard/script",
        Some(json!({"group": "rg", "from": "nowhere.orders", "to": "pg.orders_copy"})),
    )
    .await?
    .refused(404, "not_found")?;
    s.stop().await;
    Ok(())
}
