//! WhatsApp Business Cloud API: template messages (the only kind a business may start
//! outside the 24-hour customer-service window), with the body's parameters rendered from
//! the message. `POST {base_url}/{phone_number_id}/messages`, bearer token.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::{secret, WhatsappConfig, WhatsappTemplate};
use crate::message::{Message, SendError};
use crate::render::Renderer;

pub struct Whatsapp {
    endpoint: String,
    token: String,
    templates: BTreeMap<String, WhatsappTemplate>,
    default_template: Option<WhatsappTemplate>,
    http: reqwest::Client,
    renderer: Arc<Renderer>,
}

impl Whatsapp {
    pub fn new(
        c: &WhatsappConfig,
        http: reqwest::Client,
        renderer: Arc<Renderer>,
    ) -> anyhow::Result<Whatsapp> {
        for t in c.templates.values().chain(c.default_template.iter()) {
            for p in &t.parameters {
                // A parameter that does not parse stops the start, not a send.
                minijinja::Environment::new()
                    .template_from_str(p)
                    .map_err(|e| {
                        anyhow::anyhow!("whatsapp template {} parameter {p:?}: {e}", t.name)
                    })?;
            }
        }
        Ok(Whatsapp {
            endpoint: format!(
                "{}/{}/messages",
                c.base_url.trim_end_matches('/'),
                c.phone_number_id
            ),
            token: secret("whatsapp.token_env", &c.token_env)?,
            templates: c.templates.clone(),
            default_template: c.default_template.clone(),
            http,
            renderer,
        })
    }

    pub fn body(&self, m: &Message, to: &str) -> Result<Value, SendError> {
        let Some(t) = self
            .templates
            .get(&m.campaign)
            .or(self.default_template.as_ref())
        else {
            return Err(super::render_error(anyhow::anyhow!(
                "no WhatsApp template for campaign {}: add [whatsapp.templates.{}] (name, language, parameters) \
                 or [whatsapp.default_template] to the worker's configuration",
                m.campaign,
                m.campaign
            )));
        };
        let view = self.renderer.view(m);
        let parameters = t
            .parameters
            .iter()
            .map(|p| {
                let text = view.render_str(p).map_err(super::render_error)?;
                Ok(json!({"type": "text", "text": text}))
            })
            .collect::<Result<Vec<_>, SendError>>()?;
        let mut template = json!({"name": t.name, "language": {"code": t.language}});
        if !parameters.is_empty() {
            template["components"] = json!([{"type": "body", "parameters": parameters}]);
        }
        Ok(json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
            // Echoed in the status webhooks: ties a delivery report to the message.
            "biz_opaque_callback_data": m.idempotency_key.to_string(),
        }))
    }

    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let to = super::address(m)?;
        let body = self.body(m, to)?;
        super::send(
            "whatsapp",
            self.http
                .post(&self.endpoint)
                .bearer_auth(&self.token)
                .json(&body),
            refine,
        )
        .await
    }
}

/// Graph API error codes (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes).
fn refine(e: SendError, body: &str) -> SendError {
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/code").and_then(Value::as_i64));
    match code {
        // Not a WhatsApp number, or it cannot receive this now; the user stopped marketing
        // messages. This message will not arrive; the next campaign's may (not suppressed).
        Some(131026) | Some(131050) => SendError::permanent("rejected", e.reason, false),
        // Rate limits, spam limits, "not delivered to keep engagement high": later.
        Some(4) | Some(80007) | Some(130429) | Some(131048) | Some(131049) | Some(131056) => {
            SendError::transient("rate_limited", e.reason, None)
        }
        // The access token expired or was revoked.
        Some(190) => SendError::configuration("auth", e.reason),
        // The account (payment, maintenance) or the template (missing, paused, wrong
        // parameters): ours to fix, the messages wait.
        Some(131042) | Some(131057) | Some(132000..=132016) => {
            SendError::configuration("template", e.reason)
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
        let base = SendError::from_http("whatsapp", 400, None, "");
        let e = refine(
            base.clone(),
            r#"{"error": {"code": 131026, "message": "Message undeliverable"}}"#,
        );
        assert_eq!(e.failure, Failure::Permanent { suppress: false });
        assert!(matches!(
            refine(base.clone(), r#"{"error": {"code": 132001}}"#).failure,
            Failure::Configuration { .. }
        ));
        assert!(matches!(
            refine(base.clone(), r#"{"error": {"code": 80007}}"#).failure,
            Failure::Transient { .. }
        ));
        assert_eq!(
            refine(base.clone(), "not json").failure,
            Failure::Permanent { suppress: false }
        );
    }
}
