//! A generic webhook: the message as JSON, signed so the receiver can tell it came from us
//! and is fresh, with the idempotency key so it can drop repeats.
//!
//! Headers: `Idempotency-Key: <uuid>`, `X-Personalize-Timestamp: <unix seconds>`,
//! `X-Personalize-Signature: v1=<hex HMAC-SHA-256 of "<timestamp>.<body>">`. A receiver
//! recomputes the HMAC over the raw body and refuses timestamps more than a few minutes old.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::config::{secret, WebhookConfig};
use crate::message::{Message, SendError};

pub struct Webhook {
    url: String,
    key: Vec<u8>,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(c: &WebhookConfig, http: reqwest::Client) -> anyhow::Result<Webhook> {
        url::Url::parse(&c.url).map_err(|e| anyhow::anyhow!("webhook.url {:?}: {e}", c.url))?;
        Ok(Webhook {
            url: c.url.clone(),
            key: secret("webhook.secret_env", &c.secret_env)?.into_bytes(),
            http,
        })
    }

    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let body = serde_json::to_vec(&json!({
            "message_id": m.message_id,
            "idempotency_key": m.idempotency_key,
            "campaign": m.campaign,
            "channel": m.channel,
            "user_id": m.user_id,
            "attempt": m.attempt,
            "address": m.address,
            "unsubscribe_url": m.unsubscribe_url,
            "payload": m.payload,
        }))
        .expect("JSON");
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string();
        let signature = sign(&self.key, &timestamp, &body);
        super::send(
            "webhook",
            self.http
                .post(&self.url)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", m.idempotency_key.to_string())
                .header("X-Personalize-Timestamp", &timestamp)
                .header("X-Personalize-Signature", format!("v1={signature}"))
                .body(body),
            // Any other refusal is the receiver's to explain: nothing to refine.
            |e, _| e,
        )
        .await
    }
}

pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_python_hmac() {
        // HMAC-SHA-256("key", "1.{}") computed independently (python3 -c 'import hmac, hashlib;
        // print(hmac.new(b"key", b"1.{}", hashlib.sha256).hexdigest())').
        assert_eq!(
            super::sign(b"key", "1", b"{}"),
            "1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
