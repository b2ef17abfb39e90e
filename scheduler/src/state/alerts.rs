//! Alerts in the state machine: rules, the events that may concern them, and a record of every
//! delivery.
//!
//! Events are written by the same apply that makes them true (an instance ending failed, an
//! attempt stopped for running too long), into an outbox in the replicated state. Whichever
//! scheduler leads then delivers them ([`crate::alerts`]), and records each try here, so a
//! failover neither forgets a failure nor loses track of what was sent: the new leader finds
//! the outbox and the deliveries as the old one left them. Webhooks are retried with back-off;
//! at-least-once is the promise (a leader killed between a POST and its record sends it again).

use super::command::{Applied, Command};
use super::model::{Instance, InstanceState};
use super::{Store, Writes, key};
use crate::error::{Error, Result};
use ferry_common::secret::Secret;
use serde::{Deserialize, Serialize};

/// Rules, by `workspace/name`.
pub(super) const RULE: &str = "al/";
/// The outbox: events not yet settled, by time.
pub(super) const EVENT: &str = "ae/";
/// Deliveries, by event then rule (so by time).
pub(super) const DELIVERY: &str = "ad/";

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An instance ended failed (its retries spent).
    Failed,
    /// An attempt was stopped for running past its task's timeout.
    Timeout,
    /// An instance had not succeeded by the rule's baseline time.
    Baseline,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Baseline => "baseline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "failed" | "failure" | "fail" => Some(Self::Failed),
            "timeout" => Some(Self::Timeout),
            "baseline" => Some(Self::Baseline),
            _ => None,
        }
    }
}

/// The body a webhook expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Ferry's own JSON: every field of the event.
    Generic,
    /// A DingTalk robot (`{"msgtype":"text",...}`).
    Dingtalk,
    /// A Slack incoming webhook (`{"text":...}`), which also suits Mattermost, Feishu-compatible
    /// relays and most chat tools.
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Dingtalk => "dingtalk",
            Self::Slack => "slack",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "generic" | "json" => Some(Self::Generic),
            "dingtalk" | "ding" => Some(Self::Dingtalk),
            "slack" => Some(Self::Slack),
            _ => None,
        }
    }
}

/// An alert rule of a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub workspace: String,
    pub name: String,
    /// Tasks (`workspace/name`) it watches; empty: every task of the workspace.
    pub tasks: Vec<String>,
    pub on: Vec<AlertKind>,
    /// `HH:MM` on the day after the business date, in `timezone`, for [`AlertKind::Baseline`].
    pub baseline: Option<String>,
    pub timezone: String,
    /// The webhook's URL, sealed: chat webhooks carry their access token in it.
    pub url: Secret,
    pub format: WebhookFormat,
    pub created_ms: i64,
}

impl AlertRule {
    pub fn id(&self) -> String {
        format!("{}/{}", self.workspace, self.name)
    }

    /// Whether the rule watches `task` (`workspace/name`).
    pub fn watches(&self, task: &str) -> bool {
        task.split_once('/')
            .is_some_and(|(w, _)| w == self.workspace)
            && (self.tasks.is_empty() || self.tasks.iter().any(|t| t == task))
    }

    /// Whether the rule concerns `event`.
    pub fn matches(&self, event: &AlertEvent) -> bool {
        self.watches(&event.task)
            && event.at_ms >= self.created_ms
            && self.on.contains(&event.kind)
            && (event.kind != AlertKind::Baseline || event.rule.as_deref() == Some(&self.id()))
    }
}

/// Something that happened to an instance, waiting to be matched with rules and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Its key in the outbox: time first, so the oldest goes first.
    pub id: String,
    pub kind: AlertKind,
    pub instance_id: String,
    pub task: String,
    pub bizdate: String,
    pub state: InstanceState,
    pub error: String,
    pub at_ms: i64,
    /// A baseline event concerns the one rule whose baseline was missed.
    #[serde(default)]
    pub rule: Option<String>,
}

