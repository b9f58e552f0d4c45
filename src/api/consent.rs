//! Consent: unsubscribe tokens, signed and checked by `core::consent` under
//! `personalize.unsubscribe_secret`. The consent rows themselves and `unsubscribe()` are SQL
//! (sql/consent.sql); claim_messages() reads them (src/api/outbox.rs).

use pgrx::prelude::*;

use crate::core::consent::{self, Recipient};
use crate::error::{required, PersonalizeError};

/// The signing key, or a 55000 error saying how to set one.
fn secret() -> Vec<u8> {
    match crate::gucs::UNSUBSCRIBE_SECRET.get() {
        Some(s) if s.as_bytes().len() >= consent::MIN_SECRET_BYTES => s.into_bytes(),
        Some(_) => PersonalizeError::NotReady {
            message: format!(
                "personalize.unsubscribe_secret is shorter than {} bytes",
                consent::MIN_SECRET_BYTES
            ),
            hint: "A short key can be guessed, and with it any token forged. Set a long random \
                   one: ALTER SYSTEM SET personalize.unsubscribe_secret = '<64 random hex \
                   characters>'; SELECT pg_reload_conf();"
                .into(),
        }
        .raise(),
        None => PersonalizeError::NotReady {
            message: "personalize.unsubscribe_secret is not set".into(),
            hint: "Unsubscribe tokens are signed with it. As a superuser: ALTER SYSTEM SET \
                   personalize.unsubscribe_secret = '<64 random hex characters>'; SELECT \
                   pg_reload_conf(); and keep it: tokens signed with another key are refused."
                .into(),
        }
        .raise(),
    }
}

/// The token for a message's unsubscribe link: it unsubscribes this user from this channel
/// (or only from this campaign) when passed to `unsubscribe()`, and nobody else.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn unsubscribe_token(
    user_id: Option<&str>,
    channel: Option<&str>,
    campaign: default!(Option<&str>, "NULL"),
) -> String {
    let recipient = Recipient {
        user_id: required(user_id, "user_id").to_owned(),
        channel: required(channel, "channel").to_owned(),
        campaign: campaign.map(str::to_owned),
    };
    if recipient.user_id.is_empty() || recipient.channel.is_empty() {
        PersonalizeError::invalid(
            "user_id and channel must not be empty",
            "Pass the message's user_id and channel, as claim_messages() returns them.",
        )
        .raise();
    }
    consent::sign(&secret(), &recipient)
}

/// Who a token unsubscribes (raises 22023 for a token that was altered, forged or signed
/// with another key). Internal: `unsubscribe()` applies it.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _unsubscribe_recipient(
    token: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(user_id, String),
        name!(channel, String),
        name!(campaign, Option<String>),
    ),
> {
    let token = required(token, "token");
    match consent::verify(&secret(), token.trim()) {
        Ok(r) => TableIterator::once((r.user_id, r.channel, r.campaign)),
        Err(why) => PersonalizeError::invalid(
            format!("invalid unsubscribe token: {why}"),
            "Pass the token exactly as unsubscribe_token() made it (from the message's link).",
        )
        .raise(),
    }
}
