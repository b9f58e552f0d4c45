//! Which campaigns an INSERT's events fire, and which pending messages they cancel, in plain
//! Rust. The events trigger (src/api/campaign_trigger.rs) reads the statement's events, the
//! enabled campaigns and the firing users' pending messages, asks `fire`, `cancel_requests`
//! and `cancellations`, and writes the outcome with one INSERT and one UPDATE by message id:
//! the per-event work is a loop here, not a join that Postgres plans and executes for every
//! statement.

use std::collections::{HashMap, HashSet};

/// A campaign as the trigger needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRule {
    pub campaign_id: i64,
    pub enabled: bool,
    pub trigger_event_type: String,
    /// The event's item must be in this category (or the event's `category` property say so).
    pub trigger_category: Option<String>,
    /// The campaign has a non-empty `trigger_properties` (tested by Postgres's `@>`).
    pub filters_properties: bool,
    /// Event types that cancel a pending message of this campaign.
    pub cancel_on: Vec<String>,
}

/// One inserted event, with what the rules look at.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerEvent {
    pub event_id: i64,
    pub event_type: String,
    pub user_id: String,
    /// Microseconds (any epoch, the same for every time here).
    pub occurred_at: i64,
    pub item_category: Option<String>,
    /// The event's `properties.category`.
    pub property_category: Option<String>,
    /// Campaigns (ids) whose `trigger_properties` the event's properties contain.
    pub property_matches: Vec<i64>,
}

/// The campaign (index into the rules) an event (index into the events) fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    pub campaign: usize,
    pub event: usize,
}

/// Events in the order the outbox rules read them: by time, then by id.
pub fn chronological(events: &mut [TriggerEvent]) {
    events.sort_by_key(|e| (e.occurred_at, e.event_id));
}

/// Whether the event meets the campaign's trigger (type, category, properties) and is not
/// older than `oldest` (exclusive).
fn triggers(rule: &CampaignRule, event: &TriggerEvent, oldest: i64) -> bool {
    rule.enabled
        && rule.trigger_event_type == event.event_type
        && event.occurred_at > oldest
        && rule.trigger_category.as_ref().is_none_or(|c| {
            event.item_category.as_ref() == Some(c) || event.property_category.as_ref() == Some(c)
        })
        && (!rule.filters_properties || event.property_matches.contains(&rule.campaign_id))
}

/// For each (campaign, user), the first event (in `chronological` order) that fires the
/// campaign. `oldest[i]` is the time before which campaign i ignores events (its
/// max_event_age before now). The result is in campaign order, then event order.
pub fn fire(rules: &[CampaignRule], events: &[TriggerEvent], oldest: &[i64]) -> Vec<Firing> {
    let mut out = Vec::new();
    let mut seen: HashSet<(usize, &str)> = HashSet::new();
    for (ci, rule) in rules.iter().enumerate() {
        for (ei, event) in events.iter().enumerate() {
            if triggers(rule, event, oldest[ci]) && seen.insert((ci, event.user_id.as_str())) {
                out.push(Firing {
                    campaign: ci,
                    event: ei,
                });
            }
        }
    }
    out
}

/// The (campaign, event) pairs where the event's type cancels the campaign's pending message
/// for the event's user (the outbox decides which message, if any, is pending and older).
/// Paused campaigns are included: a purchase still cancels what waits for them.
pub fn cancel_requests(rules: &[CampaignRule], events: &[TriggerEvent]) -> Vec<Firing> {
    let mut out = Vec::new();
    for (ei, event) in events.iter().enumerate() {
        for (ci, rule) in rules.iter().enumerate() {
            if rule.cancel_on.contains(&event.event_type) {
                out.push(Firing {
                    campaign: ci,
                    event: ei,
                });
            }
        }
    }
    out
}

/// A pending message in the outbox, as the cancellation rule needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMessage {
    pub message_id: i64,
    pub campaign_id: i64,
    pub user_id: String,
    /// Microseconds, on the events' clock.
    pub triggered_at: i64,
    pub trigger_event_id: i64,
}

