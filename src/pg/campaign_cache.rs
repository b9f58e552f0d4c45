//! The campaigns, the global frequency caps and the channels' opt-in policies, read once per
//! backend and kept until one of their tables changes (see `watched_table`), so an INSERT into
//! the events whose types no campaign cares about costs the events trigger no query at all.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::core::campaigns::{relevant_event_types, CampaignRule, TriggerEvent};
use crate::core::consent::opt_in_by_default;
use crate::core::outbox::{Cap, GlobalCap};
use crate::error::spi_failed;
use crate::pg::quiet_hours::after_quiet_hours;
use crate::pg::spi_row::column;
use crate::pg::watched_table::WatchedTable;

static CAMPAIGNS_TABLE: WatchedTable = WatchedTable::new("personalize.campaigns");
static FREQUENCY_CAPS_TABLE: WatchedTable = WatchedTable::new("personalize.frequency_caps");
static CHANNEL_POLICIES_TABLE: WatchedTable = WatchedTable::new("personalize.channel_policies");

/// One campaign: its rule and what a message of it is written with.
pub struct Campaign {
    pub rule: CampaignRule,
    pub name: String,
    pub delay: Interval,
    pub max_event_age: Interval,
    /// No delivery in these local hours (start == end is no quiet hours at all).
    pub quiet: Option<QuietHours>,
    /// trigger_properties as JSON text, when not `{}`.
    pub trigger_properties: Option<String>,
}

/// A campaign's quiet hours: local times of day (µs after midnight) in a time zone.
pub struct QuietHours {
    pub start: i64,
    pub end: i64,
    pub timezone: String,
}

pub struct Campaigns {
    generation: (u64, u64, u64),
    /// Every campaign, enabled or not (paused ones still cancel), by campaign_id.
    pub list: Vec<Campaign>,
    pub rules: Vec<CampaignRule>,
    pub global_caps: Vec<GlobalCap>,
    /// The event types the trigger reads: triggers of enabled campaigns and cancel types.
    pub relevant_types: Vec<String>,
    /// Trigger types of enabled campaigns with a category (their events need the item's).
    pub category_types: Vec<String>,
    /// Trigger types, ids and filters of enabled campaigns with trigger_properties.
    pub property_types: Vec<String>,
    pub property_ids: Vec<i64>,
    pub property_filters: Vec<String>,
    /// The channels whose policy says whether they need an opt-in (others: the default).
    /// None: a schema from before 0.9.0, which records no consent (nothing is refused).
    opt_in: Option<Vec<(String, bool)>>,
}

impl Campaigns {
    /// Whether messages on `channel` need the user's opt-in (its policy, else the default).
    pub fn requires_opt_in(&self, channel: &str) -> bool {
        requires_opt_in(self.opt_in.as_deref(), channel)
    }

    /// How old an event may be to fire each campaign (its max_event_age before `now`), for the
    /// campaigns the events' types can fire (the others cannot: i64::MAX). Postgres's interval
    /// arithmetic (months and days in the session's time zone), hence here and not in core.
    pub fn oldest_events(&self, events: &[TriggerEvent], now: i64) -> Vec<i64> {
        let now_ts = crate::pg::timestamptz(now);
        let types: HashSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        self.list
            .iter()
            .map(|c| {
                if types.contains(c.rule.trigger_event_type.as_str()) {
                    i64::from(now_ts - c.max_event_age)
                } else {
                    i64::MAX
                }
            })
            .collect()
    }

    /// When a message of campaign `campaign` is due: after the campaign's delay, not before
    /// `now`; quiet hours move a pending message's delivery to their end (not a message
    /// written cancelled).
    pub fn visible_at(&self, campaign: usize, occurred_at: i64, now: i64, cancelled: bool) -> i64 {
        let c = &self.list[campaign];
        let visible = i64::from(crate::pg::timestamptz(occurred_at) + c.delay).max(now);
        match &c.quiet {
            Some(quiet) if !cancelled => after_quiet_hours(visible, quiet),
            _ => visible,
        }
    }
}

fn requires_opt_in(policies: Option<&[(String, bool)]>, channel: &str) -> bool {
    policies.is_some_and(|p| {
        p.iter()
            .find(|(c, _)| c == channel)
            .map_or_else(|| opt_in_by_default(channel), |(_, r)| *r)
    })
}

thread_local! {
    static CAMPAIGNS: RefCell<Option<Rc<Campaigns>>> = const { RefCell::new(None) };
}

pub fn register_invalidation_callbacks() {
    CAMPAIGNS_TABLE.register();
    FREQUENCY_CAPS_TABLE.register();
    CHANNEL_POLICIES_TABLE.register();
}

/// Sends the invalidation that makes every backend re-read the campaigns, caps and policies.
pub fn invalidate() {
    CAMPAIGNS_TABLE.invalidate();
    FREQUENCY_CAPS_TABLE.invalidate();
    CHANNEL_POLICIES_TABLE.invalidate();
}

fn generation() -> (u64, u64, u64) {
    (
        CAMPAIGNS_TABLE.generation(),
        FREQUENCY_CAPS_TABLE.generation(),
        CHANNEL_POLICIES_TABLE.generation(),
    )
}

/// The campaigns in force for this backend.
pub fn current() -> Rc<Campaigns> {
    let generation = generation();
    if let Some(c) = CAMPAIGNS.with(|c| c.borrow().clone()) {
        if c.generation == generation {
            return c;
        }
    }
    let loaded = Rc::new(load(generation));
    CAMPAIGNS.with(|c| *c.borrow_mut() = Some(Rc::clone(&loaded)));
    loaded
}

