//! The worker's configuration: a TOML file, with secrets read from environment variables the
//! file names (so the file can be world-readable and checked into configuration management).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// A directory of per-campaign templates (`<campaign>/email.subject`, …); see the README.
    pub templates: Option<PathBuf>,
    pub email: Option<EmailConfig>,
    pub webhook: Option<WebhookConfig>,
    pub whatsapp: Option<WhatsappConfig>,
    pub sms: Option<SmsConfig>,
    pub push: Option<PushConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style `host=… dbname=… user=…` or a `postgres://` URL. The environment
    /// variable named by `url_env` wins when it is set (it may carry a password).
    pub url: Option<String>,
    #[serde(default = "default_database_url_env")]
    pub url_env: String,
    /// PEM certificates of the CA that signed the server's certificate (a managed service's
    /// own CA), trusted besides the public roots when the URL asks for TLS (`sslmode=require`).
    pub ca_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            url_env: default_database_url_env(),
            ca_file: None,
        }
    }
}

fn default_database_url_env() -> String {
    "PERSONALIZE_WORKER_DATABASE_URL".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Messages per claim, at most (also bounded by the channel's free send slots).
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// How long a claim holds its messages: longer than a send can take, timeouts included.
    #[serde(default = "default_visibility")]
    pub visibility_seconds: u64,
    /// Claims also run this often without a NOTIFY (a message whose delay ended wakes no one).
    #[serde(default = "default_poll")]
    pub poll_seconds: f64,
    /// On SIGTERM: how long sends in flight may take before what is left is handed back.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// When a provider refuses our configuration (credentials, endpoint, template), how long
    /// the message waits, handed back without counting an attempt, and the channel pauses.
    #[serde(default = "default_pause")]
    pub pause_seconds: u64,
    /// `channel` (an unsubscribe link leaves the whole channel) or `campaign` (that campaign).
    #[serde(default)]
    pub unsubscribe_scope: UnsubscribeScope,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

fn default_batch() -> u32 {
    100
}
fn default_visibility() -> u64 {
    60
}
fn default_poll() -> f64 {
    5.0
}
fn default_grace() -> u64 {
    20
}
fn default_pause() -> u64 {
    300
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnsubscribeScope {
    #[default]
    Channel,
    Campaign,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz` and `/unsubscribe` listen, e.g. `127.0.0.1:9187`.
    pub listen: Option<String>,
    /// The public address of the unsubscribe page (this worker's `/unsubscribe` behind the
    /// shop's proxy, or the shop's own endpoint calling `personalize.unsubscribe`); the token
    /// is appended as `?token=…`. Required for email: bulk mail needs a one-click link.
    pub unsubscribe_url: Option<String>,
    /// An optional `mailto:` address for `List-Unsubscribe` beside the link.
    pub unsubscribe_mailto: Option<String>,
}

/// Send slots, rate and timeout: every channel has them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub concurrency: usize,
    pub rate_per_second: Option<u32>,
    pub timeout: Duration,
}

macro_rules! limits {
    ($t:ty) => {
        impl $t {
            pub fn limits(&self) -> Limits {
                Limits {
                    concurrency: self.concurrency.max(1),
                    rate_per_second: self.rate_per_second,
                    timeout: Duration::from_secs_f64(self.timeout_seconds),
                }
            }
        }
    };
}

fn default_concurrency() -> usize {
    16
}
fn default_timeout() -> f64 {
    10.0
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP: only for a relay on localhost or a test sink.
    None,
    #[default]
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    #[serde(default = "default_smtp_password_env")]
    pub password_env: String,
    /// `Shop <news@shop.example>`.
    pub from: String,
    pub reply_to: Option<String>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    pub rate_per_second: Option<u32>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}
limits!(EmailConfig);

fn default_smtp_password_env() -> String {
    "SMTP_PASSWORD".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC-SHA-256 key of `X-Personalize-Signature`; the variable must be set.
    #[serde(default = "default_webhook_secret_env")]
    pub secret_env: String,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    pub rate_per_second: Option<u32>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}
limits!(WebhookConfig);

fn default_webhook_secret_env() -> String {
    "WEBHOOK_SECRET".into()
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WhatsappTemplate {
    /// The approved template's name and language code.
    pub name: String,
    #[serde(default = "default_language")]
    pub language: String,
    /// The body's parameters, in order: each a template over the message
    /// (`"{{ payload.title }}"`, `"{{ recommendations[0].title }}"`).
    #[serde(default)]
    pub parameters: Vec<String>,
}

fn default_language() -> String {
    "en".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappConfig {
    #[serde(default = "default_whatsapp_base")]
    pub base_url: String,
    pub phone_number_id: String,
    #[serde(default = "default_whatsapp_token_env")]
    pub token_env: String,
    /// Per campaign: the template to send (business-initiated messages must be templates).
    #[serde(default)]
    pub templates: std::collections::BTreeMap<String, WhatsappTemplate>,
    /// For campaigns not listed in `templates`.
    pub default_template: Option<WhatsappTemplate>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    pub rate_per_second: Option<u32>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}
limits!(WhatsappConfig);

fn default_whatsapp_base() -> String {
    "https://graph.facebook.com/v21.0".into()
}
fn default_whatsapp_token_env() -> String {
    "WHATSAPP_TOKEN".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    #[serde(default = "default_twilio_base")]
    pub base_url: String,
    pub account_sid: String,
    #[serde(default = "default_twilio_token_env")]
    pub auth_token_env: String,
    /// The sending number (`+15557654321`), or a messaging service instead.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    pub rate_per_second: Option<u32>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}
limits!(SmsConfig);

fn default_twilio_base() -> String {
    "https://api.twilio.com".into()
}
fn default_twilio_token_env() -> String {
    "TWILIO_AUTH_TOKEN".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    #[serde(default = "default_fcm_base")]
    pub base_url: String,
    pub project_id: String,
    /// A Google service account key (JSON): the worker signs a JWT and exchanges it for an
    /// OAuth access token, renewed before it expires.
    pub service_account_file: Option<PathBuf>,
    /// Overrides the key file's `token_uri` (tests).
    pub token_uri: Option<String>,
    /// Or a file holding a current access token, read at every send (something else keeps
    /// it fresh: tokens live an hour).
    pub access_token_file: Option<PathBuf>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    pub rate_per_second: Option<u32>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}
limits!(PushConfig);

fn default_fcm_base() -> String {
    "https://fcm.googleapis.com".into()
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("invalid configuration {}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    /// Mistakes a send would only find later, found at start.
    fn check(&self) -> Result<()> {
        let w = &self.worker;
        if !(1..=10_000).contains(&w.batch) {
            bail!("worker.batch must be 1 to 10000 (claim_messages' limit)");
        }
        if !(1..=43_200).contains(&w.visibility_seconds) {
            bail!("worker.visibility_seconds must be 1 to 43200 (12 hours, claim_messages' limit)");
        }
        if !(1..=86_400).contains(&w.pause_seconds) {
            bail!("worker.pause_seconds must be 1 to 86400");
        }
        if !(w.poll_seconds > 0.0 && w.poll_seconds <= 3600.0) {
            bail!("worker.poll_seconds must be more than 0 and at most 3600");
        }
        if self.channels().is_empty() {
            bail!("no channel is configured: add an [email], [webhook], [whatsapp], [sms] or [push] section");
        }
        for (channel, limits) in self.channels() {
            if limits.timeout.is_zero() {
                bail!("{channel}.timeout_seconds must be more than 0");
            }
            if limits.rate_per_second == Some(0) {
                bail!("{channel}.rate_per_second must be at least 1 (omit it for no limit)");
            }
            // A claimed message may wait for the rate limit behind the rest of its batch, then
            // take its timeout (twice for push: the token, then the send); all of it within
            // the lease, or another worker sends it too.
            let queue = limits
                .rate_per_second
                .map_or(0.0, |r| limits.concurrency as f64 / f64::from(r));
            let worst =
                queue + limits.timeout.as_secs_f64() * if channel == "push" { 2.0 } else { 1.0 };
            if worst >= w.visibility_seconds as f64 {
                bail!(
                    "{channel}: concurrency / rate_per_second + timeout_seconds ({worst:.0} s) must be \
                     less than worker.visibility_seconds ({}): lower the concurrency or raise the lease",
                    w.visibility_seconds
                );
            }
        }
        if self.email.is_some() && self.http.unsubscribe_url.is_none() {
            bail!(
                "email needs http.unsubscribe_url: every message carries a one-click unsubscribe \
                 link (RFC 8058), which bulk senders must have"
            );
        }
        if let Some(url) = &self.http.unsubscribe_url {
            url::Url::parse(url)
                .with_context(|| format!("http.unsubscribe_url {url:?} is not a URL"))?;
        }
        if let Some(sms) = &self.sms {
            if sms.from.is_none() == sms.messaging_service_sid.is_none() {
                bail!("sms needs exactly one of from (a number) and messaging_service_sid");
            }
        }
        if let Some(push) = &self.push {
            if push.service_account_file.is_none() == push.access_token_file.is_none() {
                bail!("push needs exactly one of service_account_file and access_token_file");
            }
        }
        Ok(())
    }

    /// The configured channels, in a fixed order.
    pub fn channels(&self) -> Vec<(&'static str, Limits)> {
        let mut out = Vec::new();
        if let Some(c) = &self.email {
            out.push(("email", c.limits()));
        }
        if let Some(c) = &self.push {
            out.push(("push", c.limits()));
        }
        if let Some(c) = &self.sms {
            out.push(("sms", c.limits()));
        }
        if let Some(c) = &self.whatsapp {
            out.push(("whatsapp", c.limits()));
        }
        if let Some(c) = &self.webhook {
            out.push(("webhook", c.limits()));
        }
        out
    }

    pub fn database_url(&self) -> Result<String> {
        if let Ok(url) = std::env::var(&self.database.url_env) {
            if !url.is_empty() {
                return Ok(url);
            }
        }
        match &self.database.url {
            Some(url) => Ok(url.clone()),
            None => bail!(
                "no database: set database.url in the configuration or {}",
                self.database.url_env
            ),
        }
    }
}

/// A secret from the environment variable a setting names.
pub fn secret(setting: &str, var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => bail!("{setting}: the environment variable {var} is not set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c: Config = toml::from_str(
            "[webhook]\nurl = \"http://127.0.0.1:1/hook\"\n[database]\nurl = \"host=/tmp\"",
        )
        .unwrap();
        c.check().unwrap();
        assert_eq!(c.worker.batch, 100);
        assert_eq!(c.channels()[0].0, "webhook");
        let bad: Config = toml::from_str(
            "[webhook]\nurl = \"http://x/\"\ntimeout_seconds = 90\n[worker]\nvisibility_seconds = 60",
        )
        .unwrap();
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("less than worker.visibility_seconds"), "{e}");
        let slow: Config = toml::from_str(
            "[sms]\naccount_sid = \"AC1\"\nfrom = \"+1\"\nrate_per_second = 1\nconcurrency = 100",
        )
        .unwrap();
        assert!(slow
            .check()
            .unwrap_err()
            .to_string()
            .contains("rate_per_second"));
        let no_link: Config =
            toml::from_str("[email]\nhost = \"localhost\"\nfrom = \"a@b.c\"").unwrap();
        assert!(no_link
            .check()
            .unwrap_err()
            .to_string()
            .contains("unsubscribe"));
        assert!(
            toml::from_str::<Config>("[webhok]\nurl = \"x\"").is_err(),
            "typos are refused"
        );
    }
}
