//! The worker's SQL: the extension's worker functions, nothing else (the `personalize_worker`
//! role has EXECUTE on them and no table privileges).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::message::Message;

/// The TLS connector for the database: used when the URL's `sslmode` asks for it (`prefer`,
/// tokio-postgres' default, falls back to plain; a Unix socket never uses TLS). Trusts the
/// public web roots and `database.ca_file`.
pub fn tls(config: &crate::config::Config) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &config.database.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("database.ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            bail!("database.ca_file {}: no certificate in it", path.display());
        }
        for c in certs {
            roots
                .add(c)
                .with_context(|| format!("database.ca_file {}", path.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

/// Claims up to `batch` due messages of a channel, with each recipient's address (when the
/// channel names its recipients) and unsubscribe token, in one statement: its transaction is
/// the claim's, so a failure claims nothing. The addresses of the whole batch are read at once
/// (`recipient_addresses`), in the order the claim returned the messages.
const CLAIM_WITH_ADDRESSES: &str = "
WITH m AS (SELECT c.*, pg_catalog.row_number() OVER () AS n
             FROM personalize.claim_messages($1::text, $2::int, make_interval(secs => $3::float8)) c),
     a AS (SELECT * FROM personalize.recipient_addresses($1::text, ARRAY(SELECT DISTINCT m.user_id::text FROM m)))
SELECT m.message_id, m.lease_token, m.idempotency_key, m.campaign, m.channel, m.user_id,
       m.payload, m.attempt, a.address,
       CASE WHEN $4 THEN personalize.unsubscribe_token(m.user_id::text, m.channel,
                                                       CASE WHEN $5 THEN m.campaign END) END AS token
  FROM m LEFT JOIN a ON a.user_id = m.user_id::text
 ORDER BY m.n";

/// `CLAIM_WITH_ADDRESSES` for a channel that names no recipients (a webhook).
const CLAIM: &str = "
SELECT m.message_id, m.lease_token, m.idempotency_key, m.campaign, m.channel, m.user_id,
       m.payload, m.attempt, CAST(NULL AS text) AS address,
       CASE WHEN $4 THEN personalize.unsubscribe_token(m.user_id::text, m.channel,
                                                       CASE WHEN $5 THEN m.campaign END) END AS token
  FROM personalize.claim_messages($1::text, $2::int, make_interval(secs => $3::float8)) m";

pub struct ClaimOptions {
    pub batch: u32,
    pub visibility: Duration,
    pub with_address: bool,
    pub with_token: bool,
    pub token_per_campaign: bool,
}

pub async fn claim(
    client: &Client,
    channel: &str,
    n: u32,
    o: &ClaimOptions,
    unsubscribe_url: Option<&str>,
) -> Result<Vec<Message>> {
    let rows = client
        .query(
            if o.with_address {
                CLAIM_WITH_ADDRESSES
            } else {
                CLAIM
            },
            &[
                &channel,
                &(n.min(o.batch) as i32),
                &o.visibility.as_secs_f64(),
                &o.with_token,
                &o.token_per_campaign,
            ],
        )
        .await
        .with_context(|| format!("claim_messages('{channel}')"))?;
    rows.iter()
        .map(|r| {
            let token: Option<String> = r.try_get("token")?;
            Ok(Message {
                message_id: r.try_get("message_id")?,
                lease_token: r.try_get("lease_token")?,
                idempotency_key: r.try_get("idempotency_key")?,
                campaign: r.try_get("campaign")?,
                channel: r.try_get("channel")?,
                user_id: r.try_get("user_id")?,
                payload: r.try_get("payload")?,
                attempt: r.try_get("attempt")?,
                address: r.try_get("address")?,
                unsubscribe_url: match (token, unsubscribe_url) {
                    (Some(t), Some(base)) => Some(link(base, &t)),
                    _ => None,
                },
            })
        })
        .collect()
}

/// `base?token=…` (or `&token=…` when the base has a query already).
pub fn link(base: &str, token: &str) -> String {
    let mut url = url::Url::parse(base).expect("checked at start");
    url.query_pairs_mut().append_pair("token", token);
    url.to_string()
}

pub async fn ack_batch(client: &Client, lease: Uuid, ids: &[i64]) -> Result<i32> {
    let row = client
        .query_one("SELECT personalize.ack_batch($1, $2)", &[&lease, &ids])
        .await
        .context("ack_batch")?;
    Ok(row.get(0))
}

/// The new state (`pending`, `dead`), or None when the lease was lost.
pub async fn fail(
    client: &Client,
    m: &Message,
    reason: &str,
    retry_in: Option<Duration>,
) -> Result<Option<String>> {
    let row = client
        .query_one(
            "SELECT personalize.fail($1, $2, $3, make_interval(secs => $4::float8))",
            &[
                &m.message_id,
                &m.lease_token,
                &reason,
                &retry_in.map(|d| d.as_secs_f64()),
            ],
        )
        .await
        .context("fail")?;
    Ok(row.get(0))
}

/// Hands a claimed, unsent message back without counting the claim as an attempt.
pub async fn release(client: &Client, m: &Message, retry_in: Duration) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT personalize.release_message($1, $2, make_interval(secs => $3::float8))",
            &[&m.message_id, &m.lease_token, &retry_in.as_secs_f64()],
        )
        .await
        .context("release_message")?;
    Ok(row.get(0))
}

pub async fn cancel(client: &Client, m: &Message, reason: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT personalize.cancel_message($1, $2, $3)",
            &[&m.message_id, &m.lease_token, &reason],
        )
        .await
        .context("cancel_message")?;
    Ok(row.get(0))
}

