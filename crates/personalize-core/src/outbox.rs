//! The campaign outbox's decisions, in plain Rust: payload templates (checked when a campaign
//! is written, rendered when its message is claimed) and what a claim does with each message
//! it locked (hand it out, cancel it, bury it, or put it back until quiet hours end).

use serde_json::{Map, Value};
use std::collections::HashMap;

/// Largest template accepted, in bytes of JSON text.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

/// Placeholders a template may use (besides `properties.<name>`).
pub const PLACEHOLDERS: [&str; 11] = [
    "user_id",
    "item_id",
    "item_title",
    "category",
    "event_type",
    "occurred_at",
    "campaign",
    "channel",
    "message_id",
    "idempotency_key",
    "recommendations",
];

/// One `{{...}}` in a string: its name, and where it sits.
fn placeholders(s: &str) -> Result<Vec<(usize, usize, &str)>, String> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(open) = s[rest..].find("{{") {
        let start = rest + open;
        let Some(close) = s[start + 2..].find("}}") else {
            return Err(format!("unclosed \"{{{{\" in \"{}\"", clip(s)));
        };
        let end = start + 2 + close + 2;
        out.push((start, end, s[start + 2..end - 2].trim()));
        rest = end;
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn known(name: &str) -> bool {
    PLACEHOLDERS.contains(&name)
        || name.strip_prefix("properties.").is_some_and(|p| {
            !p.is_empty()
                && p.len() <= 100
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Checks a campaign's payload template: a JSON object whose strings use only known
/// placeholders; `{{recommendations}}` only as a whole string (it becomes an array).
pub fn check_template(text: &str) -> Result<(), String> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "the template is {} bytes, over {MAX_TEMPLATE_BYTES}",
            text.len()
        ));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("the template must be a JSON object".into());
    }
    check_value(&v, "$")
}

fn check_value(v: &Value, path: &str) -> Result<(), String> {
    match v {
        Value::String(s) => {
            let found = placeholders(s).map_err(|m| format!("{path}: {m}"))?;
            for (start, end, name) in found {
                if !known(name) {
                    return Err(format!(
                        "{path}: unknown placeholder {{{{{name}}}}}; use {} or properties.<name>",
                        PLACEHOLDERS.join(", ")
                    ));
                }
                if name == "recommendations" && (start, end) != (0, s.len()) {
                    return Err(format!(
                        "{path}: {{{{recommendations}}}} must be the whole string (it becomes an array)"
                    ));
                }
            }
            Ok(())
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_value(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_value(x, &format!("{path}.{k}"))),
        _ => Ok(()),
    }
}

/// What a message's template is rendered with.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    pub values: HashMap<String, Value>,
    pub properties: Map<String, Value>,
    pub recommendations: Vec<Value>,
}

impl RenderContext {
    fn lookup(&self, name: &str) -> Value {
        if name == "recommendations" {
            return Value::Array(self.recommendations.clone());
        }
        if let Some(p) = name.strip_prefix("properties.") {
            return self.properties.get(p).cloned().unwrap_or(Value::Null);
        }
        self.values.get(name).cloned().unwrap_or(Value::Null)
    }
}

/// Renders a template. A string that is exactly one placeholder takes the value's JSON type
/// (a price stays a number); inside longer strings values are spliced as text and a missing
/// value is empty. The recommendations are added under "recommendations" when the template
/// does not place them itself.
pub fn render(template: &Value, ctx: &RenderContext, include_recommendations: bool) -> Value {
    let mut placed = false;
    let mut out = render_value(template, ctx, &mut placed);
    if include_recommendations && !placed {
        if let Value::Object(o) = &mut out {
            o.insert(
                "recommendations".into(),
                Value::Array(ctx.recommendations.clone()),
            );
        }
    }
    out
}

