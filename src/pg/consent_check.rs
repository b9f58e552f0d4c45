//! Whether a user's consent lets a message go out, as `claim_messages()` checks it for every
//! message it hands out. (The campaign trigger does not check it when it writes a message: as
//! one more statement per event it cost single-event tracking a third of its speed; see
//! docs/architecture.md.)

/// A scalar subquery over `personalize.consents` (one index probe) giving the reason a
/// message may not be sent, or NULL: suppressed on the channel, then unsubscribed from the
/// channel or from this campaign, then no opt-in on a channel whose policy needs one (without
/// a policy row: push, sms and whatsapp). `user`, `channel` and `campaign` are SQL expressions.
pub fn refusal(user: &str, channel: &str, campaign: &str) -> String {
    format!(
        "(SELECT CASE
                 WHEN pg_catalog.bool_or(k.status OPERATOR(pg_catalog.=) 'suppressed')
                 THEN 'the user is suppressed on ' OPERATOR(pg_catalog.||) {channel} OPERATOR(pg_catalog.||) ' ('
                      OPERATOR(pg_catalog.||) pg_catalog.max(k.source) FILTER (WHERE k.status OPERATOR(pg_catalog.=) 'suppressed')
                      OPERATOR(pg_catalog.||) ')'
                 WHEN pg_catalog.bool_or(k.status OPERATOR(pg_catalog.=) 'unsubscribed' AND k.campaign OPERATOR(pg_catalog.=) '')
                 THEN 'the user unsubscribed from ' OPERATOR(pg_catalog.||) {channel}
                 WHEN pg_catalog.bool_or(k.status OPERATOR(pg_catalog.=) 'unsubscribed')
                 THEN 'the user unsubscribed from campaign ' OPERATOR(pg_catalog.||) {campaign}
                 WHEN COALESCE((SELECT p.requires_opt_in FROM personalize.channel_policies p
                                 WHERE p.channel OPERATOR(pg_catalog.=) {channel}),
                               {channel} IN ('push', 'sms', 'whatsapp'))
                      AND NOT COALESCE(pg_catalog.bool_or(k.status OPERATOR(pg_catalog.=) 'subscribed'
                                                          AND k.campaign OPERATOR(pg_catalog.=) ''), false)
                 THEN 'no opt-in: ' OPERATOR(pg_catalog.||) {channel} OPERATOR(pg_catalog.||) ' needs the user''s consent'
               END
          FROM personalize.consents k
         WHERE k.user_id OPERATOR(pg_catalog.=) {user} AND k.channel OPERATOR(pg_catalog.=) {channel}
           AND k.campaign IN ('', {campaign}))"
    )
}
