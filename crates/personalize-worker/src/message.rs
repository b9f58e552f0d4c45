//! A claimed message, and what became of its send.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use uuid::Uuid;

/// One row of `claim_messages()`, with the recipient's address and unsubscribe link looked
/// up in the same statement.
#[derive(Debug, Clone)]
pub struct Message {
    pub message_id: i64,
    pub lease_token: Uuid,
    pub idempotency_key: Uuid,
    pub campaign: String,
    pub channel: String,
    pub user_id: String,
    pub payload: Value,
    pub attempt: i32,
    /// From the channel's recipients (`personalize.channel_policies`); None when the channel
    /// names none (a webhook needs no address).
    pub address: Option<String>,
    pub unsubscribe_url: Option<String>,
}

impl Message {
    /// The recommendations the campaign placed in the payload: `payload.recommendations`, or
    /// the first list of items wherever the template put it (`"bundle": "{{recommendations}}"`).
    pub fn recommendations(&self) -> Value {
        let Value::Object(map) = &self.payload else {
            return Value::Array(vec![]);
        };
        if let Some(v @ Value::Array(_)) = map.get("recommendations") {
            return v.clone();
        }
        map.values()
            .find(|v| {
                v.as_array()
                    .and_then(|a| a.first())
                    .is_some_and(|first| first.get("item_id").is_some())
            })
            .cloned()
            .unwrap_or(Value::Array(vec![]))
    }
}

/// Why a send did not go through, and whether trying again can help.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Try again later (429, 5xx, a timeout, a refused connection): `fail()`, after
    /// `retry_after` when the provider said so, else with the outbox's backoff. Counts as an
    /// attempt: a message that keeps failing ends `dead`.
    Transient { retry_after: Option<Duration> },
    /// The provider refused this message for good (an invalid number, a 400): cancelled, never
    /// retried; `suppress` also stops every later message to the user on this channel.
    Permanent { suppress: bool },
    /// Our side is wrong, not the message: refused credentials, a redirecting or missing
    /// endpoint, a template that does not render. The message is handed back without counting
    /// an attempt (`release_message()`), due again after `worker.pause_seconds`; with
    /// `pause_channel` the channel also stops claiming that long, so a bad key cannot turn
    /// the queue dead.
    Configuration { pause_channel: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendError {
    pub failure: Failure,
    /// For `last_error` and the logs.
    pub reason: String,
    /// A short fixed label for the metrics (`rate_limited`, `server_error`, `timeout`, …).
    pub label: &'static str,
}

impl SendError {
    pub fn transient(
        label: &'static str,
        reason: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        SendError {
            failure: Failure::Transient { retry_after },
            reason: reason.into(),
            label,
        }
    }

    pub fn permanent(label: &'static str, reason: impl Into<String>, suppress: bool) -> Self {
        SendError {
            failure: Failure::Permanent { suppress },
            reason: reason.into(),
            label,
        }
    }

    /// Our configuration: the channel pauses and the message waits (`worker.pause_seconds`).
    pub fn configuration(label: &'static str, reason: impl Into<String>) -> Self {
        SendError {
            failure: Failure::Configuration {
                pause_channel: true,
            },
            reason: reason.into(),
            label,
        }
    }

    /// A provider's HTTP answer that was not a success. Channel code refines it from the
    /// provider's error body (which refusals mean the address is bad, which are rate limits).
    pub fn from_http(provider: &str, status: u16, retry_after: Option<&str>, body: &str) -> Self {
        let retry_after = retry_after.and_then(parse_retry_after);
        let body = snippet(body);
        let reason = format!("{provider} answered HTTP {status}: {body}");
        match status {
            408 | 425 | 429 => Self::transient("rate_limited", reason, retry_after),
            500..=599 => Self::transient("server_error", reason, retry_after),
            // Redirects are not followed (a POST would turn into a GET): the URL is wrong.
            300..=399 => Self::configuration("redirect", reason),
            // Our credentials, not the message.
            401 | 403 | 407 => Self::configuration("auth", reason),
            // No such endpoint (a wrong account or project id, a receiver being deployed).
            404 | 405 | 421 => Self::configuration("endpoint", reason),
            _ => Self::permanent("rejected", reason, false),
        }
    }

    /// A request that got no answer.
    pub fn from_transport(provider: &str, e: reqwest::Error) -> Self {
        let label = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        // Without the URL: a webhook's may carry a key in its query string.
        Self::transient(label, format!("{provider}: {}", e.without_url()), None)
    }
}

/// The reason without the recipient's address in it (providers quote it back: "550 5.1.1
/// <bob@example.com>", "The 'To' number +1555… is not valid"): logs and `last_error` carry no
/// addresses.
pub fn redact(reason: &str, address: Option<&str>) -> String {
    match address.map(str::trim) {
        Some(a) if a.len() >= 3 => reason.replace(a, "<address>"),
        _ => reason.to_owned(),
    }
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    // At least a second (a 0 or a past date would spend every attempt at once), at most a day.
    Some(wait.clamp(Duration::from_secs(1), Duration::from_secs(86_400)))
}

/// The start of a provider's answer, for `last_error` (bounded, one line).
pub fn snippet(body: &str) -> String {
    let one_line: String = body
        .chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classification() {
        let e = SendError::from_http("webhook", 429, Some("7"), "slow down");
        assert_eq!(
            e.failure,
            Failure::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            SendError::from_http("x", 503, None, "").label,
            "server_error"
        );
        assert!(matches!(
            SendError::from_http("x", 400, None, "").failure,
            Failure::Permanent { suppress: false }
        ));
        assert!(matches!(
            SendError::from_http("x", 401, None, "").failure,
            Failure::Configuration {
                pause_channel: true,
                ..
            }
        ));
        assert!(matches!(
            SendError::from_http("x", 301, None, "").failure,
            Failure::Configuration { .. }
        ));
        assert!(matches!(
            SendError::from_http("x", 404, None, "").failure,
            Failure::Configuration { .. }
        ));
        assert_eq!(parse_retry_after("0"), Some(Duration::from_secs(1)));
        assert_eq!(
            redact("550 5.1.1 <bob@x.org>: no such user", Some("bob@x.org")),
            "550 5.1.1 <<address>>: no such user"
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after("999999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn recommendations_wherever_the_template_put_them() {
        let mut m = Message {
            message_id: 1,
            lease_token: Uuid::nil(),
            idempotency_key: Uuid::nil(),
            campaign: "c".into(),
            channel: "email".into(),
            user_id: "u".into(),
            payload: json!({"subject": "s", "bundle": [{"item_id": "a"}]}),
            attempt: 1,
            address: None,
            unsubscribe_url: None,
        };
        assert_eq!(m.recommendations(), json!([{"item_id": "a"}]));
        m.payload = json!({"recommendations": []});
        assert_eq!(m.recommendations(), json!([]));
        m.payload = json!("text");
        assert_eq!(m.recommendations(), json!([]));
    }
}
