//! Which campaigns an INSERT's events fire, and which pending messages they cancel, in plain
//! Rust. The events trigger (src/api/campaign_trigger.rs) reads the statement's events and the
//! campaigns, and asks `decide`, which asks the outbox (through `OutboxLookup`) only for what
//! the events make it need: the pending messages of the pairs they fire or cancel, and the
//! firing users' recent deliveries when a frequency cap applies. The trigger writes the
//! outcome: the per-event work is a loop here, not a join that Postgres plans and executes for
//! every statement.

use std::collections::{HashMap, HashSet};

use crate::consent::{refusal, ConsentRecord};
use crate::outbox::{cap_reason, longest_cap_window, Cap, Delivery, GlobalCap, Recipient};

/// How long a message cancelled unsent (for instance, because the user's consent refuses it)
/// stands for its (campaign, user) pair: a firing the consents refuse within it writes nothing
/// more, so a user without an opt-in who views fifty pages leaves one record a day, not fifty.
pub const REFUSAL_RECORD_SECONDS: f64 = 86_400.0;

/// A campaign as the trigger needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRule {
    pub campaign_id: i64,
    /// The campaign's name (a consent row may unsubscribe a user from it alone).
    pub name: String,
    pub enabled: bool,
    pub trigger_event_type: String,
    /// The event's item must be in this category (or the event's `category` property say so).
    pub trigger_category: Option<String>,
    /// The campaign has a non-empty `trigger_properties` (tested by Postgres's `@>`).
    pub filters_properties: bool,
    /// Event types that cancel a pending message of this campaign.
    pub cancel_on: Vec<String>,
    /// The channel its messages go out on, and its own frequency cap (for `decide`).
    pub channel: String,
    pub cap: Option<Cap>,
    /// Whether the channel's policy needs the user's opt-in.
    pub requires_opt_in: bool,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Firing {
    pub campaign: usize,
    pub event: usize,
}

/// Events in the order the outbox rules read them: by time, then by id.
pub fn chronological(events: &mut [TriggerEvent]) {
    chronological_by(events, |e| e);
}

/// `chronological` for rows that carry an event (and more, kept with it).
pub fn chronological_by<T>(rows: &mut [T], event: impl Fn(&T) -> &TriggerEvent) {
    rows.sort_by_key(|r| {
        let e = event(r);
        (e.occurred_at, e.event_id)
    });
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

/// What the campaign rules ask of the outbox and the consents while they decide (see
/// `decide`).
pub trait OutboxLookup {
    /// The pending message of each (campaign_id, user_id) pair that has one.
    fn pending_messages(&mut self, pairs: HashSet<(i64, &str)>) -> Vec<PendingMessage>;
    /// The messages handed out (claimed or sent) to these users in the last `window_seconds`.
    fn recent_deliveries(&mut self, users: HashSet<&str>, window_seconds: f64) -> Vec<Delivery>;
    /// The consent rows of each (user_id, channel) pair that has any.
    fn consents(
        &mut self,
        pairs: HashSet<(&str, &str)>,
    ) -> HashMap<(String, String), Vec<ConsentRecord>>;
    /// The (campaign_id, user_id) pairs among these with a message cancelled unsent (never
    /// claimed) written in the last `window_seconds`.
    fn recently_cancelled(
        &mut self,
        pairs: HashSet<(i64, &str)>,
        window_seconds: f64,
    ) -> HashSet<(i64, String)>;
}

/// A message to write for a firing: pending, or cancelled at birth by an event of the same
/// statement (`cancelled_by`, an index into the events) or because the user's consent refuses
/// it (`refused`, the reason, as `claim_messages()` would give it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub firing: Firing,
    pub cancelled_by: Option<usize>,
    pub refused: Option<String>,
}

