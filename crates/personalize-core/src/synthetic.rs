//! A deterministic synthetic shop: a catalogue with categories and Zipf-like popularity, users
//! with category tastes, and sessions that run through a view → cart → purchase funnel.
//!
//! The same spec and seed always give the same items and the same event stream, whatever the
//! machine, so the demo, tests and benchmarks can rely on exact counts. Events come out in time
//! order from a streaming iterator: tens of millions cost no memory beyond the catalogue.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

const CATEGORY_NAMES: [&str; 24] = [
    "cameras",
    "lenses",
    "tripods",
    "laptops",
    "phones",
    "headphones",
    "speakers",
    "books",
    "toys",
    "kitchen",
    "garden",
    "shoes",
    "jackets",
    "watches",
    "bags",
    "beauty",
    "sports",
    "outdoor",
    "lighting",
    "furniture",
    "games",
    "music",
    "pets",
    "stationery",
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopSpec {
    pub users: u32,
    pub items: u32,
    pub events: u64,
    pub seed: u64,
    /// Unix seconds of the first session.
    pub start_unix: i64,
    /// The sessions are spread over this many days.
    pub days: u32,
}

impl ShopSpec {
    /// Refuses sizes that make no sense, with a sentence saying which.
    pub fn check(&self) -> Result<(), String> {
        if self.users == 0 {
            return Err("users must be at least 1".into());
        }
        if self.items < 2 {
            return Err("items must be at least 2".into());
        }
        if self.items > 10_000_000 {
            return Err("items must be at most 10,000,000".into());
        }
        if self.users > 100_000_000 {
            return Err("users must be at most 100,000,000".into());
        }
        if self.days == 0 || self.days > 3650 {
            return Err("days must be between 1 and 3650".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticItem {
    pub item_id: String,
    pub category: String,
    pub title: String,
    pub price: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticEvent {
    pub event_type: &'static str,
    pub user_id: String,
    pub item_id: Option<String>,
    pub session_id: String,
    /// Unix microseconds.
    pub occurred_at_us: i64,
    pub client_event_id: String,
    pub properties: Value,
}

impl SyntheticEvent {
    /// The event as the JSON an app would send to `personalize.track`.
    pub fn to_json(&self) -> Value {
        let secs = self.occurred_at_us.div_euclid(1_000_000);
        let micros = self.occurred_at_us.rem_euclid(1_000_000) as u32;
        let ts = chrono::DateTime::from_timestamp(secs, micros * 1000)
            .expect("generated timestamps are in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut obj = json!({
            "type": self.event_type,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "occurred_at": ts,
            "client_event_id": self.client_event_id,
            "properties": self.properties,
        });
        if let Some(item) = &self.item_id {
            obj["item_id"] = Value::String(item.clone());
        }
        obj
    }
}

pub fn category_name(index: usize) -> String {
    let base = CATEGORY_NAMES[index % CATEGORY_NAMES.len()];
    match index / CATEGORY_NAMES.len() {
        0 => base.to_owned(),
        n => format!("{base}-{}", n + 1),
    }
}

pub fn category_count(items: u32) -> usize {
    ((items / 150) as usize).clamp(4, 200)
}

/// The catalogue and the users' tastes; cheap to rebuild from the spec.
pub struct SyntheticShop {
    pub spec: ShopSpec,
    pub items: Vec<SyntheticItem>,
    /// Per category, its items' indexes by falling popularity and the cumulative Zipf weights.
    category_items: Vec<Vec<u32>>,
    category_cumulative: Vec<Vec<f64>>,
}

impl SyntheticShop {
    pub fn new(spec: ShopSpec) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5eed_17e5);
        let n_cat = category_count(spec.items);
        let mut items = Vec::with_capacity(spec.items as usize);
        let mut category_items = vec![Vec::new(); n_cat];
        for i in 0..spec.items {
            // The first item of every category exists, so no category is empty.
            let c = if (i as usize) < n_cat {
                i as usize
            } else {
                rng.random_range(0..n_cat)
            };
            let category = category_name(c);
            let base = 5.0 + 20.0 * ((c % 7) as f64);
            let price = (base * (0.5 + rng.random::<f64>() * 1.5) * 100.0).round() / 100.0;
            category_items[c].push(i);
            items.push(SyntheticItem {
                item_id: format!("P{i:07}"),
                title: format!("{} #{}", category, category_items[c].len()),
                category,
                price,
            });
        }
        let category_cumulative = category_items
            .iter()
            .map(|members| {
                let mut acc = 0.0;
                members
                    .iter()
                    .enumerate()
                    .map(|(rank, _)| {
                        acc += 1.0 / ((rank + 1) as f64).powf(1.1);
                        acc
                    })
                    .collect()
            })
            .collect();
        SyntheticShop {
            spec,
            items,
            category_items,
            category_cumulative,
        }
    }

    pub fn categories(&self) -> usize {
        self.category_items.len()
    }

    /// A user's favourite categories, derived from the user index alone (no table per user), so
    /// any part of the stream can be generated without the rest.
    pub fn user_tastes(&self, user: u32) -> [usize; 2] {
        let mut r = ChaCha8Rng::seed_from_u64(self.spec.seed.wrapping_mul(31) ^ user as u64);
        let n = self.categories();
        let a = r.random_range(0..n);
        let b = (a + 1 + r.random_range(0..n - 1)) % n;
        [a, b]
    }

    fn pick_item(&self, rng: &mut ChaCha8Rng, category: usize) -> u32 {
        let cum = &self.category_cumulative[category];
        let x = rng.random::<f64>() * cum[cum.len() - 1];
        let pos = cum.partition_point(|&c| c < x).min(cum.len() - 1);
        self.category_items[category][pos]
    }

    /// The event stream; it owns (a share of) the shop so it can outlive the caller's frame
    /// (a set-returning function hands it to Postgres row by row).
    pub fn events(self: &Arc<Self>) -> EventStream {
        let sessions_expected = (self.spec.events as f64 / 5.0).max(1.0);
        // The last session's events follow its start by up to a few minutes each: keep an
        // hour (or a tenth of a short span) free so the stream ends within `days`.
        let days_us = self.spec.days as f64 * 86_400.0 * 1e6;
        let span_us = days_us - (3_600e6f64).min(days_us / 10.0);
        EventStream {
            shop: Arc::clone(self),
            rng: ChaCha8Rng::seed_from_u64(self.spec.seed),
            emitted: 0,
            session: 0,
            start_us: self.spec.start_unix as f64 * 1e6,
            span_us,
            clock_us: self.spec.start_unix as f64 * 1e6,
            gap_us: span_us / sessions_expected,
            generated: 0,
            open: BinaryHeap::new(),
            staged: Vec::new(),
            staged_start_us: self.spec.start_unix as f64 * 1e6,
        }
    }
}

/// Events in time order, exactly `spec.events` of them.
///
/// A quiet shop's sessions follow one another. A busy one (many events in few days) has more
/// sessions than fit end to end, so they overlap: sessions are generated one ahead ("staged")
/// and their events merged by time through a heap, which keeps the stream in time order.
pub struct EventStream {
    shop: Arc<SyntheticShop>,
    rng: ChaCha8Rng,
    emitted: u64,
    session: u64,
    start_us: f64,
    span_us: f64,
    /// When the last generated session ends (its last event).
    clock_us: f64,
    gap_us: f64,
    /// Events generated so far (sessions are placed by this share of the total).
    generated: u64,
    /// Events of sessions already started, earliest first.
    open: BinaryHeap<Reverse<Queued>>,
    /// The next session, not yet started, reversed (its first event is last).
    staged: Vec<SyntheticEvent>,
    /// When the staged session starts: every event of it and of later sessions comes after.
    staged_start_us: f64,
}

/// An event waiting in the merge, ordered by time and then by generation order.
struct Queued {
    seq: u64,
    event: SyntheticEvent,
}

impl Queued {
    fn key(&self) -> (i64, u64) {
        (self.event.occurred_at_us, self.seq)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl EventStream {
    fn next_session(&mut self) {
        let shop = Arc::clone(&self.shop);
        let shop = &*shop;
        let rng = &mut self.rng;
        self.session += 1;
        // Sessions start where the share of events generated so far puts them in the span (a
        // session's length varies, so a fixed gap per session drifted: 90 days ran to 110),
        // with a jitter of up to half a mean gap. A session waits for the last one to end
        // when that is a short wait; when the shop is too busy for sessions to follow one
        // another (waiting would push the stream past `days`: 100,000 events in one day
        // ran to 80 days), they overlap.
        let share = self.generated as f64 / shop.spec.events.max(1) as f64;
        let at = self.start_us + self.span_us * share + self.gap_us * 0.5 * rng.random::<f64>();
        // Starts never go back in time, so no later session has an event before this start.
        let at = at.max(self.staged_start_us);
        if self.clock_us - at < self.gap_us {
            self.clock_us = at.max(self.clock_us);
        } else {
            self.clock_us = at;
        }
        self.staged_start_us = self.clock_us;
        let users = shop.spec.users;
        // Power-law activity: low user numbers are the regulars.
        let user = ((users as f64) * rng.random::<f64>().powf(2.0)) as u32 % users;
        let user_id = format!("U{user:07}");
        let session_id = format!("S{}-{}", shop.spec.seed, self.session);
        let tastes = shop.user_tastes(user);
        let r = rng.random::<f64>();
        let category = if r < 0.65 {
            tastes[0]
        } else if r < 0.9 {
            tastes[1]
        } else {
            rng.random_range(0..shop.categories())
        };
        let mut t = self.clock_us;
        let mut out: Vec<SyntheticEvent> = Vec::new();
        let push = |out: &mut Vec<SyntheticEvent>,
                    t: &mut f64,
                    rng: &mut ChaCha8Rng,
                    event_type: &'static str,
                    item: Option<u32>,
                    properties: Value| {
            *t += 20e6 + rng.random::<f64>() * 100e6;
            out.push(SyntheticEvent {
                event_type,
                user_id: user_id.clone(),
                item_id: item.map(|i| shop.items[i as usize].item_id.clone()),
                session_id: session_id.clone(),
                occurred_at_us: *t as i64,
                client_event_id: String::new(),
                properties,
            });
        };
        if rng.random::<f64>() < 0.1 {
            let q = category_name(category);
            push(
                &mut out,
                &mut t,
                rng,
                "search",
                None,
                json!({"query": q, "results": 20}),
            );
        }
        let views = 1 + (rng.random::<f64>().ln() / 0.7f64.ln()).floor().min(11.0) as usize;
        let mut last = 0;
        for _ in 0..views {
            last = shop.pick_item(rng, category);
            let it = &shop.items[last as usize];
            let props = json!({"category": it.category, "price": it.price});
            push(&mut out, &mut t, rng, "view", Some(last), props);
        }
        if rng.random::<f64>() < 0.3 {
            let it = &shop.items[last as usize];
            let quantity = 1 + rng.random_range(0..3u32);
            let props = json!({"category": it.category, "price": it.price, "quantity": quantity});
            push(&mut out, &mut t, rng, "add_to_cart", Some(last), props);
            let r = rng.random::<f64>();
            if r < 0.55 {
                let order_id = format!("O{}-{}", shop.spec.seed, self.session);
                let value = (it.price * quantity as f64 * 100.0).round() / 100.0;
                push(
                    &mut out,
                    &mut t,
                    rng,
                    "checkout",
                    None,
                    json!({"order_id": order_id, "value": value, "currency": "EUR"}),
                );
                let props = json!({"order_id": order_id, "category": it.category,
                    "price": it.price, "quantity": quantity, "currency": "EUR"});
                push(&mut out, &mut t, rng, "purchase", Some(last), props);
            } else if r < 0.65 {
                push(
                    &mut out,
                    &mut t,
                    rng,
                    "remove_from_cart",
                    Some(last),
                    json!({"quantity": quantity}),
                );
            }
        }
        self.clock_us = self.clock_us.max(t);
        self.generated += out.len() as u64;
        out.reverse();
        self.staged = out;
    }

    /// Moves the staged session into the merge.
    fn start_staged(&mut self) {
        let session = self.session << 20;
        for (i, event) in self.staged.drain(..).rev().enumerate() {
            let seq = session + i as u64;
            self.open.push(Reverse(Queued { seq, event }));
        }
    }
}

impl Iterator for EventStream {
    type Item = SyntheticEvent;

    fn next(&mut self) -> Option<SyntheticEvent> {
        if self.emitted >= self.shop.spec.events {
            return None;
        }
        loop {
            while self.staged.is_empty() {
                self.next_session();
            }
            match self.open.peek() {
                Some(Reverse(q)) if (q.event.occurred_at_us as f64) < self.staged_start_us => break,
                _ => self.start_staged(),
            }
        }
        let Reverse(Queued { event: mut e, .. }) = self.open.pop().expect("non-empty");
        e.client_event_id = format!("syn:{}:{}", self.shop.spec.seed, self.emitted);
        self.emitted += 1;
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.shop.spec.events - self.emitted) as usize;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::{check_event, Limits, TrackingPlan, Verdict};

    fn spec(events: u64) -> ShopSpec {
        ShopSpec {
            users: 500,
            items: 800,
            events,
            seed: 7,
            start_unix: 1_767_225_600,
            days: 60,
        }
    }

    #[test]
    fn exact_count_deterministic_and_time_ordered() {
        let shop = Arc::new(SyntheticShop::new(spec(5_000)));
        let a: Vec<_> = shop.events().collect();
        let b: Vec<_> = Arc::new(SyntheticShop::new(spec(5_000))).events().collect();
        assert_eq!(a.len(), 5_000);
        assert_eq!(a, b);
        assert!(a
            .windows(2)
            .all(|w| w[0].occurred_at_us <= w[1].occurred_at_us));
        let other: Vec<_> = Arc::new(SyntheticShop::new(ShopSpec {
            seed: 8,
            ..spec(5_000)
        }))
        .events()
        .collect();
        assert_ne!(a, other);
    }

    #[test]
    fn the_events_fill_the_days_and_end_within_them() {
        // 100,000 events in one day need overlapping sessions.
        for (events, days) in [
            (5_000u64, 60u32),
            (20_000, 30),
            (300, 1),
            (50_000, 90),
            (100_000, 1),
        ] {
            let s = ShopSpec {
                days,
                ..spec(events)
            };
            let start = s.start_unix * 1_000_000;
            let end = start + i64::from(days) * 86_400_000_000;
            let a: Vec<_> = Arc::new(SyntheticShop::new(s)).events().collect();
            let last = a.last().unwrap().occurred_at_us;
            assert_eq!(a.len() as u64, events);
            assert!(a[0].occurred_at_us >= start);
            assert!(
                a.windows(2)
                    .all(|w| w[0].occurred_at_us <= w[1].occurred_at_us),
                "{events}/{days}: out of time order"
            );
            assert!(
                last <= end,
                "{events} events over {days} days end after them"
            );
            // The last event falls in the span's last tenth.
            assert!(
                last >= end - (end - start) / 10,
                "{events}/{days}: ends early"
            );
        }
    }

    #[test]
    fn funnel_shape_and_popularity_skew() {
        let shop = Arc::new(SyntheticShop::new(spec(50_000)));
        let mut counts = std::collections::HashMap::new();
        let mut item_views = std::collections::HashMap::new();
        for e in shop.events() {
            *counts.entry(e.event_type).or_insert(0u64) += 1;
            if e.event_type == "view" {
                *item_views.entry(e.item_id.clone().unwrap()).or_insert(0u64) += 1;
            }
        }
        let views = counts["view"];
        let carts = counts["add_to_cart"];
        let purchases = counts["purchase"];
        assert!(
            views > carts && carts > purchases && purchases > 0,
            "{counts:?}"
        );
        let mut v: Vec<u64> = item_views.values().copied().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        let top_decile: u64 = v.iter().take(v.len() / 10).sum();
        assert!(
            top_decile as f64 > 0.3 * views as f64,
            "popularity should be skewed"
        );
    }

    #[test]
    fn every_generated_event_passes_the_default_plan_shape() {
        // The same schemas as sql/bootstrap.sql's default plan, minus descriptions.
        let mut plan = TrackingPlan::new();
        for (t, item) in [
            ("view", true),
            ("add_to_cart", true),
            ("remove_from_cart", true),
            ("checkout", false),
            ("purchase", true),
            ("search", false),
        ] {
            plan.add_type(t, item, &json!({"type": "object"})).unwrap();
        }
        let shop = Arc::new(SyntheticShop::new(spec(3_000)));
        let now = crate::tracking::now_utc();
        for e in shop.events() {
            match check_event(&e.to_json(), &plan, &Limits::default(), now) {
                Verdict::Valid(_) => {}
                Verdict::Rejected(r) => panic!("{:?} rejected: {:?}", e, r.violations),
            }
        }
    }

    #[test]
    fn spec_checks() {
        assert!(ShopSpec {
            users: 0,
            ..spec(1)
        }
        .check()
        .is_err());
        assert!(ShopSpec {
            items: 1,
            ..spec(1)
        }
        .check()
        .is_err());
        assert!(spec(1).check().is_ok());
    }
}
