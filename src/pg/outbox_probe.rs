//! The outbox's lookups by key, read through its indexes without a query
//! (`pg::index_probe`): a user's pending message per campaign (`outbox_one_pending_idx`), a
//! user's messages handed out lately (`outbox_user_idx`, for the frequency caps) and a pair's
//! messages cancelled unsent lately (`outbox_cancelled_idx`, so a user the consents refuse
//! gets one cancelled record a day, not one per page view). With the consents' probe
//! (`pg::consent_check`) they answer what `core::campaigns::decide` asks.

use std::collections::{HashMap, HashSet};

use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::core::campaigns::{OutboxLookup, PendingMessage};
use crate::core::consent::ConsentRecord;
use crate::core::outbox::Delivery;
use crate::pg::index_probe::{KeyColumn, TableProbe};
use crate::pg::POSTGRES_EPOCH_UNIX_MICROS;

const CAMPAIGN_ID: KeyColumn = KeyColumn::equal(c"campaign_id", pg_sys::F_INT8EQ);
const USER_ID: KeyColumn = KeyColumn::equal(c"user_id", pg_sys::F_TEXTEQ);
/// claimed_at > the value: the index scan stops at the user's messages handed out lately.
const CLAIMED_AFTER: KeyColumn = KeyColumn {
    name: c"claimed_at",
    strategy: pg_sys::BTGreaterStrategyNumber,
    compare: pg_sys::F_TIMESTAMPTZ_GT,
};
/// created_at > the value: a pair's messages cancelled lately.
const CREATED_AFTER: KeyColumn = KeyColumn {
    name: c"created_at",
    strategy: pg_sys::BTGreaterStrategyNumber,
    compare: pg_sys::F_TIMESTAMPTZ_GT,
};

/// The outbox opened for probes, with the column numbers read.
pub struct OutboxProbe {
    table: TableProbe,
    message_id: i16,
    campaign_id: i16,
    channel: i16,
    state: i16,
    triggered_at: i16,
    trigger_event_id: i16,
    claimed_at: i16,
}

impl OutboxProbe {
    /// Opens personalize.outbox (see `TableProbe::open`).
    pub fn open() -> Self {
        let table = TableProbe::open(c"outbox");
        OutboxProbe {
            message_id: table.column(c"message_id"),
            campaign_id: table.column(CAMPAIGN_ID.name),
            channel: table.column(c"channel"),
            state: table.column(c"state"),
            triggered_at: table.column(c"triggered_at"),
            trigger_event_id: table.column(c"trigger_event_id"),
            claimed_at: table.column(CLAIMED_AFTER.name),
            table,
        }
    }

    fn state_is(&self, states: &[&str]) -> bool {
        self.table
            .attr::<&str>(self.state)
            .is_some_and(|s| states.contains(&s))
    }

    /// The pending message of each (campaign, user) pair that has one.
    pub fn pending_messages<'a>(
        &self,
        pairs: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> Vec<PendingMessage> {
        let mut scan = self
            .table
            .index(c"outbox_one_pending_idx", &[CAMPAIGN_ID, USER_ID]);
        let mut found = Vec::new();
        for (campaign_id, user_id) in pairs {
            let user = user_id.into_datum().unwrap_or(pg_sys::Datum::from(0));
            self.table
                .probe(&mut scan, &[campaign_id.into(), user], |t| {
                    // The index holds pending messages only; the state test guards the row
                    // version read against any other (a claim makes a new version).
                    if !self.state_is(&["pending"]) {
                        return;
                    }
                    if let (Some(message_id), Some(triggered_at), Some(trigger_event_id)) = (
                        t.attr::<i64>(self.message_id),
                        t.attr::<TimestampWithTimeZone>(self.triggered_at),
                        t.attr::<i64>(self.trigger_event_id),
                    ) {
                        found.push(PendingMessage {
                            message_id,
                            campaign_id,
                            user_id: user_id.to_owned(),
                            triggered_at: i64::from(triggered_at),
                            trigger_event_id,
                        });
                    }
                });
        }
        drop(scan);
        found
    }

