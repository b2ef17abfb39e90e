//! Delivering alerts: the leader matches the outbox's events with the rules, posts webhooks,
//! retries with back-off, and records every try in the replicated state.
//!
//! Only the leader sends, and it decides from the replicated outbox and delivery records alone,
//! so a failover continues where the old leader stopped (tries already recorded are not
//! repeated; one in flight when the leader died may be sent twice: at-least-once). Baselines
//! ("not finished by 06:00") are noticed here, by the clock the scheduler is given, and raised
//! as events through raft like any other, identified by (rule, instance, day) so a new leader
//! checking again raises nothing twice.
//!
//! A webhook URL often carries its chat robot's access token, so it is sealed at rest and never
//! logged or recorded: records say which rule and what the server answered, not where it was.

use crate::context::Context;
use crate::error::Result;
use crate::state::alerts::{
    AlertDelivery, AlertEvent, AlertKind, AlertRule, DeliveryState, WebhookFormat,
};
use crate::state::command::Command;
use crate::state::model::InstanceState;
use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the leader looks at the outbox.
const ROUND: Duration = Duration::from_secs(1);
/// Tries per delivery before it is recorded as failed.
pub const MAX_TRIES: u32 = 5;
/// The wait after the first failed try; doubled after each further one.
const FIRST_BACKOFF_MS: i64 = 10_000;
const MAX_BACKOFF_MS: i64 = 600_000;
/// Events handled per round (the rest wait for the next).
const EVENTS_PER_ROUND: usize = 200;
/// Webhooks posted at once.
const PARALLEL_POSTS: usize = 8;

/// The wait before try `tries + 1`.
pub fn backoff_ms(tries: u32) -> i64 {
    FIRST_BACKOFF_MS
        .saturating_mul(1i64 << tries.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_MS)
}

/// The HTTP client of alert webhooks: rustls with ring and the operating system's roots.
pub fn http_client() -> std::result::Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS for alert webhooks: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent("ferry-scheduler alerts")
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| format!("alert HTTP client: {e}"))
}

/// Delivers alerts while this scheduler leads, until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let http = match http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alerts cannot be delivered by this scheduler");
            return;
        }
    };
    let mut baselines_checked: HashMap<String, String> = HashMap::new();
    loop {
        if crate::cluster::leading(&ctx) {
            if let Err(e) = check_baselines(&ctx, &mut baselines_checked).await {
                warn!(error = %e, "checking alert baselines failed; retrying");
            }
            if let Err(e) = round(&ctx, &http).await {
                warn!(error = %e, "alert round failed; retrying");
            }
        } else {
            // A new leader checks every baseline again (events are idempotent).
            baselines_checked.clear();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(ROUND) => {}
        }
    }
}

/// The baseline instant of `rule` on `day` (its `HH:MM` in its zone), and the business date it
/// watches (the day before).
fn baseline_of(rule: &AlertRule, now_ms: i64) -> Option<(i64, String, String)> {
    let time = chrono::NaiveTime::parse_from_str(rule.baseline.as_deref()?, "%H:%M").ok()?;
    let tz: chrono_tz::Tz = rule.timezone.parse().ok()?;
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()?
        .with_timezone(&tz);
    let day = now.date_naive();
    // A baseline inside a spring-forward gap falls at the first instant after it.
    let at = (0..=120)
        .find_map(|m| {
            tz.from_local_datetime(&day.and_time(time + chrono::Duration::minutes(m)))
                .earliest()
        })?
        .timestamp_millis();
    let bizdate = (day - chrono::Duration::days(1))
        .format("%Y%m%d")
        .to_string();
    Some((at, bizdate, day.to_string()))
}

/// Raises an event for every instance a rule's baseline finds unfinished, once per rule and day (`checked`
/// remembers the days done; events are idempotent anyway).
pub async fn check_baselines(ctx: &Context, checked: &mut HashMap<String, String>) -> Result<()> {
    let now = ctx.now_ms();
    for rule in ctx.store.alert_rules()? {
        if !rule.on.contains(&AlertKind::Baseline) {
            continue;
        }
        let Some((at_ms, bizdate, day)) = baseline_of(&rule, now) else {
            continue;
        };
        if now < at_ms || checked.get(&rule.id()) == Some(&day) {
            continue;
        }
        let late: Vec<_> = ctx
            .store
            .instances_of_bizdate(&bizdate)?
            .into_iter()
            .filter(|i| {
                rule.watches(&i.task)
                    && !matches!(i.state, InstanceState::Success | InstanceState::DryRun)
                    && i.created_ms <= at_ms
            })
            .collect();
        for inst in &late {
            let mut event = AlertEvent::new(
                AlertKind::Baseline,
                inst,
                format!(
                    "not finished by {} {} (state {})",
                    rule.baseline.as_deref().unwrap_or_default(),
                    rule.timezone,
                    inst.state.as_str()
                ),
                at_ms,
                &rule.id(),
            );
            event.rule = Some(rule.id());
            ctx.store.propose(Command::RaiseAlert { event }).await?;
        }
        if !late.is_empty() {
            info!(rule = %rule.id(), bizdate, late = late.len(), "baseline missed");
        }
        checked.insert(rule.id(), day);
    }
    Ok(())
}