fn render_value(v: &Value, ctx: &RenderContext, placed: &mut bool) -> Value {
    match v {
        Value::String(s) => {
            let Ok(found) = placeholders(s) else {
                return v.clone();
            };
            if found.is_empty() {
                return v.clone();
            }
            if found.len() == 1 && found[0].0 == 0 && found[0].1 == s.len() {
                *placed |= found[0].2 == "recommendations";
                return ctx.lookup(found[0].2);
            }
            let mut text = String::with_capacity(s.len());
            let mut at = 0;
            for (start, end, name) in found {
                text.push_str(&s[at..start]);
                match ctx.lookup(name) {
                    Value::Null => {}
                    Value::String(x) => text.push_str(&x),
                    other => text.push_str(&other.to_string()),
                }
                at = end;
            }
            text.push_str(&s[at..]);
            Value::String(text)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| render_value(x, ctx, placed)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render_value(x, ctx, placed)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// At most `max_messages` per user in any `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cap {
    pub max_messages: i64,
    pub window_seconds: f64,
}

/// A cap across campaigns: on one channel, or on all of them (`channel` None).
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalCap {
    pub channel: Option<String>,
    pub cap: Cap,
}

/// A message handed out (claimed or sent) to a user, for the caps.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub message_id: i64,
    pub user_id: String,
    pub campaign_id: Option<i64>,
    pub channel: String,
    /// Unix seconds of the claim.
    pub at: f64,
}

/// A message a claim locked, with what the database knows about it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub message_id: i64,
    pub user_id: String,
    pub channel: String,
    /// None: the campaign was deleted.
    pub campaign_id: Option<i64>,
    pub campaign_cap: Option<Cap>,
    /// Attempts so far (claims that handed the message out).
    pub attempts: i32,
    pub max_attempts: i32,
    /// The event (id and type) that cancels this message, when the user produced one after
    /// the trigger.
    pub cancelled_by: Option<String>,
    /// The campaign's segment, when the user is not in it now: a segment is who a message
    /// goes to, so it is checked when the message is due, not when it was triggered.
    pub outside_segment: Option<String>,
    /// Unix seconds when the campaign's quiet hours end, if now is inside them.
    pub quiet_until: Option<f64>,
    pub last_error: Option<String>,
    /// The error of a check the claim could not make for this message (its segment's query
    /// failed): the message fails alone (`failed`), the rest of the batch goes out.
    pub check_failed: Option<String>,
    /// Why the user may not be contacted on the message's channel now (unsubscribed,
    /// suppressed, or no opt-in where the channel's policy needs one): never sent.
    pub no_consent: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Hand it out under the claim's lease.
    Claim,
    /// Never send it (the reason is kept in last_error).
    Cancel(String),
    /// Out of attempts.
    Dead(String),
    /// Not now: back to pending until this Unix time.
    Defer(f64),
    /// The claim failed for this message alone (a check or its rendering raised an error):
    /// it counts as an attempt and keeps the error; back to pending until `retry_at`, or dead
    /// (None) when that was its last attempt.
    Failed {
        retry_at: Option<f64>,
        reason: String,
    },
}

/// Longest backoff after a failure, as fail() uses: 10 s doubling up to an hour.
const MAX_BACKOFF_SECONDS: f64 = 3600.0;

/// What becomes of a message the claim failed on (`error`): retried after fail()'s backoff,
/// or dead once this was its last attempt. So one broken segment or model cannot stop a
/// channel: its messages fail on their own and, after max_attempts, leave the queue.
pub fn failed(now: f64, c: &Candidate, error: &str) -> Verdict {
    let reason = format!("the claim failed: {error}");
    if c.attempts + 1 >= c.max_attempts {
        return Verdict::Failed {
            retry_at: None,
            reason: format!("gave up after {} attempts; {reason}", c.attempts + 1),
        };
    }
    let backoff = (10.0 * 2f64.powi(c.attempts.clamp(0, 30))).min(MAX_BACKOFF_SECONDS);
    Verdict::Failed {
        retry_at: Some(now + backoff),
        reason,
    }
}

fn window_text(seconds: f64) -> String {
    let s = seconds.round() as i64;
    match s {
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3_600 == 0 => format!("{} hour(s)", s / 3_600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} second(s)"),
    }
}

/// Decides each locked message in order. Messages handed out earlier in the same batch count
/// against the caps of the later ones, so one batch cannot overshoot a cap.
pub fn decide(
    now: f64,
    candidates: &[Candidate],
    recent: &mut Vec<Delivery>,
    global_caps: &[GlobalCap],
) -> Vec<Verdict> {
    candidates
        .iter()
        .map(|c| {
            let verdict = decide_one(now, c, recent, global_caps);
            if verdict == Verdict::Claim {
                recent.push(Delivery {
                    message_id: c.message_id,
                    user_id: c.user_id.clone(),
                    campaign_id: c.campaign_id,
                    channel: c.channel.clone(),
                    at: now,
                });
            }
            verdict
        })
        .collect()
}

/// How far back the frequency caps reach, in seconds: the longest window among the global caps
/// and `campaign_caps` (0: no cap applies, so no delivery needs reading).
pub fn longest_cap_window<'a>(
    global_caps: &'a [GlobalCap],
    campaign_caps: impl IntoIterator<Item = &'a Cap>,
) -> f64 {
    global_caps
        .iter()
        .map(|g| &g.cap)
        .chain(campaign_caps)
        .map(|c| c.window_seconds)
        .fold(0.0, f64::max)
}