/// A pending message to cancel and the event (index into the events) that cancels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancellation {
    pub message_id: i64,
    pub event: usize,
}

/// Which of the pending messages the requests (`cancel_requests`) cancel: a message is
/// cancelled by the earliest request (events in `chronological` order) for its campaign and
/// user that happened at or after its trigger and is not its trigger event itself.
pub fn cancellations(
    rules: &[CampaignRule],
    events: &[TriggerEvent],
    requests: &[Firing],
    pending: &[PendingMessage],
) -> Vec<Cancellation> {
    // Requests per (campaign, user), in event order (cancel_requests is event-major).
    let mut by_pair: HashMap<(i64, &str), Vec<usize>> = HashMap::new();
    for r in requests {
        let key = (
            rules[r.campaign].campaign_id,
            events[r.event].user_id.as_str(),
        );
        by_pair.entry(key).or_default().push(r.event);
    }
    pending
        .iter()
        .filter_map(|m| {
            let candidates = by_pair.get(&(m.campaign_id, m.user_id.as_str()))?;
            let event = candidates.iter().copied().find(|&e| {
                events[e].occurred_at >= m.triggered_at && events[e].event_id != m.trigger_event_id
            })?;
            Some(Cancellation {
                message_id: m.message_id,
                event,
            })
        })
        .collect()
}