/// One pass over the outbox: tries what is due and records what happened.
pub async fn round(ctx: &Context, http: &reqwest::Client) -> Result<()> {
    let events = ctx.store.alert_events(EVENTS_PER_ROUND)?;
    if events.is_empty() {
        return Ok(());
    }
    let rules = ctx.store.alert_rules()?;
    let now = ctx.now_ms();
    let mut done_events = Vec::new();
    let mut due: Vec<(AlertEvent, AlertRule, Option<AlertDelivery>)> = Vec::new();
    for event in events {
        let matching: Vec<&AlertRule> = rules.iter().filter(|r| r.matches(&event)).collect();
        let known: HashMap<String, AlertDelivery> = ctx
            .store
            .alert_deliveries_of(&event.id)?
            .into_iter()
            .map(|d| (d.rule.clone(), d))
            .collect();
        let mut open = false;
        for rule in matching {
            match known.get(&rule.id()) {
                Some(d) if d.state != DeliveryState::Retrying => {}
                Some(d) if d.next_try_ms > now => open = true,
                prior => {
                    open = true;
                    due.push((event.clone(), rule.clone(), prior.cloned()));
                }
            }
        }
        if !open {
            done_events.push(event.id.clone());
        }
    }
    let tried: Vec<AlertDelivery> = futures_util::stream::iter(due)
        .map(|(event, rule, prior)| async move { attempt(ctx, http, &event, &rule, prior).await })
        .buffer_unordered(PARALLEL_POSTS)
        .collect()
        .await;
    if tried.is_empty() && done_events.is_empty() {
        return Ok(());
    }
    ctx.store
        .propose(Command::SettleAlerts {
            deliveries: tried,
            done_events,
        })
        .await?;
    Ok(())
}

/// One try of one delivery; the record it leaves.
async fn attempt(
    ctx: &Context,
    http: &reqwest::Client,
    event: &AlertEvent,
    rule: &AlertRule,
    prior: Option<AlertDelivery>,
) -> AlertDelivery {
    let tries = prior.as_ref().map_or(0, |d| d.tries) + 1;
    let outcome = post(ctx, http, event, rule).await;
    let now = ctx.now_ms();
    let (state, last_result, next_try_ms) = match outcome {
        Ok(answer) => (DeliveryState::Delivered, answer, 0),
        Err(e) if tries >= MAX_TRIES => (DeliveryState::Failed, e, 0),
        Err(e) => (
            DeliveryState::Retrying,
            e,
            now.saturating_add(backoff_ms(tries)),
        ),
    };
    match state {
        DeliveryState::Delivered => info!(
            rule = %rule.id(), event = %event.id, instance = %event.instance_id, tries,
            "alert delivered"
        ),
        _ => warn!(
            rule = %rule.id(), event = %event.id, instance = %event.instance_id, tries,
            result = %last_result, state = state.as_str(), "alert webhook failed"
        ),
    }
    AlertDelivery {
        event_id: event.id.clone(),
        rule: rule.id(),
        kind: event.kind,
        instance_id: event.instance_id.clone(),
        task: event.task.clone(),
        bizdate: event.bizdate.clone(),
        state,
        tries,
        next_try_ms,
        last_result,
        at_ms: now,
    }
}

/// The one-line summary chat tools show.
pub fn summary(event: &AlertEvent) -> String {
    let what = match event.kind {
        AlertKind::Failed => "failed",
        AlertKind::Timeout => "timed out",
        AlertKind::Baseline => "missed its baseline",
    };
    let mut text = format!(
        "[Ferry] {} {what} (business date {}, instance {})",
        event.task, event.bizdate, event.instance_id
    );
    if !event.error.is_empty() {
        text.push_str(": ");
        text.push_str(&crate::state::model::cut_text(&event.error, 500));
    }
    text
}

/// The body `format` expects.
pub fn body(format: WebhookFormat, rule: &AlertRule, event: &AlertEvent) -> serde_json::Value {
    let text = summary(event);
    match format {
        WebhookFormat::Generic => serde_json::json!({
            "rule": rule.id(),
            "event": event.kind.as_str(),
            "event_id": event.id,
            "task": event.task,
            "instance": event.instance_id,
            "bizdate": event.bizdate,
            "state": event.state.as_str(),
            "error": event.error,
            "at": Utc.timestamp_millis_opt(event.at_ms).single().map(|t| t.to_rfc3339()),
            "text": text,
        }),
        WebhookFormat::Dingtalk => serde_json::json!({
            "msgtype": "text",
            "text": {"content": text},
        }),
        WebhookFormat::Slack => serde_json::json!({"text": text}),
    }
}

async fn post(
    ctx: &Context,
    http: &reqwest::Client,
    event: &AlertEvent,
    rule: &AlertRule,
) -> std::result::Result<String, String> {
    let mut url = rule.url.clone();
    ctx.secrets
        .open_one(&mut url)
        .map_err(|e| format!("cannot open the webhook URL: {e}"))?;
    let response = http
        .post(url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body(rule.format, rule, event).to_string())
        .send()
        .await
        // The error would print the URL, token included.
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let excerpt = crate::state::model::cut_text(text.trim(), 200).into_owned();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {excerpt}"));
    }
    // DingTalk answers 200 with an error code in the body.
    if rule.format == WebhookFormat::Dingtalk
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && v.get("errcode")
            .and_then(|c| c.as_i64())
            .is_some_and(|c| c != 0)
    {
        return Err(format!("HTTP {status}, DingTalk refused: {excerpt}"));
    }
    Ok(format!("HTTP {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(1), 10_000);
        assert_eq!(backoff_ms(2), 20_000);
        assert_eq!(backoff_ms(4), 80_000);
        assert_eq!(backoff_ms(30), MAX_BACKOFF_MS);
    }
}
