//! Consent: whether a message may go out to its user, and the unsubscribe links.
//!
//! `refusal` is the one definition of the consent rule. The campaign trigger applies it when
//! it writes a message (from an index probe of `personalize.consents`) and `claim_messages()`
//! when it hands one out (from the same rows, read by its query), so both say the same thing
//! in the same words.
//!
//! Unsubscribe tokens: a link in a message that unsubscribes its recipient without a login.
//! A token names the user, the channel and (optionally) the campaign, and carries an
//! HMAC-SHA-256 of exactly those under a secret only the database knows. Changing any part
//! (another user id, another channel) breaks the signature, so a token can only ever
//! unsubscribe the person it was made for; using it twice unsubscribes them twice, which is
//! the same thing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One row of `personalize.consents` for a user and channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConsentRecord {
    /// `''`: the whole channel; else one campaign's name.
    pub campaign: String,
    /// `subscribed`, `unsubscribed` or `suppressed`.
    pub status: String,
    pub source: String,
}

/// Whether a channel needs the user's opt-in when its policy does not say (NULL or no row):
/// push, SMS and WhatsApp do (WhatsApp Business policy, ePrivacy), email and webhook do not.
pub fn opt_in_by_default(channel: &str) -> bool {
    matches!(channel, "push" | "sms" | "whatsapp")
}

/// Why a message of `campaign` on `channel` may not go out to its user, or None. `records` are
/// the user's consent rows on the channel (any campaign; only `''` and `campaign` count). In
/// order: suppressed on the channel, unsubscribed from the channel, unsubscribed from this
/// campaign, no opt-in on a channel that needs one (`requires_opt_in`, the channel's policy).
pub fn refusal(
    channel: &str,
    campaign: &str,
    requires_opt_in: bool,
    records: &[ConsentRecord],
) -> Option<String> {
    let relevant = || {
        records
            .iter()
            .filter(|r| r.campaign.is_empty() || r.campaign == campaign)
    };
    if let Some(source) = relevant()
        .filter(|r| r.status == "suppressed")
        .map(|r| r.source.as_str())
        .max()
    {
        return Some(format!("the user is suppressed on {channel} ({source})"));
    }
    if relevant().any(|r| r.status == "unsubscribed" && r.campaign.is_empty()) {
        return Some(format!("the user unsubscribed from {channel}"));
    }
    if relevant().any(|r| r.status == "unsubscribed") {
        return Some(format!("the user unsubscribed from campaign {campaign}"));
    }
    if requires_opt_in && !relevant().any(|r| r.status == "subscribed" && r.campaign.is_empty()) {
        return Some(format!("no opt-in: {channel} needs the user's consent"));
    }
    None
}

/// Who a token unsubscribes, from what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    #[serde(rename = "u")]
    pub user_id: String,
    #[serde(rename = "c")]
    pub channel: String,
    /// A campaign: unsubscribe from it alone; None: from the whole channel.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// Secrets shorter than this are refused: a guessable secret lets anyone forge tokens.
pub const MIN_SECRET_BYTES: usize = 32;

fn mac(secret: &[u8], body: &str) -> Hmac<Sha256> {
    // Token version 1; a later format gets another prefix and cannot verify as this one.
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(b"pg_personalize unsubscribe v1\0");
    m.update(body.as_bytes());
    m
}

/// The token for a recipient: `<base64url(json)>.<base64url(hmac)>`.
pub fn sign(secret: &[u8], recipient: &Recipient) -> String {
    let json = serde_json::to_string(recipient).expect("plain strings serialize");
    let body = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(mac(secret, &body).finalize().into_bytes());
    format!("{body}.{tag}")
}

/// The recipient of a token made with `secret`, or why it is not a valid one. The signature
/// is compared in constant time.
pub fn verify(secret: &[u8], token: &str) -> Result<Recipient, &'static str> {
    let (body, tag) = token
        .split_once('.')
        .ok_or("it is not of the form <body>.<signature>")?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| "its signature is not base64url")?;
    mac(secret, body)
        .verify_slice(&tag)
        .map_err(|_| "its signature does not match (altered, or made with another secret)")?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| "its body is not base64url")?;
    serde_json::from_slice(&json).map_err(|_| "its body does not name a recipient")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    fn alice() -> Recipient {
        Recipient {
            user_id: "alice".into(),
            channel: "email".into(),
            campaign: None,
        }
    }

    fn record(campaign: &str, status: &str, source: &str) -> ConsentRecord {
        ConsentRecord {
            campaign: campaign.into(),
            status: status.into(),
            source: source.into(),
        }
    }

    #[test]
    fn the_consent_rule() {
        let no =
            |records: &[ConsentRecord], opt_in: bool| refusal("whatsapp", "carts", opt_in, records);
        assert_eq!(
            no(&[], true).as_deref(),
            Some("no opt-in: whatsapp needs the user's consent")
        );
        assert_eq!(no(&[], false), None);
        let subscribed = record("", "subscribed", "checkout");
        assert_eq!(no(std::slice::from_ref(&subscribed), true), None);
        // Subscribing to one campaign is not an opt-in to the channel.
        assert!(no(&[record("carts", "subscribed", "x")], true).is_some());
        // Another campaign's unsubscribe does not count; this campaign's does.
        assert_eq!(
            no(
                &[subscribed.clone(), record("views", "unsubscribed", "x")],
                true
            ),
            None
        );
        assert_eq!(
            no(
                &[subscribed.clone(), record("carts", "unsubscribed", "x")],
                true
            )
            .as_deref(),
            Some("the user unsubscribed from campaign carts")
        );
        // The channel's unsubscribe beats the campaign's; a suppression beats both.
        let both = [
            record("", "unsubscribed", "STOP"),
            record("carts", "unsubscribed", "x"),
        ];
        assert_eq!(
            no(&both, false).as_deref(),
            Some("the user unsubscribed from whatsapp")
        );
        assert_eq!(
            no(
                &[
                    record("", "suppressed", "suppressed: 131026"),
                    both[1].clone()
                ],
                false
            )
            .as_deref(),
            Some("the user is suppressed on whatsapp (suppressed: 131026)")
        );
        assert!(opt_in_by_default("sms") && !opt_in_by_default("email"));
    }

    #[test]
    fn a_token_names_its_recipient() {
        for r in [
            alice(),
            Recipient {
                campaign: Some("cart_email".into()),
                ..alice()
            },
            Recipient {
                user_id: "ünïcode \"quoted\" . dots".into(),
                channel: "whatsapp".into(),
                campaign: None,
            },
        ] {
            let t = sign(SECRET, &r);
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            assert_eq!(verify(SECRET, &t), Ok(r));
        }
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let t = sign(SECRET, &alice());
        assert!(verify(b"another secret of at least thirty-two bytes", &t).is_err());
        // Bob's body under Alice's signature.
        let bob = sign(
            SECRET,
            &Recipient {
                user_id: "bob".into(),
                ..alice()
            },
        );
        let forged = format!(
            "{}.{}",
            bob.split('.').next().unwrap(),
            t.split('.').nth(1).unwrap()
        );
        assert!(verify(SECRET, &forged).is_err());
        // Every single-character change of the token is caught.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(b).unwrap();
            if changed != t {
                assert!(verify(SECRET, &changed).is_err(), "position {i}");
            }
        }
        for junk in ["", ".", "abc", "a.b.c", "!!!.???"] {
            assert!(verify(SECRET, junk).is_err());
        }
    }
}
