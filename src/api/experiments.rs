//! A/B experiments: assignment, exposure logging, the model a variant serves with, the report.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::core::experiments::{assign, parse_variants, report, Variant, VariantTotals};
use crate::error::{required, spi_failed, PersonalizeError};
use crate::pg::experiment_cache::{self, Experiment};

/// A user id or placement: not NULL, 1 to the tracking plan's id limit characters.
fn checked_text<'a>(value: Option<&'a str>, name: &str) -> &'a str {
    let v = required(value, name);
    let max = crate::gucs::limits().max_id_chars;
    if v.is_empty() || v.chars().count() > max {
        PersonalizeError::invalid(
            format!("{name} must be 1 to {max} characters long"),
            format!("Pass the same {name} the app sends with its events."),
        )
        .raise()
    }
    v
}

/// The variant for a user: by hash while the experiment runs, the control before and after.
fn variant_for<'e>(experiment: &'e Experiment, user_id: &str) -> &'e Variant {
    if experiment.running() {
        assign(&experiment.variants, &experiment.salt, user_id)
    } else {
        experiment.control()
    }
}

#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn assign_variant(experiment: Option<&str>, user_id: Option<&str>) -> String {
    let e = experiment_cache::experiment(required(experiment, "experiment"));
    let user_id = checked_text(user_id, "user_id");
    variant_for(&e, user_id).name.clone()
}

#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn variant_model(experiment: Option<&str>, user_id: Option<&str>) -> String {
    let e = experiment_cache::experiment(required(experiment, "experiment"));
    let user_id = checked_text(user_id, "user_id");
    variant_for(&e, user_id)
        .model
        .clone()
        .unwrap_or_else(|| "default".into())
}

#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn log_exposure(
    experiment: Option<&str>,
    user_id: Option<&str>,
    placement: default!(Option<&str>, "NULL"),
) -> String {
    crate::pg::require_writable(c"log_exposure()");
    let e = experiment_cache::experiment(required(experiment, "experiment"));
    let user_id = checked_text(user_id, "user_id");
    if let Some(p) = placement {
        checked_text(Some(p), "placement");
    }
    if !e.running() {
        // Nothing to measure outside the window: the control is shown and nothing is logged.
        return e.control().name.clone();
    }
    let variant = assign(&e.variants, &e.salt, user_id);
    experiment_cache::insert_exposure(&e.name, user_id, &variant.name, placement);
    variant.name.clone()
}

/// Why a variants array is refused (with its JSON path), NULL when it is valid.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn _variants_problem(variants: Option<&str>) -> Option<String> {
    parse_variants(variants?).err()
}

#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn _invalidate_experiment_cache() {
    experiment_cache::invalidate();
}

/// Per user: variant (of the first exposure), exposures, and clicks, conversions and revenue
/// inside the attribution window after the first exposure; then summed per variant.
const REPORT_TOTALS: &str = "
WITH x AS (
    SELECT x.name, x.attribution_window, x.click_event_types, x.conversion_event_types
      FROM personalize.experiments x WHERE x.name = $1
), exposed AS (
    SELECT e.user_id, min(e.variant) AS variant, min(e.exposed_at) AS first_at, count(*) AS exposures
      FROM personalize.exposures e WHERE e.experiment = $1 GROUP BY e.user_id
), per_user AS (
    SELECT u.user_id, u.variant, u.exposures,
           count(ev.event_id) FILTER (WHERE ev.event_type = ANY (x.click_event_types)
                                        AND ev.properties ->> 'experiment' = x.name) AS clicks,
           count(ev.event_id) FILTER (WHERE ev.event_type = ANY (x.conversion_event_types)) AS conversions,
           CAST(COALESCE(sum(personalize._event_value(ev.properties, i.price))
                    FILTER (WHERE ev.event_type = ANY (x.conversion_event_types) AND t.is_purchase), 0)
                AS float8) AS revenue
      FROM exposed u CROSS JOIN x
      LEFT JOIN personalize.events ev
             ON ev.user_id = u.user_id
            AND ev.occurred_at >= u.first_at
            AND ev.occurred_at < u.first_at + x.attribution_window
            AND ev.event_type = ANY (x.click_event_types || x.conversion_event_types)
      LEFT JOIN personalize.event_types t ON t.event_type = ev.event_type
      LEFT JOIN personalize.items i ON i.item_id = ev.item_id
     GROUP BY u.user_id, u.variant, u.exposures
)
SELECT variant, count(*), CAST(sum(exposures) AS int8), CAST(sum(clicks) AS int8),
       count(*) FILTER (WHERE conversions > 0), CAST(sum(conversions) AS int8),
       sum(revenue), sum(revenue * revenue)
  FROM per_user GROUP BY variant";

#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn experiment_report(
    experiment: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(variant, String),
        name!(is_control, bool),
        name!(weight, i64),
        name!(users, i64),
        name!(exposures, i64),
        name!(clicks, i64),
        name!(ctr, Option<f64>),
        name!(converters, i64),
        name!(conversions, i64),
        name!(conversion_rate, Option<f64>),
        name!(revenue, f64),
        name!(revenue_per_user, Option<f64>),
        name!(lift, Option<f64>),
        name!(diff_ci_low, Option<f64>),
        name!(diff_ci_high, Option<f64>),
        name!(p_value, Option<f64>),
        name!(revenue_p_value, Option<f64>),
        name!(expected_share, f64),
        name!(srm_p_value, Option<f64>),
        name!(sample_ratio_mismatch, bool),
    ),
> {
    let e = experiment_cache::experiment(required(experiment, "experiment"));
    let mut totals = vec![VariantTotals::default(); e.variants.len()];
    Spi::connect(|client| {
        let args: [DatumWithOid; 1] = [e.name.as_str().into()];
        let rows = client
            .select(REPORT_TOTALS, None, &args)
            .unwrap_or_else(|err| spi_failed("cannot read the experiment's exposures", err));
        for row in rows {
            let variant: String = row.get(1).ok().flatten().unwrap_or_default();
            // Exposures can only name the configured variants (they are fixed once anyone
            // was exposed); anything else is ignored rather than misattributed.
            let Some(i) = e.variants.iter().position(|v| v.name == variant) else {
                continue;
            };
            let int = |n: usize| row.get::<i64>(n).ok().flatten().unwrap_or(0);
            let float = |n: usize| row.get::<f64>(n).ok().flatten().unwrap_or(0.0);
            totals[i] = VariantTotals {
                users: int(2),
                exposures: int(3),
                clicks: int(4),
                converters: int(5),
                conversions: int(6),
                revenue: float(7),
                revenue_squares: float(8),
            };
        }
    });
    let r = report(&e.variants, &totals, e.confidence_level);
    let srm_p = r.srm_p_value;
    let srm = r.sample_ratio_mismatch;
    let rows: Vec<_> = e
        .variants
        .iter()
        .zip(r.rows)
        .enumerate()
        .map(|(i, (v, row))| {
            (
                v.name.clone(),
                i == 0,
                v.weight as i64,
                row.totals.users,
                row.totals.exposures,
                row.totals.clicks,
                row.ctr,
                row.totals.converters,
                row.totals.conversions,
                row.conversion_rate,
                row.totals.revenue,
                row.revenue_per_user,
                row.lift,
                row.diff_ci.map(|c| c.0),
                row.diff_ci.map(|c| c.1),
                row.p_value,
                row.revenue_p_value,
                row.expected_share,
                srm_p,
                srm,
            )
        })
        .collect();
    TableIterator::new(rows)
}