/// What one statement's events do to the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Messages pending from earlier statements that an event cancels (applied first: a
    /// firing after its pair's cancelled message takes that message's place).
    pub cancel: Vec<Cancellation>,
    /// The messages to write, in firing order.
    pub write: Vec<NewMessage>,
}

/// The whole firing decision for one statement's events (in `chronological` order), given the
/// rules, the global caps, `oldest` as for `fire`, and now (Unix seconds, the caps' clock):
/// - each (campaign, user) fires once, on its first triggering event (`fire`);
/// - a firing is absorbed by its pair's pending message, unless an event of the statement
///   that comes no later cancels that message (a purchase, then a view, in one batch: the
///   view starts a new message, as it would in a statement of its own);
/// - a firing the user's consent refuses (`core::consent::refusal`) is written cancelled with
///   the reason, unless its pair has a message cancelled unsent within
///   `REFUSAL_RECORD_SECONDS` (then nothing is written);
/// - a firing that would break a frequency cap (its campaign's, or a global one) is dropped;
/// - a firing that a later event of the statement cancels (a view, then a purchase) is
///   written cancelled, as the pending row and the UPDATE cancelling it would have left it;
/// - pending messages of earlier statements are cancelled by the earliest request at or after
///   their trigger (`cancellations`).
///
/// The outbox is asked nothing when no event fires or cancels, for consents only for firings
/// that survived absorption, and for deliveries only when a cap applies to one the consents
/// allow.
pub fn decide(
    rules: &[CampaignRule],
    global_caps: &[GlobalCap],
    events: &[TriggerEvent],
    oldest: &[i64],
    now_seconds: f64,
    outbox: &mut impl OutboxLookup,
) -> Decision {
    let mut firings = fire(rules, events, oldest);
    let cancels = cancel_requests(rules, events);
    if firings.is_empty() && cancels.is_empty() {
        return Decision::default();
    }
    let pairs: HashSet<(i64, &str)> = firings
        .iter()
        .chain(&cancels)
        .map(|f| {
            (
                rules[f.campaign].campaign_id,
                events[f.event].user_id.as_str(),
            )
        })
        .collect();
    let pending = outbox.pending_messages(pairs);
    let cancel = if cancels.is_empty() || pending.is_empty() {
        Vec::new()
    } else {
        cancellations(rules, events, &cancels, &pending)
    };
    if !pending.is_empty() && !firings.is_empty() {
        let cancelled_at: HashMap<i64, usize> =
            cancel.iter().map(|c| (c.message_id, c.event)).collect();
        let waiting: HashMap<(i64, &str), Option<usize>> = pending
            .iter()
            .map(|m| {
                (
                    (m.campaign_id, m.user_id.as_str()),
                    cancelled_at.get(&m.message_id).copied(),
                )
            })
            .collect();
        firings.retain(|f| {
            let pair = (
                rules[f.campaign].campaign_id,
                events[f.event].user_id.as_str(),
            );
            match waiting.get(&pair) {
                None => true,
                Some(None) => false,
                Some(Some(cancelled_by)) => *cancelled_by <= f.event,
            }
        });
    }

    // Consent, for the firings absorption left.
    let mut refused: HashMap<Firing, String> = HashMap::new();
    if !firings.is_empty() {
        let pairs: HashSet<(&str, &str)> = firings
            .iter()
            .map(|f| {
                (
                    events[f.event].user_id.as_str(),
                    rules[f.campaign].channel.as_str(),
                )
            })
            .collect();
        let records = outbox.consents(pairs);
        for f in &firings {
            let rule = &rules[f.campaign];
            let user = &events[f.event].user_id;
            let rows = records
                .get(&(user.clone(), rule.channel.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Some(reason) = refusal(&rule.channel, &rule.name, rule.requires_opt_in, rows) {
                refused.insert(*f, reason);
            }
        }
    }
    if !refused.is_empty() {
        let pairs: HashSet<(i64, &str)> = refused
            .keys()
            .map(|f| {
                (
                    rules[f.campaign].campaign_id,
                    events[f.event].user_id.as_str(),
                )
            })
            .collect();
        let recorded = outbox.recently_cancelled(pairs, REFUSAL_RECORD_SECONDS);
        if !recorded.is_empty() {
            firings.retain(|f| {
                !refused.contains_key(f)
                    || !recorded.contains(&(
                        rules[f.campaign].campaign_id,
                        events[f.event].user_id.clone(),
                    ))
            });
        }
    }

    // Caps, for the firings that would send (a refused one is written cancelled whatever the
    // caps say, and counts towards none).
    let longest_window = longest_cap_window(
        global_caps,
        firings
            .iter()
            .filter(|f| !refused.contains_key(f))
            .filter_map(|f| rules[f.campaign].cap.as_ref()),
    );
    if longest_window > 0.0 && firings.iter().any(|f| !refused.contains_key(f)) {
        let users: HashSet<&str> = firings
            .iter()
            .filter(|f| !refused.contains_key(f))
            .map(|f| events[f.event].user_id.as_str())
            .collect();
        let recent = outbox.recent_deliveries(users, longest_window);
        if !recent.is_empty() {
            firings.retain(|f| {
                if refused.contains_key(f) {
                    return true;
                }
                let rule = &rules[f.campaign];
                let recipient = Recipient {
                    message_id: 0,
                    user_id: &events[f.event].user_id,
                    campaign_id: Some(rule.campaign_id),
                    channel: &rule.channel,
                    campaign_cap: rule.cap.as_ref(),
                };
                cap_reason(now_seconds, &recipient, &recent, global_caps).is_none()
            });
        }
    }

    // The firings an event of the same statement cancels: as candidates with ids -1, -2, ...
    // for firings 0, 1, ...; a firing's pair was looked up whenever the statement may cancel
    // it, so none of these is absorbed when written.
    let mut cancelled_by: Vec<Option<usize>> = vec![None; firings.len()];
    if !cancels.is_empty() && !firings.is_empty() {
        let written: Vec<PendingMessage> = firings
            .iter()
            .enumerate()
            .map(|(i, f)| PendingMessage {
                message_id: -1 - i as i64,
                campaign_id: rules[f.campaign].campaign_id,
                user_id: events[f.event].user_id.clone(),
                triggered_at: events[f.event].occurred_at,
                trigger_event_id: events[f.event].event_id,
            })
            .collect();
        for c in cancellations(rules, events, &cancels, &written) {
            cancelled_by[(-1 - c.message_id) as usize] = Some(c.event);
        }
    }
    Decision {
        cancel,
        write: firings
            .into_iter()
            .zip(cancelled_by)
            .map(|(firing, cancelled_by)| NewMessage {
                refused: refused.remove(&firing),
                firing,
                cancelled_by,
            })
            .collect(),
    }
}

/// A message's last_error when an event of the statement cancels it (whether it is written
/// cancelled or was pending from an earlier statement).
pub fn cancel_reason(event: &TriggerEvent) -> String {
    format!(
        "cancelled by event {} ({})",
        event.event_id, event.event_type
    )
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
            channel: "email".into(),
            cap: None,
            name: format!("campaign {id}"),
            requires_opt_in: false,
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

    /// An outbox in memory that counts what it was asked.
    #[derive(Default)]
    struct Outbox {
        pending: Vec<PendingMessage>,
        delivered: Vec<Delivery>,
        /// (user, channel, record)
        consents: Vec<(String, String, ConsentRecord)>,
        /// (campaign_id, user, seconds before NOW) of messages cancelled unsent.
        cancelled: Vec<(i64, String, f64)>,
        asked_pending: usize,
        asked_deliveries: usize,
        asked_consents: usize,
    }

    impl OutboxLookup for Outbox {
        fn pending_messages(&mut self, pairs: HashSet<(i64, &str)>) -> Vec<PendingMessage> {
            self.asked_pending += 1;
            self.pending
                .iter()
                .filter(|m| pairs.contains(&(m.campaign_id, m.user_id.as_str())))
                .cloned()
                .collect()
        }
        fn recent_deliveries(&mut self, users: HashSet<&str>, window: f64) -> Vec<Delivery> {
            self.asked_deliveries += 1;
            self.delivered
                .iter()
                .filter(|d| users.contains(d.user_id.as_str()) && d.at > NOW - window)
                .cloned()
                .collect()
        }
        fn consents(
            &mut self,
            pairs: HashSet<(&str, &str)>,
        ) -> HashMap<(String, String), Vec<ConsentRecord>> {
            self.asked_consents += 1;
            let mut found: HashMap<(String, String), Vec<ConsentRecord>> = HashMap::new();
            for (u, c, r) in &self.consents {
                if pairs.contains(&(u.as_str(), c.as_str())) {
                    found
                        .entry((u.clone(), c.clone()))
                        .or_default()
                        .push(r.clone());
                }
            }
            found
        }
        fn recently_cancelled(
            &mut self,
            pairs: HashSet<(i64, &str)>,
            window: f64,
        ) -> HashSet<(i64, String)> {
            self.cancelled
                .iter()
                .filter(|(c, u, ago)| pairs.contains(&(*c, u.as_str())) && *ago < window)
                .map(|(c, u, _)| (*c, u.clone()))
                .collect()
        }
    }

    const NOW: f64 = 1_000_000.0;

    fn browse_abandonment() -> Vec<CampaignRule> {
        let mut browse = rule(7, "view");
        browse.cancel_on = vec!["purchase".into()];
        vec![browse]
    }

    fn written(d: &Decision) -> Vec<(usize, Option<usize>)> {
        d.write
            .iter()
            .map(|m| (m.firing.event, m.cancelled_by))
            .collect()
    }

    #[test]
    fn decide_asks_nothing_when_nothing_fires_or_cancels() {
        let mut outbox = Outbox::default();
        let events = vec![event(1, "add_to_cart", "a", 10)];
        let d = decide(&browse_abandonment(), &[], &events, &[0], NOW, &mut outbox);
        assert_eq!(d, Decision::default());
        assert_eq!((outbox.asked_pending, outbox.asked_deliveries), (0, 0));
    }

    #[test]
    fn a_pending_message_absorbs_the_firing() {
        let mut outbox = Outbox {
            pending: vec![pending(5, 7, "a", 1, 99)],
            ..Outbox::default()
        };
        let events = vec![event(1, "view", "a", 10), event(2, "view", "b", 10)];
        let d = decide(&browse_abandonment(), &[], &events, &[0], NOW, &mut outbox);
        assert_eq!(written(&d), vec![(1, None)], "only b's view writes");
        assert!(d.cancel.is_empty());
        assert_eq!(
            outbox.asked_deliveries, 0,
            "no cap: deliveries are not read"
        );
    }

    #[test]
    fn purchase_then_view_cancels_the_old_message_and_starts_a_new_one() {
        let mut outbox = Outbox {
            pending: vec![pending(5, 7, "a", 1, 99)],
            ..Outbox::default()
        };
        let events = vec![event(1, "purchase", "a", 10), event(2, "view", "a", 20)];
        let d = decide(&browse_abandonment(), &[], &events, &[0], NOW, &mut outbox);
        assert_eq!(
            d.cancel,
            vec![Cancellation {
                message_id: 5,
                event: 0
            }]
        );
        assert_eq!(written(&d), vec![(1, None)]);
        assert_eq!(cancel_reason(&events[0]), "cancelled by event 1 (purchase)");
    }

    #[test]
    fn view_then_purchase_writes_the_message_cancelled_at_birth() {
        let mut outbox = Outbox::default();
        let events = vec![event(1, "view", "a", 10), event(2, "purchase", "a", 20)];
        let d = decide(&browse_abandonment(), &[], &events, &[0], NOW, &mut outbox);
        assert_eq!(written(&d), vec![(0, Some(1))]);
        assert!(d.cancel.is_empty());
        assert_eq!(outbox.asked_pending, 1);
    }

    #[test]
    fn frequency_caps_drop_firings() {
        let mut rules = browse_abandonment();
        rules[0].cap = Some(Cap {
            max_messages: 1,
            window_seconds: 3600.0,
        });
        let delivery = |user: &str, campaign: i64, channel: &str, ago: f64| Delivery {
            message_id: 1,
            user_id: user.into(),
            campaign_id: Some(campaign),
            channel: channel.into(),
            at: NOW - ago,
        };
        let mut outbox = Outbox {
            delivered: vec![
                delivery("a", 7, "email", 60.0),   // a: the campaign's cap is used up
                delivery("b", 7, "email", 7200.0), // b: outside the window
                delivery("c", 3, "push", 60.0),    // c: another campaign, another channel
                delivery("d", 3, "email", 60.0),   // d: the global email cap is used up
            ],
            ..Outbox::default()
        };
        let global = vec![GlobalCap {
            channel: Some("email".into()),
            cap: Cap {
                max_messages: 1,
                window_seconds: 600.0,
            },
        }];
        let events: Vec<TriggerEvent> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, u)| event(i as i64 + 1, "view", u, 10))
            .collect();
        let d = decide(&rules, &global, &events, &[0], NOW, &mut outbox);
        assert_eq!(written(&d), vec![(1, None), (2, None)]);
        assert_eq!(outbox.asked_deliveries, 1);
    }

    #[test]
    fn a_firing_the_consents_refuse_is_written_cancelled_once_a_day() {
        let mut rules = browse_abandonment();
        rules[0].channel = "whatsapp".into();
        rules[0].requires_opt_in = true;
        rules[0].cap = Some(Cap {
            max_messages: 1,
            window_seconds: 3600.0,
        });
        let subscribed = |user: &str, campaign: &str, status: &str| {
            (
                user.to_string(),
                "whatsapp".to_string(),
                ConsentRecord {
                    campaign: campaign.into(),
                    status: status.into(),
                    source: "form".into(),
                },
            )
        };
        let mut outbox = Outbox {
            consents: vec![
                subscribed("a", "", "subscribed"),
                subscribed("c", "", "subscribed"),
                subscribed("c", "campaign 7", "unsubscribed"),
            ],
            // d's refusal was recorded an hour ago, e's two days ago.
            cancelled: vec![
                (7, "d".into(), 3600.0),
                (7, "e".into(), 2.0 * REFUSAL_RECORD_SECONDS),
            ],
            // b has used up the cap; a refusal is recorded whatever the caps say.
            delivered: vec![Delivery {
                message_id: 1,
                user_id: "b".into(),
                campaign_id: Some(7),
                channel: "whatsapp".into(),
                at: NOW - 60.0,
            }],
            ..Outbox::default()
        };
        let events: Vec<TriggerEvent> = ["a", "b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, u)| event(i as i64 + 1, "view", u, 10))
            .collect();
        let d = decide(&rules, &[], &events, &[0], NOW, &mut outbox);
        let outcome: Vec<(usize, Option<&str>)> = d
            .write
            .iter()
            .map(|m| (m.firing.event, m.refused.as_deref()))
            .collect();
        let no_opt_in = Some("no opt-in: whatsapp needs the user's consent");
        assert_eq!(
            outcome,
            vec![
                (0, None),
                (1, no_opt_in),
                (2, Some("the user unsubscribed from campaign campaign 7")),
                (4, no_opt_in),
            ]
        );
        assert_eq!(outbox.asked_consents, 1);
        assert_eq!(outbox.asked_deliveries, 1, "asked for a alone");
    }
}