/// Who a message would go to, for the frequency caps.
pub struct Recipient<'a> {
    /// Left out of the counts (the message itself, if it was handed out before); 0 for none.
    pub message_id: i64,
    pub user_id: &'a str,
    pub campaign_id: Option<i64>,
    pub channel: &'a str,
    pub campaign_cap: Option<&'a Cap>,
}

/// Why one more message to the recipient now would break a frequency cap (its campaign's, or a
/// global one on its channel or on all channels), if it would. `recent` holds the messages
/// handed out lately (claimed or sent).
pub fn cap_reason(
    now: f64,
    r: &Recipient<'_>,
    recent: &[Delivery],
    global_caps: &[GlobalCap],
) -> Option<String> {
    let count = |cap: &Cap, keep: &dyn Fn(&Delivery) -> bool| {
        recent
            .iter()
            .filter(|d| d.message_id != r.message_id && d.user_id == r.user_id)
            .filter(|d| d.at > now - cap.window_seconds)
            .filter(|d| keep(d))
            .count() as i64
    };
    if let Some(cap) = r.campaign_cap {
        if count(cap, &|d| d.campaign_id == r.campaign_id) >= cap.max_messages {
            return Some(format!(
                "frequency cap: this campaign already sent {} message(s) to the user in {}",
                cap.max_messages,
                window_text(cap.window_seconds)
            ));
        }
    }
    for g in global_caps {
        if g.channel.as_ref().is_some_and(|ch| ch != r.channel) {
            continue;
        }
        let on_channel = |d: &Delivery| g.channel.as_ref().is_none_or(|ch| *ch == d.channel);
        if count(&g.cap, &on_channel) >= g.cap.max_messages {
            return Some(format!(
                "frequency cap: {} message(s) {} in {} already sent to the user",
                g.cap.max_messages,
                g.channel
                    .as_ref()
                    .map_or("on any channel".to_owned(), |ch| format!("by {ch}")),
                window_text(g.cap.window_seconds)
            ));
        }
    }
    None
}