    /// The messages handed out (claimed or sent) to each user after `since` (Postgres
    /// microseconds), for the frequency caps.
    pub fn recent_deliveries<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        since: i64,
    ) -> Vec<Delivery> {
        let mut scan = self
            .table
            .index(c"outbox_user_idx", &[USER_ID, CLAIMED_AFTER]);
        let mut found = Vec::new();
        for user_id in users {
            let user = user_id.into_datum().unwrap_or(pg_sys::Datum::from(0));
            self.table
                .probe(&mut scan, &[user, pg_sys::Datum::from(since)], |t| {
                    let Some(claimed_at) = t.attr::<TimestampWithTimeZone>(self.claimed_at) else {
                        return;
                    };
                    let claimed_at = i64::from(claimed_at);
                    // claimed_at > since is the scan's own key.
                    if !self.state_is(&["claimed", "sent"]) {
                        return;
                    }
                    if let (Some(message_id), Some(channel)) = (
                        t.attr::<i64>(self.message_id),
                        t.attr::<String>(self.channel),
                    ) {
                        found.push(Delivery {
                            message_id,
                            user_id: user_id.to_owned(),
                            campaign_id: t.attr::<i64>(self.campaign_id),
                            channel,
                            at: (claimed_at + POSTGRES_EPOCH_UNIX_MICROS) as f64 / 1e6,
                        });
                    }
                });
        }
        drop(scan);
        found
    }

    /// The (campaign, user) pairs among these with a message cancelled unsent (never claimed)
    /// that was written after `since` (Postgres microseconds).
    pub fn recently_cancelled<'a>(
        &self,
        pairs: impl IntoIterator<Item = (i64, &'a str)>,
        since: i64,
    ) -> HashSet<(i64, String)> {
        let mut scan = self.table.index(
            c"outbox_cancelled_idx",
            &[CAMPAIGN_ID, USER_ID, CREATED_AFTER],
        );
        let mut found = HashSet::new();
        for (campaign_id, user_id) in pairs {
            let user = user_id.into_datum().unwrap_or(pg_sys::Datum::from(0));
            let mut any = false;
            self.table.probe(
                &mut scan,
                &[campaign_id.into(), user, pg_sys::Datum::from(since)],
                |_| any = any || self.state_is(&["cancelled"]),
            );
            if any {
                found.insert((campaign_id, user_id.to_owned()));
            }
        }
        drop(scan);
        found
    }
}

/// The outbox and the consents as `core::campaigns::decide` asks them, each opened on its
/// first question (a statement whose events fire and cancel nothing opens neither).
pub struct OutboxLookups {
    probe: Option<OutboxProbe>,
    /// Opened on the first question; None inside when the schema has no consents yet.
    consents: Option<Option<crate::pg::consent_check::ConsentsProbe>>,
    /// The transaction's start (Postgres microseconds), the end of the windows.
    now: i64,
}

impl OutboxLookups {
    pub fn new(now: i64) -> Self {
        OutboxLookups {
            probe: None,
            consents: None,
            now,
        }
    }

    fn probe(&mut self) -> &OutboxProbe {
        self.probe.get_or_insert_with(OutboxProbe::open)
    }

    fn since(&self, window_seconds: f64) -> i64 {
        self.now - (window_seconds * 1e6) as i64
    }
}

impl OutboxLookup for OutboxLookups {
    fn pending_messages(&mut self, pairs: HashSet<(i64, &str)>) -> Vec<PendingMessage> {
        self.probe().pending_messages(pairs)
    }

    fn recent_deliveries(&mut self, users: HashSet<&str>, window_seconds: f64) -> Vec<Delivery> {
        let since = self.since(window_seconds);
        self.probe().recent_deliveries(users, since)
    }

    fn consents(
        &mut self,
        pairs: HashSet<(&str, &str)>,
    ) -> HashMap<(String, String), Vec<ConsentRecord>> {
        match self
            .consents
            .get_or_insert_with(crate::pg::consent_check::ConsentsProbe::open)
        {
            Some(probe) => probe.records(pairs),
            None => HashMap::new(),
        }
    }

    fn recently_cancelled(
        &mut self,
        pairs: HashSet<(i64, &str)>,
        window_seconds: f64,
    ) -> HashSet<(i64, String)> {
        let since = self.since(window_seconds);
        self.probe().recently_cancelled(pairs, since)
    }
}