fn load(generation: (u64, u64, u64)) -> Campaigns {
    Spi::connect(|client| {
        CAMPAIGNS_TABLE.note_relid(client);
        FREQUENCY_CAPS_TABLE.note_relid(client);
        // A schema from before 0.9.0 (the library is updated before ALTER EXTENSION UPDATE)
        // has no consent: nothing is refused, as it was.
        let opt_in: Option<Vec<(String, bool)>> =
            CHANNEL_POLICIES_TABLE.note_relid(client).map(|_| {
                client
                    .select(
                        "SELECT channel, requires_opt_in FROM personalize.channel_policies \
                          WHERE requires_opt_in IS NOT NULL",
                        None,
                        &[],
                    )
                    .unwrap_or_else(|e| spi_failed("cannot read personalize.channel_policies", e))
                    .filter_map(|row| {
                        const WHAT: &str = "cannot read personalize.channel_policies";
                        Some((
                            column::<String>(&row, "channel", WHAT)?,
                            column::<bool>(&row, "requires_opt_in", WHAT)?,
                        ))
                    })
                    .collect()
            });
        let list: Vec<Campaign> = client
            .select(
                "SELECT campaign_id, enabled, name, channel, trigger_event_type, trigger_category, \
                        CASE WHEN trigger_properties <> '{}' THEN CAST(trigger_properties AS text) \
                        END AS trigger_properties, \
                        delay, max_event_age, cancel_on, cap_messages, \
                        date_part('epoch', cap_window) AS cap_window_seconds, \
                        CAST(EXTRACT(epoch FROM quiet_start) * 1000000 AS int8) AS quiet_start_micros, \
                        CAST(EXTRACT(epoch FROM quiet_end) * 1000000 AS int8) AS quiet_end_micros, \
                        quiet_timezone \
                   FROM personalize.campaigns ORDER BY campaign_id",
                None,
                &[],
            )
            .unwrap_or_else(|e| spi_failed("cannot read personalize.campaigns", e))
            .map(|row| {
                const WHAT: &str = "cannot read personalize.campaigns";
                let text = |name: &str| column::<String>(&row, name, WHAT);
                let trigger_properties = text("trigger_properties");
                let cap = match (
                    column::<i32>(&row, "cap_messages", WHAT),
                    column::<f64>(&row, "cap_window_seconds", WHAT),
                ) {
                    (Some(m), Some(w)) => Some(Cap {
                        max_messages: i64::from(m),
                        window_seconds: w,
                    }),
                    _ => None,
                };
                let zero = Interval::from_micros(0);
                let channel = text("channel").unwrap_or_default();
                let name = text("name").unwrap_or_default();
                Campaign {
                    rule: CampaignRule {
                        name: name.clone(),
                        requires_opt_in: requires_opt_in(opt_in.as_deref(), &channel),
                        campaign_id: column::<i64>(&row, "campaign_id", WHAT).unwrap_or(0),
                        enabled: column::<bool>(&row, "enabled", WHAT).unwrap_or(false),
                        trigger_event_type: text("trigger_event_type").unwrap_or_default(),
                        trigger_category: text("trigger_category"),
                        filters_properties: trigger_properties.is_some(),
                        cancel_on: column::<Vec<Option<String>>>(&row, "cancel_on", WHAT)
                            .unwrap_or_default()
                            .into_iter()
                            .flatten()
                            .collect(),
                        channel,
                        cap,
                    },
                    name,
                    delay: column::<Interval>(&row, "delay", WHAT).unwrap_or(zero),
                    max_event_age: column::<Interval>(&row, "max_event_age", WHAT).unwrap_or(zero),
                    quiet: match (
                        column::<i64>(&row, "quiet_start_micros", WHAT),
                        column::<i64>(&row, "quiet_end_micros", WHAT),
                    ) {
                        (Some(start), Some(end)) if start != end => Some(QuietHours {
                            start,
                            end,
                            timezone: text("quiet_timezone").unwrap_or_else(|| "UTC".into()),
                        }),
                        _ => None,
                    },
                    trigger_properties,
                }
            })
            .collect();
        let global_caps: Vec<GlobalCap> = client
            .select(
                "SELECT channel, max_messages, date_part('epoch', \"window\") AS window_seconds \
                   FROM personalize.frequency_caps",
                None,
                &[],
            )
            .unwrap_or_else(|e| spi_failed("cannot read personalize.frequency_caps", e))
            .filter_map(|row| {
                const WHAT: &str = "cannot read personalize.frequency_caps";
                Some(GlobalCap {
                    channel: column::<String>(&row, "channel", WHAT),
                    cap: Cap {
                        max_messages: i64::from(column::<i32>(&row, "max_messages", WHAT)?),
                        window_seconds: column::<f64>(&row, "window_seconds", WHAT)?,
                    },
                })
            })
            .collect();
        let rules: Vec<CampaignRule> = list.iter().map(|c| c.rule.clone()).collect();
        let enabled = || list.iter().filter(|c| c.rule.enabled);
        let mut category_types: Vec<String> = enabled()
            .filter(|c| c.rule.trigger_category.is_some())
            .map(|c| c.rule.trigger_event_type.clone())
            .collect();
        category_types.sort();
        category_types.dedup();
        let with_properties: Vec<&Campaign> = enabled()
            .filter(|c| c.trigger_properties.is_some())
            .collect();
        let mut property_types: Vec<String> = with_properties
            .iter()
            .map(|c| c.rule.trigger_event_type.clone())
            .collect();
        property_types.sort();
        property_types.dedup();
        Campaigns {
            generation,
            relevant_types: relevant_event_types(&rules),
            category_types,
            property_types,
            property_ids: with_properties.iter().map(|c| c.rule.campaign_id).collect(),
            property_filters: with_properties
                .iter()
                .filter_map(|c| c.trigger_properties.clone())
                .collect(),
            rules,
            list,
            global_caps,
            opt_in,
        }
    })
}
