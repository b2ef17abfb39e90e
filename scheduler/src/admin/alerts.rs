//! `ferry alert ...`: rules of the caller's workspace and the record of deliveries.
//!
//! Operators own alerting (they are the ones woken up); everyone in the workspace may read the
//! rules and deliveries. A rule's URL is sealed before it is proposed and shown afterwards only
//! as scheme and host, since chat webhooks carry their access token in the path or query.

use super::tasks::require_task;
use super::{AdminApi, check_name};
use crate::auth::{Action, Principal};
use crate::error::{Error, Result};
use crate::state::alerts::{AlertDelivery, AlertKind, AlertRule, WebhookFormat};
use crate::state::command::Command;
use ferry_common::secret::Secret;
use ferry_proto::admin::v1 as pb;

fn rule_info(r: &AlertRule, endpoint: String) -> pb::AlertRuleInfo {
    pb::AlertRuleInfo {
        name: r.name.clone(),
        workspace: r.workspace.clone(),
        endpoint,
        format: r.format.as_str().into(),
        tasks: r
            .tasks
            .iter()
            .map(|t| t.split_once('/').map_or(t.as_str(), |(_, n)| n).to_string())
            .collect(),
        on: r.on.iter().map(|k| k.as_str().to_string()).collect(),
        baseline: r.baseline.clone().unwrap_or_default(),
        timezone: r.timezone.clone(),
        created_ms: r.created_ms,
    }
}

/// Scheme and host of a URL: enough to recognise it, nothing that authenticates.
fn endpoint(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // user:password@host
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    format!("{scheme}://{host}")
}

fn shown(api: &AdminApi, r: &AlertRule) -> pb::AlertRuleInfo {
    let mut url = r.url.clone();
    let endpoint = match api.ctx.secrets.open_one(&mut url) {
        Ok(()) => endpoint(url.expose()),
        Err(_) => "(sealed with a key this scheduler lacks)".into(),
    };
    rule_info(r, endpoint)
}

pub async fn add_alert_rule(
    api: &AdminApi,
    p: &Principal,
    req: pb::AddAlertRuleRequest,
) -> Result<pb::AlertRuleInfo> {
    api.allow(p, Action::Operate, &p.workspace, "AddAlertRule", &req.name)
        .await?;
    check_name("alert rule", &req.name)?;
    let url = req.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
        return Err(Error::InvalidArgument(
            "the webhook URL must start with http:// or https:// (at most 2048 characters)".into(),
        ));
    }
    let format = WebhookFormat::parse(&req.format).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "format \"{}\" is not generic, dingtalk or slack",
            req.format
        ))
    })?;
    let mut on = Vec::new();
    for k in &req.on {
        for part in k.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = AlertKind::parse(part).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "\"{part}\" is not an alert trigger: failed, timeout or baseline"
                ))
            })?;
            if !on.contains(&kind) {
                on.push(kind);
            }
        }
    }
    let baseline = Some(req.baseline.trim().to_string()).filter(|b| !b.is_empty());
    if on.is_empty() {
        on = vec![AlertKind::Failed, AlertKind::Timeout];
        if baseline.is_some() {
            on.push(AlertKind::Baseline);
        }
    }
    on.sort();
    let timezone = match req.timezone.trim() {
        "" => "UTC".to_string(),
        tz => tz.to_string(),
    };
    if timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(Error::InvalidArgument(format!(
            "time zone \"{timezone}\" is not an IANA zone (for example Asia/Shanghai)"
        )));
    }
    match (&baseline, on.contains(&AlertKind::Baseline)) {
        (Some(b), true) => {
            chrono::NaiveTime::parse_from_str(b, "%H:%M").map_err(|_| {
                Error::InvalidArgument(format!("baseline \"{b}\" is not a time HH:MM"))
            })?;
        }
        (None, true) => {
            return Err(Error::InvalidArgument(
                "a baseline alert needs --baseline HH:MM".into(),
            ));
        }
        (Some(_), false) => {
            return Err(Error::InvalidArgument(
                "--baseline is given but \"baseline\" is not among the triggers".into(),
            ));
        }
        (None, false) => {}
    }
    let mut tasks = Vec::new();
    for t in &req.tasks {
        tasks.push(require_task(api, &p.workspace, t)?.name);
    }
    let id = format!("{}/{}", p.workspace, req.name);
    if !req.replace && api.ctx.store.alert_rule(&id)?.is_some() {
        return Err(Error::AlreadyExists {
            what: "alert rule",
            name: req.name.clone(),
        });
    }
    let mut sealed = Secret::new(url);
    api.ctx.secrets.seal_one(&mut sealed)?;
    let rule = AlertRule {
        workspace: p.workspace.clone(),
        name: req.name.clone(),
        tasks,
        on,
        baseline,
        timezone,
        url: sealed,
        format,
        created_ms: api.ctx.now_ms(),
    };
    api.audited(
        p,
        "AddAlertRule",
        &req.name,
        Command::PutAlertRule { rule: rule.clone() },
    )
    .await?;
    Ok(rule_info(&rule, endpoint(url)))
}