fn decide_one(now: f64, c: &Candidate, recent: &[Delivery], global_caps: &[GlobalCap]) -> Verdict {
    if c.campaign_id.is_none() {
        return Verdict::Cancel("its campaign was deleted".into());
    }
    if let Some(event) = &c.cancelled_by {
        return Verdict::Cancel(format!("cancelled by event {event}"));
    }
    if let Some(error) = &c.check_failed {
        return failed(now, c, error);
    }
    if let Some(reason) = &c.no_consent {
        return Verdict::Cancel(reason.clone());
    }
    if let Some(segment) = &c.outside_segment {
        return Verdict::Cancel(format!(
            "the user is not in segment \"{segment}\" when the message is due"
        ));
    }
    if c.attempts >= c.max_attempts {
        return Verdict::Dead(format!(
            "gave up after {} attempts (leases expired without ack or fail); last error: {}",
            c.attempts,
            c.last_error.as_deref().unwrap_or("none")
        ));
    }
    if let Some(until) = c.quiet_until {
        if until > now {
            return Verdict::Defer(until);
        }
    }
    let recipient = Recipient {
        message_id: c.message_id,
        user_id: &c.user_id,
        campaign_id: c.campaign_id,
        channel: &c.channel,
        campaign_cap: c.campaign_cap.as_ref(),
    };
    if let Some(reason) = cap_reason(now, &recipient, recent, global_caps) {
        return Verdict::Cancel(reason);
    }
    Verdict::Claim
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_are_checked() {
        assert!(
            check_template(r#"{"subject": "Hi {{user_id}}", "items": "{{recommendations}}"}"#)
                .is_ok()
        );
        assert!(check_template(
            r#"{"p": "{{properties.price}}", "n": [1, {"x": "{{ item_title }}"}]}"#
        )
        .is_ok());
        let e = check_template(r#"{"a": ["x", "{{nope}}"]}"#).unwrap_err();
        assert!(e.starts_with("$.a[1]: unknown placeholder {{nope}}"), "{e}");
        assert!(check_template(r#"{"a": "{{user_id"}"#)
            .unwrap_err()
            .contains("unclosed"));
        assert!(check_template(r#"{"a": "see {{recommendations}}"}"#)
            .unwrap_err()
            .contains("whole string"));
        assert!(check_template(r#"{"a": "{{properties.}}"}"#).is_err());
        assert!(check_template(r#"{"a": "{{properties.x y}}"}"#).is_err());
        assert!(check_template(r#"["x"]"#).unwrap_err().contains("object"));
        assert!(check_template("{").unwrap_err().starts_with("not JSON"));
        let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_TEMPLATE_BYTES));
        assert!(check_template(&big).unwrap_err().contains("over"));
    }

    #[test]
    fn rendering_keeps_types_and_adds_recommendations() {
        let mut ctx = RenderContext::default();
        ctx.values.insert("user_id".into(), json!("U1"));
        ctx.values.insert("item_title".into(), json!("Lens 50mm"));
        ctx.properties.insert("price".into(), json!(19.5));
        ctx.recommendations = vec![json!({"item_id": "P2"})];
        let t = json!({"subject": "{{user_id}}, still thinking about {{item_title}}?",
                       "price": "{{properties.price}}", "missing": "[{{item_id}}]",
                       "note": "{{properties.price}} EUR", "n": 3});
        let out = render(&t, &ctx, true);
        assert_eq!(
            out,
            json!({"subject": "U1, still thinking about Lens 50mm?", "price": 19.5, "missing": "[]",
                   "note": "19.5 EUR", "n": 3, "recommendations": [{"item_id": "P2"}]})
        );
        let placed = render(&json!({"grid": "{{recommendations}}"}), &ctx, true);
        assert_eq!(placed, json!({"grid": [{"item_id": "P2"}]}));
        assert_eq!(render(&json!({"a": 1}), &ctx, false), json!({"a": 1}));
    }

    fn candidate(id: i64, user: &str) -> Candidate {
        Candidate {
            message_id: id,
            user_id: user.into(),
            channel: "email".into(),
            campaign_id: Some(1),
            campaign_cap: None,
            attempts: 0,
            max_attempts: 5,
            cancelled_by: None,
            outside_segment: None,
            quiet_until: None,
            last_error: None,
            check_failed: None,
            no_consent: None,
        }
    }

    #[test]
    fn a_failed_check_retries_with_backoff_then_gives_up() {
        let now = 1_000_000.0;
        let mut broken = candidate(1, "a");
        broken.check_failed = Some("timestamp out of range".into());
        let v = decide(now, std::slice::from_ref(&broken), &mut Vec::new(), &[]);
        assert_eq!(
            v,
            vec![Verdict::Failed {
                retry_at: Some(now + 10.0),
                reason: "the claim failed: timestamp out of range".into()
            }]
        );
        broken.attempts = 3;
        assert!(matches!(
            failed(now, &broken, "x"),
            Verdict::Failed { retry_at: Some(at), .. } if at == now + 80.0
        ));
        broken.attempts = 4;
        assert_eq!(
            failed(now, &broken, "x"),
            Verdict::Failed {
                retry_at: None,
                reason: "gave up after 5 attempts; the claim failed: x".into()
            }
        );
        // A cancel still wins over a failed check: the message would not go out anyway.
        broken.attempts = 0;
        broken.cancelled_by = Some("9 (purchase)".into());
        assert!(matches!(
            decide(now, &[broken], &mut Vec::new(), &[])[0],
            Verdict::Cancel(_)
        ));
    }

    #[test]
    fn cancel_dead_and_quiet_hours_come_first() {
        let now = 1_000_000.0;
        let mut gone = candidate(1, "a");
        gone.campaign_id = None;
        let mut bought = candidate(2, "a");
        bought.cancelled_by = Some("7 (purchase)".into());
        let mut tired = candidate(3, "a");
        tired.attempts = 5;
        tired.last_error = Some("smtp 451".into());
        let mut quiet = candidate(4, "a");
        quiet.quiet_until = Some(now + 3600.0);
        let mut quiet_over = candidate(5, "b");
        quiet_over.quiet_until = Some(now);
        // Out of the segment beats out of attempts and quiet hours: it is never to be sent.
        let mut outsider = candidate(6, "c");
        outsider.outside_segment = Some("big_spenders".into());
        outsider.attempts = 5;
        outsider.quiet_until = Some(now + 3600.0);
        // No consent beats everything but a deleted campaign and a cancel-on event.
        let mut unsubscribed = candidate(7, "d");
        unsubscribed.no_consent = Some("the user unsubscribed from email".into());
        unsubscribed.attempts = 5;
        unsubscribed.outside_segment = Some("big_spenders".into());
        let mut recent = Vec::new();
        let v = decide(
            now,
            &[
                gone,
                bought,
                tired,
                quiet,
                quiet_over,
                outsider,
                unsubscribed,
            ],
            &mut recent,
            &[],
        );
        assert_eq!(
            v[6],
            Verdict::Cancel("the user unsubscribed from email".into())
        );
        assert_eq!(v[0], Verdict::Cancel("its campaign was deleted".into()));
        assert_eq!(
            v[1],
            Verdict::Cancel("cancelled by event 7 (purchase)".into())
        );
        assert!(
            matches!(&v[2], Verdict::Dead(m) if m.contains("5 attempts") && m.contains("smtp 451"))
        );
        assert_eq!(v[3], Verdict::Defer(now + 3600.0));
        assert_eq!(v[4], Verdict::Claim);
        assert_eq!(
            v[5],
            Verdict::Cancel(
                "the user is not in segment \"big_spenders\" when the message is due".into()
            )
        );
        // Only the message handed out counts against later caps.
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].message_id, 5);
    }

    #[test]
    fn caps_count_history_and_the_batch_itself() {
        let now = 100_000.0;
        let day = 86_400.0;
        let capped = |id, user: &str| {
            let mut c = candidate(id, user);
            c.campaign_cap = Some(Cap {
                max_messages: 2,
                window_seconds: day,
            });
            c
        };
        let batch = [
            capped(10, "a"),
            capped(11, "a"),
            capped(12, "b"),
            capped(13, "b"),
        ];
        let mut recent = vec![
            // One message to a inside the window, one outside it.
            Delivery {
                message_id: 1,
                user_id: "a".into(),
                campaign_id: Some(1),
                channel: "email".into(),
                at: now - 60.0,
            },
            Delivery {
                message_id: 2,
                user_id: "a".into(),
                campaign_id: Some(1),
                channel: "email".into(),
                at: now - 2.0 * day,
            },
            // Another campaign's message does not count against this campaign's cap.
            Delivery {
                message_id: 3,
                user_id: "b".into(),
                campaign_id: Some(9),
                channel: "email".into(),
                at: now - 60.0,
            },
        ];
        let v = decide(now, &batch, &mut recent, &[]);
        assert_eq!(v[0], Verdict::Claim);
        assert!(
            matches!(&v[1], Verdict::Cancel(m) if m.contains("frequency cap")),
            "{:?}",
            v[1]
        );
        assert_eq!(v[2], Verdict::Claim);
        assert_eq!(v[3], Verdict::Claim);

        // Across campaigns: at most 2 emails per day in all.
        let global = [GlobalCap {
            channel: Some("email".into()),
            cap: Cap {
                max_messages: 2,
                window_seconds: day,
            },
        }];
        let mut sms = candidate(21, "b");
        sms.channel = "sms".into();
        let v = decide(now, &[candidate(20, "b"), sms], &mut recent, &global);
        assert!(
            matches!(&v[0], Verdict::Cancel(m) if m.contains("by email in 1 day(s)")),
            "{:?}",
            v[0]
        );
        assert_eq!(v[1], Verdict::Claim, "the email cap leaves sms alone");
        let all = [GlobalCap {
            channel: None,
            cap: Cap {
                max_messages: 4,
                window_seconds: day,
            },
        }];
        let v = decide(now, &[candidate(22, "b")], &mut recent, &all);
        assert!(
            matches!(&v[0], Verdict::Cancel(m) if m.contains("on any channel")),
            "{:?}",
            v[0]
        );
    }

    #[test]
    fn a_reclaimed_message_does_not_count_against_itself() {
        let now = 10_000.0;
        let mut c = candidate(5, "a");
        c.campaign_cap = Some(Cap {
            max_messages: 1,
            window_seconds: 3600.0,
        });
        let mut recent = vec![Delivery {
            message_id: 5,
            user_id: "a".into(),
            campaign_id: Some(1),
            channel: "email".into(),
            at: now - 30.0,
        }];
        assert_eq!(decide(now, &[c], &mut recent, &[]), vec![Verdict::Claim]);
    }

    #[test]
    fn the_longest_cap_window_covers_every_cap() {
        let cap = |w: f64| Cap {
            max_messages: 1,
            window_seconds: w,
        };
        let global = vec![GlobalCap {
            channel: None,
            cap: cap(600.0),
        }];
        assert_eq!(longest_cap_window(&[], []), 0.0);
        assert_eq!(longest_cap_window(&global, []), 600.0);
        assert_eq!(
            longest_cap_window(&global, [&cap(3600.0), &cap(60.0)]),
            3600.0
        );
    }
}