/// The event types the trigger must read: triggers of enabled campaigns and every cancel type.
pub fn relevant_event_types(rules: &[CampaignRule]) -> Vec<String> {
    let mut types: Vec<String> = rules
        .iter()
        .filter(|r| r.enabled)
        .map(|r| r.trigger_event_type.clone())
        .chain(rules.iter().flat_map(|r| r.cancel_on.iter().cloned()))
        .collect();
    types.sort();
    types.dedup();
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: i64, ty: &str) -> CampaignRule {
        CampaignRule {
            campaign_id: id,
            enabled: true,
            trigger_event_type: ty.into(),
            trigger_category: None,
            filters_properties: false,
            cancel_on: vec![],
        }
    }

    fn event(id: i64, ty: &str, user: &str, at: i64) -> TriggerEvent {
        TriggerEvent {
            event_id: id,
            event_type: ty.into(),
            user_id: user.into(),
            occurred_at: at,
            item_category: None,
            property_category: None,
            property_matches: vec![],
        }
    }

    fn pending(id: i64, campaign: i64, user: &str, at: i64, trigger: i64) -> PendingMessage {
        PendingMessage {
            message_id: id,
            campaign_id: campaign,
            user_id: user.into(),
            triggered_at: at,
            trigger_event_id: trigger,
        }
    }

    #[test]
    fn the_earliest_later_cancelling_event_cancels() {
        let mut browse = rule(7, "view");
        browse.cancel_on = vec!["purchase".into()];
        let rules = vec![rule(1, "purchase"), browse];
        let events = vec![
            event(10, "purchase", "a", 50),  // before the message's trigger
            event(11, "view", "a", 100),     // the trigger (same statement)
            event(12, "purchase", "a", 100), // same time, not the trigger: cancels
            event(13, "purchase", "a", 200),
            event(14, "purchase", "b", 300),
        ];
        let requests = cancel_requests(&rules, &events);
        assert_eq!(requests.len(), 4, "only campaign 7 cancels on purchase");
        let msgs = vec![
            pending(1, 7, "a", 100, 11),
            pending(2, 7, "b", 400, 99), // triggered after b's purchase: stays
            pending(3, 8, "a", 0, 1),    // another campaign: stays
            pending(4, 7, "c", 0, 1),    // no purchase of c: stays
        ];
        assert_eq!(
            cancellations(&rules, &events, &requests, &msgs),
            vec![Cancellation {
                message_id: 1,
                event: 2
            }]
        );
        // A message triggered by the purchase event itself is not cancelled by it.
        let own = vec![pending(5, 7, "a", 200, 13)];
        assert!(cancellations(
            &rules,
            &events[3..4],
            &cancel_requests(&rules, &events[3..4]),
            &own
        )
        .is_empty());
    }

    #[test]
    fn first_event_per_campaign_and_user() {
        let rules = vec![rule(1, "view"), rule(2, "add_to_cart")];
        let mut events = vec![
            event(12, "view", "u1", 20),
            event(10, "view", "u1", 10),
            event(11, "view", "u2", 10),
            event(13, "add_to_cart", "u1", 30),
            event(14, "purchase", "u1", 40),
        ];
        chronological(&mut events);
        let fired: Vec<(i64, i64)> = fire(&rules, &events, &[0, 0])
            .into_iter()
            .map(|f| (rules[f.campaign].campaign_id, events[f.event].event_id))
            .collect();
        assert_eq!(fired, vec![(1, 10), (1, 11), (2, 13)]);
    }

    #[test]
    fn ties_in_time_go_to_the_lower_event_id() {
        let rules = vec![rule(1, "view")];
        let mut events = vec![event(9, "view", "u", 5), event(3, "view", "u", 5)];
        chronological(&mut events);
        let f = fire(&rules, &events, &[0]);
        assert_eq!(events[f[0].event].event_id, 3);
    }

    #[test]
    fn category_from_the_item_or_the_property() {
        let mut r = rule(1, "view");
        r.trigger_category = Some("cameras".into());
        let mut by_item = event(1, "view", "a", 5);
        by_item.item_category = Some("cameras".into());
        let mut by_property = event(2, "view", "b", 5);
        by_property.property_category = Some("cameras".into());
        let mut other = event(3, "view", "c", 5);
        other.item_category = Some("lenses".into());
        other.property_category = Some("tripods".into());
        let none = event(4, "view", "d", 5);
        let events = vec![by_item, by_property, other, none];
        let fired: Vec<usize> = fire(&[r], &events, &[0]).iter().map(|f| f.event).collect();
        assert_eq!(fired, vec![0, 1]);
    }

    #[test]
    fn property_filters_and_age_and_paused_campaigns() {
        let mut with_props = rule(7, "view");
        with_props.filters_properties = true;
        let mut paused = rule(8, "view");
        paused.enabled = false;
        let mut matching = event(1, "view", "a", 100);
        matching.property_matches = vec![7];
        let plain = event(2, "view", "b", 100);
        let mut old = event(3, "view", "c", 50);
        old.property_matches = vec![7];
        let events = vec![matching, plain, old];
        let fired = fire(&[with_props, paused], &events, &[50, 0]);
        assert_eq!(
            fired,
            vec![Firing {
                campaign: 0,
                event: 0
            }]
        );
    }

    #[test]
    fn an_old_event_does_not_hide_a_recent_one() {
        let rules = vec![rule(1, "view")];
        let events = vec![event(1, "view", "u", 10), event(2, "view", "u", 90)];
        let f = fire(&rules, &events, &[50]);
        assert_eq!(
            f,
            vec![Firing {
                campaign: 0,
                event: 1
            }]
        );
    }

    #[test]
    fn cancels_reach_paused_campaigns_and_types_are_collected() {
        let mut a = rule(1, "view");
        a.cancel_on = vec!["purchase".into()];
        let mut b = rule(2, "add_to_cart");
        b.cancel_on = vec!["purchase".into(), "refund".into()];
        b.enabled = false;
        let c = rule(3, "purchase");
        let events = vec![event(1, "purchase", "u", 5), event(2, "view", "u", 6)];
        let rules = vec![a, b, c];
        assert_eq!(
            cancel_requests(&rules, &events),
            vec![
                Firing {
                    campaign: 0,
                    event: 0
                },
                Firing {
                    campaign: 1,
                    event: 0
                }
            ]
        );
        assert_eq!(
            relevant_event_types(&rules),
            vec!["purchase", "refund", "view"]
        );
    }
}
