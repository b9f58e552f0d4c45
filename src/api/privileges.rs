//! Roles and grants: least privilege for the three kinds of caller plus the administrator.
//!
//! The extension script and every upgrade script end with `SELECT personalize._apply_privileges()`,
//! so a function added by a later version gets the same treatment without a hand-kept GRANT list
//! in two places.
//!
//! - `personalize_recommender` (serving without per-user history), `personalize_reader`
//!   (serving and the per-user history functions: segment checks, predicates, explanations;
//!   a member of the recommender), `personalize_writer` (tracking) and `personalize_worker`
//!   (outbox workers) get EXECUTE on their functions and nothing else: no table privileges at
//!   all. Those functions are SECURITY DEFINER, search_path pinned to `pg_catalog, pg_temp`,
//!   and owned by `personalize_definer`: a NOLOGIN role with DML on the extension's tables and
//!   EXECUTE on its functions, nothing else (not the superuser who ran CREATE EXTENSION). So an
//!   app role can track an event without being able to read the event log, or claim messages
//!   without being able to rewrite them, and no app call ever runs with superuser rights.
//! - `personalize_admin` gets every function (they run with its own rights) and DML on every
//!   table: plans, catalogue, training, segments, campaigns, experiments, imports. Loaders stay
//!   SECURITY INVOKER on purpose: `import_events(source regclass)` reads a table the caller
//!   names, which must be one the caller may read.
//! - PUBLIC gets nothing: EXECUTE is revoked from every function in the schema.

use pgrx::prelude::*;

use crate::error::{spi_failed, PersonalizeError};

/// The reader's functions: per-user explanations and segment checks, and every segment
/// predicate (`core::segments::PREDICATES`: each is also a SQL function of that name).
const READER_FUNCTIONS: [&str; 11] = concat_names(
    ["explain_recommendation", "in_segment", "user_segments"],
    crate::core::segments::PREDICATES,
);

/// `a` followed by `b`, as one array (checked at compile time to be of length A + B).
const fn concat_names<const A: usize, const B: usize, const C: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; C] {
    assert!(A + B == C, "the lengths must add up");
    let mut out = [""; C];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < B {
        out[A + j] = b[j];
        j += 1;
    }
    out
}

/// Each role, what it is for, and the functions it may execute (all their overloads).
pub const ROLES: [(&str, &str, &[&str]); 4] = [
    (
        "personalize_recommender",
        "serving without per-user history: recommendations, variants and exposures",
        &[
            "recommend",
            "recommend_for_session",
            "similar_items",
            "rank_items",
            "assign_variant",
            "variant_model",
            "log_exposure",
        ],
    ),
    (
        "personalize_reader",
        "serving and what it can tell of one user: explanations, segment checks, predicates",
        &READER_FUNCTIONS,
    ),
    (
        "personalize_writer",
        "tracking: events through the tracking plan, identify() at login, consent choices and \
         unsubscribe links",
        &[
            "track",
            "track_batch",
            "validate_event",
            "identify",
            "set_consent",
            "unsubscribe",
        ],
    ),
    (
        "personalize_worker",
        "outbox workers: claim, acknowledge and fail messages, sign unsubscribe links and \
         apply them (the worker's own unsubscribe page), suppress addresses that bounce",
        &[
            "claim_messages",
            "ack",
            "ack_batch",
            "fail",
            "cancel_message",
            "release_message",
            "unsubscribe_token",
            "unsubscribe",
            "suppress",
            "recipient_address",
            "recipient_addresses",
        ],
    ),
];

/// Trigger functions that sync_catalogue() and sync_events() put on a shop's tables: they run
/// as `personalize_definer`, so the shop's roles that write those tables need no rights on the
/// extension (the triggers only map the written rows into the catalogue or `track_batch`).
const DEFINER_TRIGGERS: [&str; 2] = ["_sync_items_trigger", "_sync_events_trigger"];

/// (member, role): the reader may do all the recommender does.
const MEMBERSHIPS: [(&str, &str); 1] = [("personalize_reader", "personalize_recommender")];

/// Owns the SECURITY DEFINER functions: what they run as.
pub const DEFINER_ROLE: &str = "personalize_definer";

pub const ADMIN_ROLE: &str = "personalize_admin";

/// The statements, in order. Role names and function names are constants of this file; the
/// function signatures come from the catalogue as `regprocedure` text, already quoted.
fn statements() -> Vec<String> {
    let mut sql = Vec::new();
    for role in ROLES.iter().map(|r| r.0).chain([ADMIN_ROLE, DEFINER_ROLE]) {
        // Roles are cluster-wide and outlive DROP EXTENSION; a second database (or a
        // re-install) reuses them with whatever members the DBA gave them.
        sql.push(format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') \
             THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
        ));
        sql.push(format!("GRANT USAGE ON SCHEMA personalize TO {role}"));
    }
    sql.push("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA personalize FROM PUBLIC".into());
    sql.push(format!(
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA personalize TO {ADMIN_ROLE}"
    ));
    sql.push(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA personalize \
         TO {ADMIN_ROLE}"
    ));
    sql.push(format!(
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA personalize TO {ADMIN_ROLE}"
    ));
    for (role, _, _) in ROLES {
        sql.push(format!("GRANT {role} TO {ADMIN_ROLE}"));
    }
    for (member, role) in MEMBERSHIPS {
        sql.push(format!("GRANT {role} TO {member}"));
    }
    // What the SECURITY DEFINER functions may do: read and write the extension's rows and
    // call its functions. No TRUNCATE, no DDL, no other schema's tables.
    sql.push(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA personalize \
         TO {DEFINER_ROLE}"
    ));
    sql.push(format!(
        "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA personalize TO {DEFINER_ROLE}"
    ));
    sql.push(format!(
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA personalize TO {DEFINER_ROLE}"
    ));
    sql
}

