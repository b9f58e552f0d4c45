//! Push through Firebase Cloud Messaging HTTP v1:
//! `POST {base_url}/v1/projects/{project}/messages:send` with an OAuth 2 access token. The
//! token comes from a service account key (a JWT signed with its RSA key, exchanged at its
//! `token_uri`, renewed five minutes before it expires) or from an environment variable.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::config::PushConfig;
use crate::message::{Message, SendError};
use crate::render::Renderer;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    token_uri: String,
}

enum Credentials {
    /// A file holding a current access token, read at every use (whatever refreshes it, say
    /// `gcloud auth print-access-token` from a timer, writes it).
    TokenFile(std::path::PathBuf),
    ServiceAccount {
        account: ServiceAccount,
        key: jsonwebtoken::EncodingKey,
        cached: Mutex<Option<(String, Instant)>>,
    },
}

pub struct Push {
    endpoint: String,
    credentials: Credentials,
    http: reqwest::Client,
    renderer: Arc<Renderer>,
}

impl Push {
    pub fn new(c: &PushConfig, http: reqwest::Client, renderer: Arc<Renderer>) -> Result<Push> {
        let credentials = match (&c.service_account_file, &c.access_token_file) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("push.service_account_file {}", path.display()))?;
                let mut account: ServiceAccount =
                    serde_json::from_str(&text).with_context(|| {
                        format!(
                            "push.service_account_file {}: not a service account key",
                            path.display()
                        )
                    })?;
                if let Some(uri) = &c.token_uri {
                    account.token_uri = uri.clone();
                }
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
                    .context(
                    "push.service_account_file: private_key is not an RSA key in PEM",
                )?;
                Credentials::ServiceAccount {
                    account,
                    key,
                    cached: Mutex::new(None),
                }
            }
            (None, Some(path)) => {
                std::fs::read_to_string(path)
                    .with_context(|| format!("push.access_token_file {}", path.display()))?;
                Credentials::TokenFile(path.clone())
            }
            (None, None) => unreachable!("checked at start"),
        };
        Ok(Push {
            endpoint: format!(
                "{}/v1/projects/{}/messages:send",
                c.base_url.trim_end_matches('/'),
                c.project_id
            ),
            credentials,
            http,
            renderer,
        })
    }

    async fn access_token(&self) -> Result<String, SendError> {
        let (account, key, cached) = match &self.credentials {
            Credentials::TokenFile(path) => {
                return std::fs::read_to_string(path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| {
                        SendError::configuration(
                            "auth",
                            format!("push.access_token_file {}: {e}", path.display()),
                        )
                    })
            }
            Credentials::ServiceAccount {
                account,
                key,
                cached,
            } => (account, key, cached),
        };
        let mut cached = cached.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = json!({
            "iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
            "iat": now, "exp": now + 3600,
        });
        let assertion = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            key,
        )
        .map_err(|e| {
            SendError::transient(
                "auth",
                format!("cannot sign the FCM token request: {e}"),
                Some(Duration::from_secs(300)),
            )
        })?;
        let response = self
            .http
            .post(&account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| SendError::from_transport("oauth", e))?;
        // A 4xx here is about our key, never the message: pause, do not cancel.
        let body =
            super::answer("oauth", response)
                .await
                .map_err(|(status, e, _)| match status {
                    400..=499 if status != 429 => SendError::configuration("auth", e.reason),
                    _ => e,
                })?;
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            expires_in: u64,
        }
        let t: Token = serde_json::from_str(&body).map_err(|e| {
            SendError::transient(
                "auth",
                format!("oauth answer without access_token: {e}"),
                None,
            )
        })?;
        let lifetime = Duration::from_secs(t.expires_in.saturating_sub(300).max(30));
        *cached = Some((t.access_token.clone(), Instant::now() + lifetime));
        Ok(t.access_token)
    }

    pub fn body(&self, m: &Message, token: &str) -> Result<Value, SendError> {
        let view = self.renderer.view(m);
        let part = |name| view.render(name).map_err(super::render_error);
        let (title, body) = (part("push.title")?, part("push.body")?);
        // FCM's data values must be strings: the payload travels as one JSON string.
        Ok(json!({"message": {
            "token": token,
            "notification": {"title": title, "body": body},
            "data": {
                "campaign": m.campaign,
                "message_id": m.message_id.to_string(),
                "idempotency_key": m.idempotency_key.to_string(),
                "payload": m.payload.to_string(),
            },
        }}))
    }

    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let device = super::address(m)?;
        let body = self.body(m, device)?;
        let access = self.access_token().await?;
        let sent = super::send(
            "fcm",
            self.http
                .post(&self.endpoint)
                .bearer_auth(access)
                .json(&body),
            refine,
        )
        .await;
        if matches!(&sent, Err(e) if e.label == "auth") {
            // A revoked token: fetch a new one next time rather than wait for its expiry.
            if let Credentials::ServiceAccount { cached, .. } = &self.credentials {
                *cached.lock().await = None;
            }
        }
        sent
    }
}

/// FCM v1 error codes (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
fn refine(e: SendError, body: &str) -> SendError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v
        .pointer("/error/details")
        .and_then(Value::as_array)
        .and_then(|d| {
            d.iter()
                .find_map(|x| x.get("errorCode").and_then(Value::as_str))
        })
        .or_else(|| v.pointer("/error/status").and_then(Value::as_str))
        .unwrap_or("");
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    match code {
        // The app was uninstalled: the token never works again.
        "UNREGISTERED" => SendError::permanent("invalid_address", e.reason, true),
        // Every token answers this when the key is another project's: our configuration.
        "SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR" => {
            SendError::configuration("auth", e.reason)
        }
        "INVALID_ARGUMENT" if message.contains("registration token") => {
            SendError::permanent("invalid_address", e.reason, true)
        }
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" => SendError {
            failure: crate::message::Failure::Transient {
                retry_after: match e.failure {
                    crate::message::Failure::Transient { retry_after } => retry_after,
                    _ => None,
                },
            },
            ..e
        },
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Failure;

    #[test]
    fn error_codes() {
        let base = SendError::from_http("fcm", 404, None, "");
        let unregistered = r#"{"error": {"code": 404, "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}"#;
        assert_eq!(
            refine(base.clone(), unregistered).failure,
            Failure::Permanent { suppress: true }
        );
        // A 404 without UNREGISTERED: a wrong project id, ours to fix.
        assert_eq!(
            refine(base, r#"{"error": {"status": "NOT_FOUND"}}"#).failure,
            Failure::Configuration {
                pause_channel: true
            }
        );
        let quota = SendError::from_http("fcm", 429, Some("3"), "");
        assert_eq!(refine(quota, r#"{"error": {"status": "RESOURCE_EXHAUSTED", "details": [{"errorCode": "QUOTA_EXCEEDED"}]}}"#).failure, Failure::Transient { retry_after: Some(Duration::from_secs(3)) });
    }
}