pub async fn suppress(client: &Client, m: &Message, reason: &str) -> Result<()> {
    client
        .execute(
            "SELECT personalize.suppress($1::text, $2::text, $3::text)",
            &[&m.user_id, &m.channel, &reason],
        )
        .await
        .context("suppress")?;
    Ok(())
}

/// Applies an unsubscribe link's token; Ok(None) when the token is not valid (22023).
pub async fn unsubscribe(
    client: &Client,
    token: &str,
) -> Result<Option<(String, String, Option<String>)>> {
    match client
        .query_one(
            "SELECT user_id, channel, campaign FROM personalize.unsubscribe($1)",
            &[&token],
        )
        .await
    {
        Ok(row) => Ok(Some((row.get(0), row.get(1), row.get(2)))),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) => {
            Ok(None)
        }
        Err(e) => Err(e).context("unsubscribe"),
    }
}

/// What the start checks: the extension answers, the role may call the worker functions,
/// unsubscribe links can be signed, and every channel that needs an address names where to
/// read it. Returns, per channel, whether it has recipients.
pub async fn check(client: &Client, channels: &[&str], need_token: bool) -> Result<Vec<bool>> {
    let version: Option<String> = client
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_personalize'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    let Some(version) = version else {
        bail!("pg_personalize is not installed in this database (CREATE EXTENSION pg_personalize)");
    };
    tracing::info!(extension_version = %version, "connected");
    if need_token {
        client
            .query_one(
                "SELECT personalize.unsubscribe_token('probe', 'email')",
                &[],
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot sign unsubscribe links: {}", db_error(&e)))?;
    }
    let mut out = Vec::new();
    for channel in channels {
        // recipient_address() raises 55000 when the channel names no recipients.
        let has = match client
            .query_one(
                "SELECT personalize.recipient_address('probe', $1)",
                &[channel],
            )
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.code()
                    == Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) =>
            {
                false
            }
            Err(e) => bail!("recipient_address(…, '{channel}'): {}", db_error(&e)),
        };
        if !has && *channel != "webhook" {
            bail!(
                "channel {channel} names no recipients: the worker cannot know where to send. \
                 UPDATE personalize.channel_policies SET recipients = 'shop.{channel}_recipients', \
                 address_column = '…' WHERE channel = '{channel}' (README: Addresses stay in the shop's tables)"
            );
        }
        out.push(has);
    }
    Ok(out)
}

/// A database error with its message, detail and hint (tokio-postgres' Display shows only
/// "db error").
pub fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{}: {}", d.code().code(), d.message());
            if let Some(h) = d.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => {
            // The cause matters here ("invalid peer certificate: UnknownIssuer").
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                s.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn links() {
        assert_eq!(
            super::link("https://s.example/u", "a.b+c"),
            "https://s.example/u?token=a.b%2Bc"
        );
        assert_eq!(
            super::link("https://s.example/u?l=en", "t"),
            "https://s.example/u?l=en&token=t"
        );
    }
}