/// Functions of the schema named `name` (every overload), as quoted, schema-qualified signatures
/// (`regprocedure` qualifies them: `personalize` is not on the pinned search_path).
fn signatures(client: &pgrx::spi::SpiClient<'_>, name: &str) -> Vec<String> {
    let args = [name.into()];
    let rows = client
        .select(
            "SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text FROM pg_catalog.pg_proc p \
             WHERE p.pronamespace = 'personalize'::pg_catalog.regnamespace AND p.proname = $1 \
             ORDER BY 1",
            None,
            &args,
        )
        .unwrap_or_else(|e| spi_failed("reading the extension's functions", e));
    rows.filter_map(|r| r.get::<String>(1).ok().flatten())
        .collect()
}

/// Creates the roles if missing and applies every grant; run by the extension's scripts.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _apply_privileges() {
    Spi::connect_mut(|client| {
        // ALTER EXTENSION … UPDATE from an old version runs each step's script (each ends
        // by calling this) with this library, and records the step's version first: a step
        // before this library's version may lack functions added later.
        let final_step = client
            .select(
                "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_personalize'",
                None,
                &[],
            )
            .ok()
            .and_then(|t| t.first().get::<String>(1).ok().flatten())
            .is_none_or(|v| v == env!("CARGO_PKG_VERSION"));
        for statement in statements() {
            client
                .update(&statement, None, &[])
                .unwrap_or_else(|e| spi_failed("applying the extension's privileges", e));
        }
        for (role, _, functions) in ROLES {
            for function in functions {
                let found = signatures(client, function);
                // A renamed function must fail the install, not silently lose its grant.
                if found.is_empty() && !final_step {
                    continue;
                }
                if found.is_empty() {
                    PersonalizeError::NotReady {
                        message: format!(
                            "the privileges of {role} name {function}, which is not defined"
                        ),
                        hint: "The extension's build is inconsistent; reinstall it.".into(),
                    }
                    .raise();
                }
                for signature in found {
                    // The any-type id forms (sql/any_ids.sql) stay SECURITY INVOKER: they cast
                    // the caller's value to text, and a cast the caller defined for its own
                    // type must run with the caller's rights, not the definer's. They only call
                    // the text form, which is SECURITY DEFINER.
                    let polymorphic =
                        signature.contains("anyelement") || signature.contains("anycompatible");
                    for statement in [
                        format!("ALTER FUNCTION {signature} SECURITY DEFINER"),
                        format!("ALTER FUNCTION {signature} OWNER TO {DEFINER_ROLE}"),
                    ] {
                        if polymorphic {
                            break;
                        }
                        client
                            .update(&statement, None, &[])
                            .unwrap_or_else(|e| spi_failed("making a function run as its role", e));
                    }
                    client
                        .update(
                            &format!("GRANT EXECUTE ON FUNCTION {signature} TO {role}"),
                            None,
                            &[],
                        )
                        .unwrap_or_else(|e| spi_failed("granting a function", e));
                }
            }
        }
        for function in DEFINER_TRIGGERS {
            let found = signatures(client, function);
            if found.is_empty() && final_step {
                PersonalizeError::NotReady {
                    message: format!("the sync trigger function {function} is not defined"),
                    hint: "The extension's build is inconsistent; reinstall it.".into(),
                }
                .raise();
            }
            for signature in found {
                for statement in [
                    format!("ALTER FUNCTION {signature} SECURITY DEFINER"),
                    format!("ALTER FUNCTION {signature} OWNER TO {DEFINER_ROLE}"),
                ] {
                    client
                        .update(&statement, None, &[])
                        .unwrap_or_else(|e| spi_failed("giving a trigger function to its role", e));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Functions two roles need, on purpose: `unsubscribe()` serves the shop's own
    /// unsubscribe endpoint (the writer) and the worker's unsubscribe page.
    const SHARED_FUNCTIONS: [&str; 1] = ["unsubscribe"];

    #[test]
    fn no_function_is_in_two_roles() {
        let mut seen = std::collections::HashSet::new();
        for (_, _, functions) in ROLES {
            for f in functions {
                assert!(
                    seen.insert(*f) || SHARED_FUNCTIONS.contains(f),
                    "{f} is listed twice"
                );
            }
        }
        for f in SHARED_FUNCTIONS {
            let roles = ROLES.iter().filter(|r| r.2.contains(&f)).count();
            assert!(
                roles == 2,
                "{f} is in SHARED_FUNCTIONS but in {roles} roles"
            );
        }
    }

    #[test]
    fn every_role_is_created_before_its_grants() {
        let sql = statements();
        for (role, _, _) in ROLES {
            let created = sql
                .iter()
                .position(|s| s.contains(&format!("CREATE ROLE {role}")));
            let granted = sql
                .iter()
                .position(|s| s == &format!("GRANT {role} TO {ADMIN_ROLE}"));
            assert!(created.unwrap() < granted.unwrap());
        }
        let definer = sql
            .iter()
            .position(|s| s.contains(&format!("CREATE ROLE {DEFINER_ROLE}")));
        let granted = sql.iter().position(|s| s.ends_with(DEFINER_ROLE));
        assert!(definer.unwrap() < granted.unwrap());
    }

    #[test]
    fn the_recommender_serves_without_history() {
        let recommender = ROLES.iter().find(|r| r.0 == "personalize_recommender");
        let functions = recommender.unwrap().2;
        for history in [
            "explain_recommendation",
            "bought",
            "user_segments",
            "last_seen",
        ] {
            assert!(!functions.contains(&history), "{history}");
        }
    }
}
