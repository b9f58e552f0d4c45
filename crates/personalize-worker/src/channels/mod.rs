//! One sender per channel. Each turns a claimed message into the provider's request and its
//! answer into success or a classified `SendError`; none of them touches the database.

pub mod email;
pub mod push;
pub mod sms;
pub mod webhook;
pub mod whatsapp;

use std::sync::Arc;

use anyhow::Result;

use crate::config::{Config, Limits};
use crate::message::{Message, SendError};
use crate::render::Renderer;

pub enum Sender {
    Email(email::Email),
    Webhook(webhook::Webhook),
    Whatsapp(whatsapp::Whatsapp),
    Sms(sms::Sms),
    Push(push::Push),
}

impl Sender {
    pub fn build(
        channel: &str,
        config: &Config,
        limits: Limits,
        renderer: Arc<Renderer>,
    ) -> Result<Sender> {
        let http = || {
            reqwest::Client::builder()
                .timeout(limits.timeout)
                .pool_max_idle_per_host(limits.concurrency)
                // A redirected POST becomes a GET whose 200 would ack an undelivered message.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("pg-personalize-worker/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        Ok(match channel {
            "email" => Sender::Email(email::Email::new(
                config.email.as_ref().expect("configured"),
                &config.http,
                limits,
                renderer,
            )?),
            "webhook" => Sender::Webhook(webhook::Webhook::new(
                config.webhook.as_ref().expect("configured"),
                http()?,
            )?),
            "whatsapp" => Sender::Whatsapp(whatsapp::Whatsapp::new(
                config.whatsapp.as_ref().expect("configured"),
                http()?,
                renderer,
            )?),
            "sms" => Sender::Sms(sms::Sms::new(
                config.sms.as_ref().expect("configured"),
                http()?,
                renderer,
            )?),
            "push" => Sender::Push(push::Push::new(
                config.push.as_ref().expect("configured"),
                http()?,
                renderer,
            )?),
            other => anyhow::bail!("unknown channel {other}"),
        })
    }

    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        match self {
            Sender::Email(s) => s.send(m).await,
            Sender::Webhook(s) => s.send(m).await,
            Sender::Whatsapp(s) => s.send(m).await,
            Sender::Sms(s) => s.send(m).await,
            Sender::Push(s) => s.send(m).await,
        }
    }
}

/// The address a channel needs; a message without one cannot be sent, ever.
pub fn address(m: &Message) -> Result<&str, SendError> {
    match m.address.as_deref() {
        Some(a) if !a.trim().is_empty() => Ok(a.trim()),
        _ => Err(SendError::permanent(
            "no_address",
            format!("no {} address for the user in its recipients", m.channel),
            false,
        )),
    }
}

/// A template that cannot render is the configuration's fault, not the message's: the
/// message waits (for a fix and a restart) without counting an attempt; the channel's other
/// campaigns go on.
pub fn render_error(e: anyhow::Error) -> SendError {
    SendError {
        failure: crate::message::Failure::Configuration {
            pause_channel: false,
        },
        reason: format!("{e:#}"),
        label: "template",
    }
}

/// Sends a provider's request: Ok on 2xx; else the error classified by its HTTP status, then
/// by `refine` from the provider's error body (which refusals mean a bad address).
pub async fn send(
    provider: &str,
    request: reqwest::RequestBuilder,
    refine: fn(SendError, &str) -> SendError,
) -> Result<(), SendError> {
    let response = request
        .send()
        .await
        .map_err(|e| SendError::from_transport(provider, e))?;
    answer(provider, response)
        .await
        .map(drop)
        .map_err(|(_, e, body)| refine(e, &body))
}

/// Reads a provider's answer: Ok(body) on 2xx, else the classified error with the body.
pub async fn answer(
    provider: &str,
    response: reqwest::Response,
) -> Result<String, (u16, SendError, String)> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        let e = SendError::from_http(provider, status, retry_after.as_deref(), &body);
        Err((status, e, body))
    }
}
