//! `ferry alert …`: webhook alerts on failures, timeouts and missed baselines, and the record
//! of what was delivered.

use crate::client::{Admin, status};
use crate::format::{Output, table, time};
use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use ferry_proto::admin::v1 as pb;

#[derive(Subcommand, Debug)]
pub enum AlertCmd {
    /// Post to a webhook when a task fails, times out, or has not finished by a time.
    Add {
        name: String,
        /// The webhook URL (prefer --webhook-env: chat webhooks carry a token).
        #[arg(long, required_unless_present = "webhook_env")]
        webhook: Option<String>,
        /// Read the webhook URL from this environment variable.
        #[arg(long, conflicts_with = "webhook")]
        webhook_env: Option<String>,
        /// generic (Ferry's JSON), dingtalk or slack.
        #[arg(long, default_value = "generic")]
        format: String,
        /// Only these tasks (repeatable); default every task of the workspace.
        #[arg(long = "task")]
        tasks: Vec<String>,
        /// Triggers, comma-separated: failed, timeout, baseline (default failed,timeout, plus
        /// baseline with --baseline).
        #[arg(long, value_delimiter = ',')]
        on: Vec<String>,
        /// HH:MM by which a business date's instances must have succeeded (on the next day).
        #[arg(long)]
        baseline: Option<String>,
        /// IANA time zone of the baseline (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// Replace a rule of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// The workspace's alert rules.
    List,
    /// Remove a rule.
    Remove { name: String },
    /// What was sent, newest first: state, tries and the webhook's last answer.
    Deliveries {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

pub async fn run(admin: &mut Admin, out: Output, cmd: AlertCmd) -> anyhow::Result<i32> {
    match cmd {
        AlertCmd::Add {
            name,
            webhook,
            webhook_env,
            format,
            tasks,
            on,
            baseline,
            timezone,
            replace,
        } => {
            let url = match (webhook, webhook_env) {
                (Some(u), _) => u,
                (None, Some(var)) => std::env::var(&var)
                    .with_context(|| format!("environment variable {var} is not set"))?,
                (None, None) => return Err(anyhow!("give --webhook URL or --webhook-env VAR")),
            };
            let r = admin
                .add_alert_rule(pb::AddAlertRuleRequest {
                    name,
                    url,
                    format,
                    tasks,
                    on,
                    baseline: baseline.unwrap_or_default(),
                    timezone: timezone.unwrap_or_default(),
                    replace,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "alert rule {} posts {} to {} on {}",
                r.name,
                r.format,
                r.endpoint,
                describe_triggers(&r)
            );
        }
        AlertCmd::List => {
            let r = admin
                .list_alert_rules(pb::ListAlertRulesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                let rules: Vec<_> = r
                    .rules
                    .iter()
                    .map(|r| {
                        serde_json::json!({"name": r.name, "endpoint": r.endpoint,
                            "format": r.format, "tasks": r.tasks, "on": r.on,
                            "baseline": r.baseline, "timezone": r.timezone})
                    })
                    .collect();
                println!("{}", serde_json::Value::from(rules));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = r
                .rules
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        describe_triggers(r),
                        if r.tasks.is_empty() {
                            "(all)".into()
                        } else {
                            r.tasks.join(",")
                        },
                        r.format.clone(),
                        r.endpoint.clone(),
                    ]
                })
                .collect();
            table(&["RULE", "ON", "TASKS", "FORMAT", "ENDPOINT"], &rows);
        }
        AlertCmd::Remove { name } => {
            admin
                .remove_alert_rule(pb::RemoveAlertRuleRequest { name: name.clone() })
                .await
                .map_err(status)?;
            println!("alert rule {name} removed");
        }
        AlertCmd::Deliveries { limit } => {
            let r = admin
                .list_alert_deliveries(pb::ListAlertDeliveriesRequest { limit })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Json {
                let rows: Vec<_> = r
                    .deliveries
                    .iter()
                    .map(|d| {
                        serde_json::json!({"rule": d.rule, "event": d.event, "kind": d.kind,
                            "task": d.task, "instance": d.instance_id, "bizdate": d.bizdate,
                            "state": d.state, "tries": d.tries, "next_try_ms": d.next_try_ms,
                            "last_result": d.last_result, "at_ms": d.at_ms})
                    })
                    .collect();
                println!("{}", serde_json::Value::from(rows));
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = r
                .deliveries
                .iter()
                .map(|d| {
                    vec![
                        time(d.at_ms),
                        d.rule.clone(),
                        d.kind.clone(),
                        d.task.clone(),
                        d.bizdate.clone(),
                        d.state.clone(),
                        d.tries.to_string(),
                        if d.state == "retrying" {
                            format!("{} (next {})", d.last_result, time(d.next_try_ms))
                        } else {
                            d.last_result.clone()
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "AT",
                    "RULE",
                    "EVENT",
                    "TASK",
                    "BIZDATE",
                    "STATE",
                    "TRIES",
                    "LAST RESULT",
                ],
                &rows,
            );
            if r.pending_events > 0 {
                println!("{} event(s) waiting to be delivered", r.pending_events);
            }
        }
    }
    Ok(0)
}

fn describe_triggers(r: &pb::AlertRuleInfo) -> String {
    r.on.iter()
        .map(|k| {
            if k == "baseline" {
                format!("baseline {} {}", r.baseline, r.timezone)
            } else {
                k.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
