//! SMS through Twilio's Programmable Messaging REST API:
//! `POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json`, HTTP basic auth, a form body.

use std::sync::Arc;

use serde_json::Value;

use crate::config::{secret, SmsConfig};
use crate::message::{Message, SendError};
use crate::render::Renderer;

pub struct Sms {
    endpoint: String,
    account_sid: String,
    auth_token: String,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    http: reqwest::Client,
    renderer: Arc<Renderer>,
}

impl Sms {
    pub fn new(
        c: &SmsConfig,
        http: reqwest::Client,
        renderer: Arc<Renderer>,
    ) -> anyhow::Result<Sms> {
        Ok(Sms {
            endpoint: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                c.base_url.trim_end_matches('/'),
                c.account_sid
            ),
            account_sid: c.account_sid.clone(),
            auth_token: secret("sms.auth_token_env", &c.auth_token_env)?,
            from: c.from.clone(),
            messaging_service_sid: c.messaging_service_sid.clone(),
            http,
            renderer,
        })
    }

    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let to = super::address(m)?;
        let text = self
            .renderer
            .view(m)
            .render("sms.txt")
            .map_err(super::render_error)?;
        let mut form = vec![("To", to.to_owned()), ("Body", text)];
        match (&self.from, &self.messaging_service_sid) {
            (Some(from), _) => form.push(("From", from.clone())),
            (None, Some(sid)) => form.push(("MessagingServiceSid", sid.clone())),
            (None, None) => unreachable!("checked at start"),
        }
        super::send(
            "twilio",
            self.http
                .post(&self.endpoint)
                .basic_auth(&self.account_sid, Some(&self.auth_token))
                .form(&form),
            refine,
        )
        .await
    }
}

/// Twilio error codes (twilio.com/docs/api/errors).
fn refine(e: SendError, body: &str) -> SendError {
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_i64));
    match code {
        // Not a valid number, not a mobile, or the person replied STOP (an unsubscribe).
        Some(21211) | Some(21614) | Some(21610) => {
            SendError::permanent("invalid_address", e.reason, true)
        }
        // Too many requests, or too many messages queued on the sending number.
        Some(20429) | Some(21611) => SendError::transient("rate_limited", e.reason, None),
        // Our account or sending number (bad credentials, a From we may not use).
        Some(20003) | Some(20404) | Some(21606) | Some(21659) => {
            SendError::configuration("auth", e.reason)
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Failure;

    #[test]
    fn error_codes() {
        let base = SendError::from_http("twilio", 400, None, "");
        assert_eq!(
            refine(base.clone(), r#"{"code": 21211, "status": 400}"#).failure,
            Failure::Permanent { suppress: true }
        );
        assert_eq!(
            refine(base, r#"{"code": 21408}"#).failure,
            Failure::Permanent { suppress: false }
        );
    }
}
