//! The transactional outbox's writer: a statement-level AFTER INSERT trigger on
//! `personalize.events` that writes each campaign's messages in the events' own transaction,
//! so a message exists exactly when its event does.
//!
//! Per statement it costs, when no campaign cares about the events' types, nothing but a
//! look at the cached campaigns (`pg::campaign_cache`). Otherwise it reads the statement's
//! events from its transition table (`pg::transition_table`, no query), lets
//! `core::campaigns::decide` apply the rules (firing, absorption by a pending message,
//! frequency caps, cancellation, also of messages fired in the same statement, and the user's
//! consent), which probes the outbox's and the consents' indexes only for what it needs
//! (`pg::outbox_probe`, no query), and hands the outcome to `pg::outbox_sink`. A message the
//! consents refuse is written cancelled with the reason. A campaign's segment is checked when
//! its message is due, by `claim_messages`, not here.

use pgrx::prelude::*;

use crate::core::campaigns::{self, cancel_reason, Decision, TriggerEvent};
use crate::error::PersonalizeError;
use crate::pg::campaign_cache;
use crate::pg::outbox_probe::OutboxLookups;
use crate::pg::outbox_sink::{self, NewMessage, OutboxSink};
use crate::pg::transition_table::{self, NewEvent};
use crate::pg::POSTGRES_EPOCH_UNIX_MICROS;

/// The trigger function (see the module comment). Created by sql/campaigns.sql as
/// `personalize._events_fire_campaigns()` on `AFTER INSERT ... REFERENCING NEW TABLE AS
/// new_events FOR EACH STATEMENT`.
#[pg_trigger]
fn _events_fire_campaigns<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, PersonalizeError> {
    // Only events tracked through the extension fire campaigns: a restore, a COPY of history
    // or a replicated insert must not write messages (the restored outbox has them already).
    if !crate::pg::ingest::storing_tracked_events() {
        return Ok(None);
    }
    let set = campaign_cache::current();
    if set.relevant_types.is_empty() {
        return Ok(None);
    }
    let mut read = transition_table::new_events(trigger, &set);
    if read.is_empty() {
        return Ok(None);
    }
    campaigns::chronological_by(&mut read, |r| &r.event);
    let (events, item_ids): (Vec<TriggerEvent>, Vec<Option<String>>) = read
        .into_iter()
        .map(|NewEvent { event, item_id }| (event, item_id))
        .unzip();

    // SAFETY: a plain backend call (now()).
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let oldest = set.oldest_events(&events, now);
    let now_seconds = (now + POSTGRES_EPOCH_UNIX_MICROS) as f64 / 1e6;
    let decision = {
        let mut outbox = OutboxLookups::new(now);
        campaigns::decide(
            &set.rules,
            &set.global_caps,
            &events,
            &oldest,
            now_seconds,
            &mut outbox,
        )
    };
    if decision == Decision::default() {
        return Ok(None);
    }
    Spi::connect_mut(|client| {
        // Cancel the messages pending from earlier statements first: a firing that comes
        // after its pair's pending message was cancelled takes its place in the one-pending
        // index.
        let (ids, reasons) = decision
            .cancel
            .iter()
            .map(|c| (c.message_id, cancel_reason(&events[c.event])))
            .unzip();
        outbox_sink::cancel_pending(client, ids, reasons);
        if decision.write.is_empty() {
            return;
        }
        let mut sink = OutboxSink::open();
        let mut due_channels: Vec<&str> = Vec::new();
        for m in &decision.write {
            let c = &set.list[m.firing.campaign];
            let e = &events[m.firing.event];
            let cancelled = m.cancelled_by.is_some() || m.refused.is_some();
            let visible = set.visible_at(m.firing.campaign, e.occurred_at, now, cancelled);
            if !cancelled && visible <= now {
                due_channels.push(&c.rule.channel);
            }
            let message = NewMessage {
                campaign_id: c.rule.campaign_id,
                campaign: &c.name,
                channel: &c.rule.channel,
                user_id: &e.user_id,
                item_id: item_ids[m.firing.event].as_deref(),
                trigger_event_id: e.event_id,
                triggered_at: e.occurred_at,
                visible_at: visible,
                idempotency_key: crate::pg::random::fast_uuid(),
            };
            let reason = match (m.cancelled_by, &m.refused) {
                (Some(by), _) => Some(cancel_reason(&events[by])),
                (None, refused) => refused.clone(),
            };
            sink.write(&message, reason);
        }
        sink.finish(client);
        // Wakes idle workers (LISTEN personalize_outbox) when something is due now, once per
        // channel. A message absorbed by a concurrent writer's may wake them for nothing,
        // which costs a worker one empty claim; reading back what was written would cost
        // every statement more.
        due_channels.sort_unstable();
        due_channels.dedup();
        for channel in due_channels {
            crate::pg::notify("personalize_outbox", channel);
        }
    });
    Ok(None)
}

/// Makes every backend re-read the campaigns and frequency caps (at commit; this one at once).
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_campaign_cache() {
    campaign_cache::invalidate();
}