pub async fn list_alert_rules(
    api: &AdminApi,
    p: &Principal,
    _req: pb::ListAlertRulesRequest,
) -> Result<pb::ListAlertRulesResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListAlertRules", "")
        .await?;
    let rules = api
        .ctx
        .store
        .alert_rules()?
        .iter()
        .filter(|r| r.workspace == p.workspace)
        .map(|r| shown(api, r))
        .collect();
    Ok(pb::ListAlertRulesResponse { rules })
}

pub async fn remove_alert_rule(
    api: &AdminApi,
    p: &Principal,
    req: pb::RemoveAlertRuleRequest,
) -> Result<pb::RemoveAlertRuleResponse> {
    api.allow(
        p,
        Action::Operate,
        &p.workspace,
        "RemoveAlertRule",
        &req.name,
    )
    .await?;
    api.audited(
        p,
        "RemoveAlertRule",
        &req.name,
        Command::RemoveAlertRule {
            id: format!("{}/{}", p.workspace, req.name),
        },
    )
    .await?;
    Ok(pb::RemoveAlertRuleResponse {})
}

fn delivery_info(d: AlertDelivery) -> pb::AlertDeliveryInfo {
    pb::AlertDeliveryInfo {
        rule: d
            .rule
            .split_once('/')
            .map_or(d.rule.as_str(), |(_, n)| n)
            .to_string(),
        event: d.event_id,
        kind: d.kind.as_str().into(),
        task: d
            .task
            .split_once('/')
            .map_or(d.task.as_str(), |(_, n)| n)
            .to_string(),
        instance_id: d.instance_id,
        bizdate: d.bizdate,
        state: d.state.as_str().into(),
        tries: d.tries,
        next_try_ms: d.next_try_ms,
        last_result: d.last_result,
        at_ms: d.at_ms,
    }
}

pub async fn list_alert_deliveries(
    api: &AdminApi,
    p: &Principal,
    req: pb::ListAlertDeliveriesRequest,
) -> Result<pb::ListAlertDeliveriesResponse> {
    api.allow(p, Action::Read, &p.workspace, "ListAlertDeliveries", "")
        .await?;
    let limit = match req.limit {
        0 => 100,
        n => n.min(10_000) as usize,
    };
    let prefix = format!("{}/", p.workspace);
    // Deliveries of every workspace share one index; read until `limit` of ours are found,
    // within a bound so a busy neighbour cannot make this call slow.
    let deliveries = api
        .ctx
        .store
        .alert_deliveries(limit.saturating_mul(20).min(100_000))?
        .into_iter()
        .filter(|d| d.rule.starts_with(&prefix))
        .take(limit)
        .map(delivery_info)
        .collect();
    let pending_events = api
        .ctx
        .store
        .alert_events(10_000)?
        .iter()
        .filter(|e| e.task.starts_with(&prefix))
        .count() as u32;
    Ok(pb::ListAlertDeliveriesResponse {
        deliveries,
        pending_events,
    })
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_show_no_token() {
        assert_eq!(
            endpoint("https://oapi.dingtalk.com/robot/send?access_token=abc"),
            "https://oapi.dingtalk.com"
        );
        assert_eq!(
            endpoint("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            endpoint("http://user:pw@10.0.0.1:8080/x"),
            "http://10.0.0.1:8080"
        );
    }
}
