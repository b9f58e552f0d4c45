//! Email over SMTP (lettre): multipart text + HTML from the campaign's templates, a one-click
//! unsubscribe (`List-Unsubscribe` + `List-Unsubscribe-Post`, RFC 8058), and a `Message-ID`
//! made from the idempotency key, so a redelivered message is recognisably the same one.
//! DKIM signing, which RFC 8058 expects over those headers, is the relay's job.

use std::sync::Arc;

use anyhow::{Context, Result};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{secret, EmailConfig, HttpConfig, Limits, SmtpTls};
use crate::message::{Message, SendError};
use crate::render::Renderer;

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    domain: String,
    mailto: Option<String>,
    renderer: Arc<Renderer>,
}

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

impl Email {
    pub fn new(
        c: &EmailConfig,
        http: &HttpConfig,
        limits: Limits,
        renderer: Arc<Renderer>,
    ) -> Result<Email> {
        let from: Mailbox = c
            .from
            .parse()
            .with_context(|| format!("email.from {:?} is not an address", c.from))?;
        let reply_to = c
            .reply_to
            .as_deref()
            .map(|r| {
                r.parse()
                    .with_context(|| format!("email.reply_to {r:?} is not an address"))
            })
            .transpose()?;
        let mut builder = match c.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
                .port(c.port.unwrap_or(25)),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)?
                .port(c.port.unwrap_or(587)),
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)?.port(c.port.unwrap_or(465))
            }
        };
        if let Some(user) = &c.username {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                secret("email.password_env", &c.password_env)?,
            ));
        }
        let transport = builder
            .timeout(Some(limits.timeout))
            .pool_config(PoolConfig::new().max_size(limits.concurrency as u32))
            .build();
        Ok(Email {
            domain: from.email.domain().to_owned(),
            from,
            reply_to,
            mailto: http.unsubscribe_mailto.clone(),
            transport,
            renderer,
        })
    }

    pub fn build(&self, m: &Message) -> Result<lettre::Message, SendError> {
        let to: Mailbox = super::address(m)?.parse().map_err(|e| {
            SendError::permanent(
                "invalid_address",
                format!("not an email address: {e}"),
                false,
            )
        })?;
        let view = self.renderer.view(m);
        let part = |name| view.render(name).map_err(super::render_error);
        let (subject, text, html) = (
            part("email.subject")?,
            part("email.txt")?,
            part("email.html")?,
        );
        let link = m.unsubscribe_url.as_deref().ok_or_else(|| {
            SendError::transient(
                "template",
                "no unsubscribe link (personalize.unsubscribe_secret unset?)",
                None,
            )
        })?;
        let mut unsubscribe = format!("<{link}>");
        if let Some(mailto) = &self.mailto {
            unsubscribe.push_str(&format!(", <mailto:{mailto}?subject=unsubscribe>"));
        }
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject.trim())
            .message_id(Some(format!("<{}@{}>", m.idempotency_key, self.domain)))
            .header(ListUnsubscribe(unsubscribe))
            .header(ListUnsubscribePost);
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| {
                SendError::permanent("rejected", format!("cannot build the email: {e}"), false)
            })
    }

    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let email = self.build(m)?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }
}

/// SMTP replies. Refused credentials or TLS (530, 534, 535, 538) are our configuration. A 5xx
/// is permanent, and only a bad mailbox (enhanced status 5.1.x: no such user, bad domain)
/// suppresses the address; a policy refusal (5.7.x: relaying denied, DMARC) is usually the
/// sending account's, so it is retried and ends dead rather than suppress every recipient.
/// 4xx and network errors are transient.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let reason = format!("smtp: {e}");
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    if matches!(code.as_str(), "530" | "534" | "535" | "538") {
        return SendError::configuration("auth", reason);
    }
    if e.is_permanent() {
        return match enhanced_status(&reason) {
            Some(s) if s.starts_with("5.1.") => {
                SendError::permanent("invalid_address", reason, true)
            }
            Some(s) if s.starts_with("5.7.") => {
                SendError::transient("policy", reason, Some(std::time::Duration::from_secs(300)))
            }
            _ => SendError::permanent("rejected", reason, false),
        };
    }
    if e.is_timeout() {
        SendError::transient("timeout", reason, None)
    } else if e.is_transient() {
        SendError::transient("server_error", reason, None)
    } else {
        SendError::transient("connect", reason, None)
    }
}

/// The enhanced status code of an SMTP reply (RFC 3463: `class.subject.detail`, e.g. 5.1.1).
fn enhanced_status(reply: &str) -> Option<&str> {
    reply.split_whitespace().find(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn enhanced_status_codes() {
        assert_eq!(
            super::enhanced_status("smtp: permanent error (550): 5.1.1 <a@b>: no such user"),
            Some("5.1.1")
        );
        assert_eq!(
            super::enhanced_status("smtp: permanent error (550): 5.7.26 DMARC"),
            Some("5.7.26")
        );
        assert_eq!(
            super::enhanced_status("smtp: permanent error (550): relaying denied"),
            None
        );
        assert_eq!(super::enhanced_status("version 1.2.3 5.x.1"), None);
    }
}
