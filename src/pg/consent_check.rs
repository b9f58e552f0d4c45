//! Reading a user's consent rows on a channel, for the rule in `core::consent::refusal`: by
//! an index probe of `consents_pkey` when the campaign trigger writes a message, and as a
//! column of `claim_messages()`'s query when a message is handed out. Both read the same rows
//! and the rule is decided in one place.

use std::collections::{HashMap, HashSet};

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::core::consent::ConsentRecord;
use crate::pg::index_probe::{KeyColumn, TableProbe};

const USER_ID: KeyColumn = KeyColumn::equal(c"user_id", pg_sys::F_TEXTEQ);
const CHANNEL: KeyColumn = KeyColumn::equal(c"channel", pg_sys::F_TEXTEQ);

/// personalize.consents opened for probes by (user_id, channel).
pub struct ConsentsProbe {
    table: TableProbe,
    campaign: i16,
    status: i16,
    source: i16,
}

impl ConsentsProbe {
    /// None in a schema from before 0.9.0, which records no consent (the library is updated
    /// before ALTER EXTENSION UPDATE).
    pub fn open() -> Option<Self> {
        if crate::pg::personalize_relid(c"consents") == pg_sys::InvalidOid {
            return None;
        }
        let table = TableProbe::open(c"consents");
        Some(ConsentsProbe {
            campaign: table.column(c"campaign"),
            status: table.column(c"status"),
            source: table.column(c"source"),
            table,
        })
    }

    /// The consent rows of each (user, channel) pair that has any.
    pub fn records(
        &self,
        pairs: HashSet<(&str, &str)>,
    ) -> HashMap<(String, String), Vec<ConsentRecord>> {
        let mut scan = self.table.index(c"consents_pkey", &[USER_ID, CHANNEL]);
        let mut found: HashMap<(String, String), Vec<ConsentRecord>> = HashMap::new();
        for (user_id, channel) in pairs {
            let user = user_id.into_datum().unwrap_or(pg_sys::Datum::from(0));
            let chan = channel.into_datum().unwrap_or(pg_sys::Datum::from(0));
            let mut rows = Vec::new();
            self.table.probe(&mut scan, &[user, chan], |t| {
                if let (Some(campaign), Some(status), Some(source)) = (
                    t.attr::<String>(self.campaign),
                    t.attr::<String>(self.status),
                    t.attr::<String>(self.source),
                ) {
                    rows.push(ConsentRecord {
                        campaign,
                        status,
                        source,
                    });
                }
            });
            if !rows.is_empty() {
                found.insert((user_id.to_owned(), channel.to_owned()), rows);
            }
        }
        drop(scan);
        found
    }
}

/// A scalar subquery over `personalize.consents` (one index probe) giving the user's rows on
/// the channel for the whole channel or this campaign, as JSON text (NULL: none); `parse`
/// reads it. `user`, `channel` and `campaign` are SQL expressions.
pub fn records_sql(user: &str, channel: &str, campaign: &str) -> String {
    format!(
        "(SELECT CAST(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                          'campaign', k.campaign, 'status', k.status, 'source', k.source)) AS pg_catalog.text)
            FROM personalize.consents k
           WHERE k.user_id OPERATOR(pg_catalog.=) {user} AND k.channel OPERATOR(pg_catalog.=) {channel}
             AND k.campaign IN ('', {campaign}))"
    )
}

/// The rows `records_sql` gave (none for NULL or anything unreadable, which cannot happen:
/// the query builds the JSON itself).
pub fn parse(json: Option<&str>) -> Vec<ConsentRecord> {
    json.and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}