impl AlertEvent {
    pub fn new(kind: AlertKind, inst: &Instance, error: String, at_ms: i64, tag: &str) -> Self {
        Self {
            id: format!("{:020}|{}|{}|{tag}", at_ms.max(0), inst.id, kind.as_str()),
            kind,
            instance_id: inst.id.clone(),
            task: inst.task.clone(),
            bizdate: inst.bizdate.clone(),
            state: inst.state,
            error,
            at_ms,
            rule: None,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Tried and failed; tried again at `next_try_ms`.
    Retrying,
    Delivered,
    /// Every try failed.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One event sent (or being sent) to one rule's webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDelivery {
    pub event_id: String,
    pub rule: String,
    pub kind: AlertKind,
    pub instance_id: String,
    pub task: String,
    pub bizdate: String,
    pub state: DeliveryState,
    pub tries: u32,
    pub next_try_ms: i64,
    /// What the last try got: an HTTP status and body excerpt, or the connection error.
    pub last_result: String,
    pub at_ms: i64,
}

impl AlertDelivery {
    fn key(&self) -> Vec<u8> {
        key(DELIVERY, &format!("{}#{}", self.event_id, self.rule))
    }
}

impl Store {
    pub(super) fn apply_alert(&self, cmd: Command, w: &mut Writes) -> Result<Applied> {
        match cmd {
            Command::PutAlertRule { rule } => {
                w.put(key(RULE, &rule.id()), &rule)?;
            }
            Command::RemoveAlertRule { id } => {
                if self.get_in::<AlertRule>(w, RULE, &id)?.is_none() {
                    return Err(Error::NotFound {
                        what: "alert rule",
                        name: id,
                        hint: "see `ferry alert list`",
                    });
                }
                w.remove(key(RULE, &id));
            }
            Command::RaiseAlert { event } => {
                // Idempotent: an event raised again (a baseline checked by a new leader) that
                // is waiting or was delivered changes nothing.
                let delivered = self
                    .keys_in(w, &format!("{DELIVERY}{}#", event.id))?
                    .into_iter()
                    .next()
                    .is_some();
                if delivered || self.get_in::<AlertEvent>(w, EVENT, &event.id)?.is_some() {
                    return Ok(Applied::Stale("already raised".into()));
                }
                w.put(key(EVENT, &event.id), &event)?;
            }
            Command::SettleAlerts {
                deliveries,
                done_events,
            } => {
                for d in deliveries {
                    w.put(d.key(), &d)?;
                }
                for id in done_events {
                    w.remove(key(EVENT, &id));
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{other:?} is not an alert command"
                )));
            }
        }
        Ok(Applied::Done)
    }

    /// Writes the events an instance's change makes: called with every instance write.
    pub(super) fn alert_on_change(
        &self,
        w: &mut Writes,
        before: Option<&Instance>,
        inst: &Instance,
    ) -> Result<()> {
        // Called when the state changed; a record created already failed is not an event.
        if inst.state == InstanceState::Failed && before.is_some() {
            let error = inst
                .history
                .last()
                .map(|t| t.reason.clone())
                .unwrap_or_default();
            let tag = inst.attempts.len().to_string();
            let event = AlertEvent::new(AlertKind::Failed, inst, error, inst.finished_ms, &tag);
            w.put(key(EVENT, &event.id), &event)?;
        }
        Ok(())
    }

    /// Writes the event of an attempt stopped for its timeout.
    pub(super) fn alert_timeout(
        &self,
        w: &mut Writes,
        instance_id: &str,
        attempt_id: &str,
        error: &str,
        at_ms: i64,
    ) -> Result<()> {
        let Some(inst) = self.get_in::<Instance>(w, super::INSTANCE, instance_id)? else {
            return Ok(());
        };
        let event = AlertEvent::new(
            AlertKind::Timeout,
            &inst,
            error.to_string(),
            at_ms,
            attempt_id,
        );
        w.put(key(EVENT, &event.id), &event)
    }

    pub fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        self.scan(RULE)
    }

    pub fn alert_rule(&self, id: &str) -> Result<Option<AlertRule>> {
        self.get(&key(RULE, id))
    }

    /// The outbox, oldest first, at most `limit`.
    pub fn alert_events(&self, limit: usize) -> Result<Vec<AlertEvent>> {
        self.tree
            .scan_prefix(EVENT.as_bytes())
            .take(limit)
            .map(|item| Ok(serde_json::from_slice(&item?.1)?))
            .collect()
    }

    /// The deliveries of one event.
    pub fn alert_deliveries_of(&self, event_id: &str) -> Result<Vec<AlertDelivery>> {
        self.scan(&format!("{DELIVERY}{event_id}#"))
    }

    /// Deliveries, newest first, at most `limit`.
    pub fn alert_deliveries(&self, limit: usize) -> Result<Vec<AlertDelivery>> {
        self.tree
            .scan_prefix(DELIVERY.as_bytes())
            .rev()
            .take(limit)
            .map(|item| Ok(serde_json::from_slice(&item?.1)?))
            .collect()
    }
}
