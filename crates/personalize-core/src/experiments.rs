//! A/B experiments: deterministic variant assignment and the statistics of a report.
//!
//! Assignment is a pure function of (salt, user id, variants): the first 8 bytes of
//! SHA-256(salt ":" user_id), read big-endian as a u64, scaled into [0, total weight) and
//! looked up in the cumulative weights. Nothing depends on the server, the session or the
//! platform, so a standby, another database or the app itself (any language with SHA-256)
//! computes the same variant. Postgres can too, which the regression test uses as a check:
//! `('x' || left(encode(sha256(convert_to(salt || ':' || user_id, 'UTF8')), 'hex'), 16))::bit(64)`.
//!
//! Report statistics: conversion rate (converting users / exposed users) per variant compared
//! with the control by a two-sided two-proportion z-test (pooled standard error for the
//! p-value, unpooled for the confidence interval of the difference); revenue per user by
//! Welch's t-test; the sample-ratio-mismatch check is a chi-square goodness-of-fit test of
//! users per variant against the weights.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// At most this many variants per experiment.
pub const MAX_VARIANTS: usize = 20;
/// Weights are integers 1..=MAX_WEIGHT (50/50, 90/10, 1/1/1 ...).
pub const MAX_WEIGHT: u64 = 1_000_000;
/// Below this p-value users per variant are declared off their weights (the usual SRM alarm).
pub const SRM_THRESHOLD: f64 = 0.001;

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub weight: u64,
    /// The model name serving should use for this variant (None: the default model).
    pub model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantSpec {
    name: String,
    weight: serde_json::Value,
    #[serde(default)]
    model: Option<String>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Parses and checks a variants array; the error names the JSON path of the first problem.
/// The first variant is the control.
pub fn parse_variants(text: &str) -> Result<Vec<Variant>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("$: not JSON: {e}"))?;
    let serde_json::Value::Array(items) = value else {
        return Err("$: must be an array of {\"name\", \"weight\"[, \"model\"]} objects".into());
    };
    if items.len() < 2 {
        return Err(format!(
            "$: an experiment needs at least 2 variants, got {}",
            items.len()
        ));
    }
    if items.len() > MAX_VARIANTS {
        return Err(format!(
            "$: at most {MAX_VARIANTS} variants, got {}",
            items.len()
        ));
    }
    let mut out: Vec<Variant> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let spec: VariantSpec = serde_json::from_value(item)
            .map_err(|e| format!("$[{i}]: {e} (keys: name, weight, model)"))?;
        if !is_name(&spec.name) {
            return Err(format!(
                "$[{i}].name: \"{}\" is not a variant name (1 to 63 letters, digits, _ . or -)",
                spec.name
            ));
        }
        if out.iter().any(|v| v.name == spec.name) {
            return Err(format!(
                "$[{i}].name: \"{}\" is used twice; variant names must be unique",
                spec.name
            ));
        }
        let weight = spec
            .weight
            .as_u64()
            .filter(|w| (1..=MAX_WEIGHT).contains(w))
            .ok_or_else(|| {
                format!(
                    "$[{i}].weight: {} is not a whole number from 1 to {MAX_WEIGHT}",
                    spec.weight
                )
            })?;
        if let Some(m) = &spec.model {
            if !is_name(m) {
                return Err(format!(
                    "$[{i}].model: \"{m}\" is not a model name (1 to 63 letters, digits, _ . or -)"
                ));
            }
        }
        out.push(Variant {
            name: spec.name,
            weight,
            model: spec.model,
        });
    }
    Ok(out)
}

/// The user's position in [0, 2^64): the first 8 bytes of SHA-256(salt ":" user_id).
pub fn bucket(salt: &str, user_id: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(user_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The variant a user gets: the bucket scaled into [0, total weight) (exactly, in 128-bit
/// arithmetic), then the first variant whose cumulative weight exceeds it.
pub fn assign<'a>(variants: &'a [Variant], salt: &str, user_id: &str) -> &'a Variant {
    let total: u64 = variants.iter().map(|v| v.weight).sum();
    let point = ((u128::from(bucket(salt, user_id)) * u128::from(total)) >> 64) as u64;
    let mut cumulative = 0u64;
    for v in variants {
        cumulative += v.weight;
        if point < cumulative {
            return v;
        }
    }
    variants.last().expect("parse_variants keeps at least 2")
}

/// What the report's query counts for one variant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariantTotals {
    /// Users exposed at least once.
    pub users: i64,
    pub exposures: i64,
    pub clicks: i64,
    /// Users with at least one conversion inside the attribution window.
    pub converters: i64,
    pub conversions: i64,
    /// Sum over users of their attributed revenue, and of its square (for the variance).
    pub revenue: f64,
    pub revenue_squares: f64,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantReport {
    pub totals: VariantTotals,
    pub expected_share: f64,
    pub ctr: Option<f64>,
    pub conversion_rate: Option<f64>,
    pub revenue_per_user: Option<f64>,
    /// Relative difference of the conversion rate against the control (None for the control).
    pub lift: Option<f64>,
    /// Confidence interval of the absolute difference of conversion rates.
    pub diff_ci: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    pub revenue_p_value: Option<f64>,
}

/// The whole report: one row per variant (control first) and the sample-ratio check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<VariantReport>,
    pub srm_p_value: Option<f64>,
    pub sample_ratio_mismatch: bool,
}

fn ratio(num: f64, den: i64) -> Option<f64> {
    (den > 0).then(|| num / den as f64)
}

fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("a standard normal")
}

/// Two-sided p-value and confidence interval of p_v - p_c for converters x out of n users.
pub fn two_proportion_test(
    x_c: i64,
    n_c: i64,
    x_v: i64,
    n_v: i64,
    confidence: f64,
) -> Option<(f64, (f64, f64))> {
    if n_c <= 0 || n_v <= 0 {
        return None;
    }
    let (nc, nv) = (n_c as f64, n_v as f64);
    let (pc, pv) = (x_c as f64 / nc, x_v as f64 / nv);
    let diff = pv - pc;
    let normal = standard_normal();
    let z_crit = normal.inverse_cdf(0.5 + confidence / 2.0);
    let se_unpooled = (pc * (1.0 - pc) / nc + pv * (1.0 - pv) / nv).sqrt();
    let ci = (diff - z_crit * se_unpooled, diff + z_crit * se_unpooled);
    let pooled = (x_c + x_v) as f64 / (nc + nv);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nv)).sqrt();
    let p = if se_pooled > 0.0 {
        2.0 * normal.sf((diff / se_pooled).abs())
    } else {
        1.0 // both rates 0, or both 1: no evidence of a difference
    };
    Some((p.min(1.0), ci))
}

/// Welch's two-sided t-test of the difference of means, from sums and sums of squares.
pub fn welch_test(sum_c: f64, sq_c: f64, n_c: i64, sum_v: f64, sq_v: f64, n_v: i64) -> Option<f64> {
    if n_c < 2 || n_v < 2 {
        return None;
    }
    let (nc, nv) = (n_c as f64, n_v as f64);
    let (mc, mv) = (sum_c / nc, sum_v / nv);
    // Sample variances; clamped at 0 against rounding in sq - n m^2.
    let var_c = ((sq_c - nc * mc * mc) / (nc - 1.0)).max(0.0);
    let var_v = ((sq_v - nv * mv * mv) / (nv - 1.0)).max(0.0);
    let (a, b) = (var_c / nc, var_v / nv);
    let se = (a + b).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return Some(if (mv - mc).abs() > 0.0 { 0.0 } else { 1.0 });
    }
    let t = (mv - mc) / se;
    let df = (a + b).powi(2) / (a * a / (nc - 1.0) + b * b / (nv - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some((2.0 * dist.sf(t.abs())).min(1.0))
}

/// Chi-square goodness of fit of observed users per variant against the weights.
pub fn sample_ratio_p_value(observed: &[i64], weights: &[u64]) -> Option<f64> {
    let n: i64 = observed.iter().sum();
    let total_weight: u64 = weights.iter().sum();
    if n <= 0 || observed.len() != weights.len() || observed.len() < 2 || total_weight == 0 {
        return None;
    }
    let statistic: f64 = observed
        .iter()
        .zip(weights)
        .map(|(&o, &w)| {
            let expected = n as f64 * w as f64 / total_weight as f64;
            (o as f64 - expected).powi(2) / expected
        })
        .sum();
    let dist = ChiSquared::new((observed.len() - 1) as f64).ok()?;
    Some(dist.sf(statistic))
}

/// The report from the per-variant totals (same order as `variants`; the first is the control).
pub fn report(variants: &[Variant], totals: &[VariantTotals], confidence: f64) -> Report {
    let total_weight: u64 = variants.iter().map(|v| v.weight).sum();
    let control = &totals[0];
    let control_rate = ratio(control.converters as f64, control.users);
    let rows = variants
        .iter()
        .zip(totals)
        .enumerate()
        .map(|(i, (v, t))| {
            let conversion_rate = ratio(t.converters as f64, t.users);
            let (lift, diff_ci, p_value, revenue_p_value) = if i == 0 {
                (None, None, None, None)
            } else {
                let test = two_proportion_test(
                    control.converters,
                    control.users,
                    t.converters,
                    t.users,
                    confidence,
                );
                let lift = match (conversion_rate, control_rate) {
                    (Some(r), Some(c)) if c > 0.0 => Some(r / c - 1.0),
                    _ => None,
                };
                (
                    lift,
                    test.map(|(_, ci)| ci),
                    test.map(|(p, _)| p),
                    welch_test(
                        control.revenue,
                        control.revenue_squares,
                        control.users,
                        t.revenue,
                        t.revenue_squares,
                        t.users,
                    ),
                )
            };
            VariantReport {
                totals: t.clone(),
                expected_share: v.weight as f64 / total_weight as f64,
                ctr: ratio(t.clicks as f64, t.exposures),
                conversion_rate,
                revenue_per_user: ratio(t.revenue, t.users),
                lift,
                diff_ci,
                p_value,
                revenue_p_value,
            }
        })
        .collect();
    let observed: Vec<i64> = totals.iter().map(|t| t.users).collect();
    let weights: Vec<u64> = variants.iter().map(|v| v.weight).collect();
    let srm_p_value = sample_ratio_p_value(&observed, &weights);
    Report {
        rows,
        srm_p_value,
        sample_ratio_mismatch: srm_p_value.is_some_and(|p| p < SRM_THRESHOLD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two(a: u64, b: u64) -> Vec<Variant> {
        parse_variants(&format!(
            r#"[{{"name":"control","weight":{a}}},{{"name":"treatment","weight":{b},"model":"bpr"}}]"#
        ))
        .unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn parses_and_refuses_variants_with_paths() {
        let v = two(90, 10);
        assert_eq!(v[0].weight, 90);
        assert_eq!(v[1].model.as_deref(), Some("bpr"));
        for (text, path) in [
            (r#"{}"#, "$:"),
            (r#"[{"name":"a","weight":1}]"#, "at least 2"),
            (
                r#"[{"name":"a","weight":1},{"name":"a","weight":1}]"#,
                "$[1].name",
            ),
            (
                r#"[{"name":"a","weight":0},{"name":"b","weight":1}]"#,
                "$[0].weight",
            ),
            (
                r#"[{"name":"a","weight":1.5},{"name":"b","weight":1}]"#,
                "$[0].weight",
            ),
            (
                r#"[{"name":"a","weight":-1},{"name":"b","weight":1}]"#,
                "$[0].weight",
            ),
            (
                r#"[{"name":"a b","weight":1},{"name":"b","weight":1}]"#,
                "$[0].name",
            ),
            (
                r#"[{"name":"a","weight":1,"colour":1},{"name":"b","weight":1}]"#,
                "$[0]",
            ),
            (
                r#"[{"name":"a","weight":1},{"name":"b","weight":1,"model":"x;y"}]"#,
                "$[1].model",
            ),
            (r#"[{"weight":1},{"name":"b","weight":1}]"#, "$[0]"),
        ] {
            let err = parse_variants(text).unwrap_err();
            assert!(err.contains(path), "{text}: {err}");
        }
    }

    #[test]
    fn bucket_is_sha256_prefix() {
        // The regress test cross-checks against Postgres's sha256() for thousands of users.
        let b = bucket("s", "u1");
        let mut h = Sha256::new();
        h.update(b"s:u1");
        let d = h.finalize();
        assert_eq!(b.to_be_bytes(), d[..8]);
    }

    #[test]
    fn assignment_is_stable_and_proportional() {
        let v = two(90, 10);
        let mut counts = [0i64; 2];
        for u in 0..100_000 {
            let user = format!("user{u}");
            let a = assign(&v, "salt", &user);
            assert_eq!(a, assign(&v, "salt", &user));
            counts[usize::from(a.name == "treatment")] += 1;
        }
        let p = sample_ratio_p_value(&counts, &[90, 10]).unwrap();
        assert!(p > 0.001, "{counts:?} p={p}");
        assert!(
            close(counts[1] as f64 / 100_000.0, 0.1, 0.005),
            "{counts:?}"
        );
        // Another salt reshuffles users.
        let moved = (0..1000)
            .filter(|u| {
                let user = format!("user{u}");
                assign(&v, "salt", &user) != assign(&v, "other", &user)
            })
            .count();
        assert!(moved > 100, "{moved}");
    }

    #[test]
    fn two_proportion_matches_hand_computation() {
        // 100/1000 vs 130/1000: pooled p = 0.115, se = sqrt(.115*.885*.002) = 0.0142671
        // z = 0.03 / 0.0142671 = 2.102741, p = erfc(z / sqrt 2) = 0.035488.
        let (p, (lo, hi)) = two_proportion_test(100, 1000, 130, 1000, 0.95).unwrap();
        assert!(close(p, 0.035_488, 1e-6), "{p}");
        // unpooled se = sqrt(.1*.9/1000 + .13*.87/1000) = 0.0142514; 1.959964 * se = 0.027932
        assert!(close(lo, 0.03 - 0.027_932, 1e-6), "{lo}");
        assert!(close(hi, 0.03 + 0.027_932, 1e-6), "{hi}");
        assert_eq!(two_proportion_test(0, 10, 0, 10, 0.95).unwrap().0, 1.0);
        assert!(two_proportion_test(0, 0, 1, 10, 0.95).is_none());
    }

    #[test]
    fn welch_matches_hand_computation() {
        // Control revenues 1,2,3,4 (mean 2.5, var 1.6667); variant 2,4,6,8 (mean 5, var 6.6667).
        // se = sqrt(1.6667/4 + 6.6667/4) = 1.443376; t = 1.732051;
        // df = (0.416667 + 1.666667)^2 / (0.416667^2/3 + 1.666667^2/3) = 4.411765
        // two-sided p (t, df 4.41) = 0.151581 (scipy.stats.ttest_ind_from_stats, equal_var=False)
        let p = welch_test(10.0, 30.0, 4, 20.0, 120.0, 4).unwrap();
        assert!(close(p, 0.151_581, 1e-6), "{p}");
        assert!(welch_test(1.0, 1.0, 1, 1.0, 1.0, 4).is_none());
        assert_eq!(welch_test(4.0, 4.0, 4, 4.0, 4.0, 4), Some(1.0));
    }

    #[test]
    fn sample_ratio_mismatch() {
        // 5000 vs 5000 on 50/50: statistic 0, p = 1.
        assert!(close(
            sample_ratio_p_value(&[5000, 5000], &[1, 1]).unwrap(),
            1.0,
            1e-12
        ));
        // 5200 vs 4800: statistic = 2 * 200^2 / 5000 = 16, p = 6.334e-5 (df 1).
        let p = sample_ratio_p_value(&[5200, 4800], &[1, 1]).unwrap();
        assert!(close(p, 6.334e-5, 1e-7), "{p}");
        // Three variants 1000/1000/1000 against weights 2/1/1: badly off.
        assert!(sample_ratio_p_value(&[1000, 1000, 1000], &[2, 1, 1]).unwrap() < 1e-10);
        assert!(sample_ratio_p_value(&[0, 0], &[1, 1]).is_none());
    }

    #[test]
    fn report_rows() {
        let v = two(1, 1);
        let totals = vec![
            VariantTotals {
                users: 1000,
                exposures: 2000,
                clicks: 100,
                converters: 100,
                conversions: 120,
                revenue: 1000.0,
                revenue_squares: 20_000.0,
            },
            VariantTotals {
                users: 1000,
                exposures: 2500,
                clicks: 250,
                converters: 130,
                conversions: 150,
                revenue: 1300.0,
                revenue_squares: 26_000.0,
            },
        ];
        let r = report(&v, &totals, 0.95);
        assert_eq!(r.rows[0].lift, None);
        assert_eq!(r.rows[0].p_value, None);
        assert!(close(r.rows[1].lift.unwrap(), 0.3, 1e-12));
        assert!(close(r.rows[1].ctr.unwrap(), 0.1, 1e-12));
        assert!(close(r.rows[1].conversion_rate.unwrap(), 0.13, 1e-12));
        assert!(close(r.rows[1].revenue_per_user.unwrap(), 1.3, 1e-12));
        assert!(close(r.rows[1].p_value.unwrap(), 0.035_488, 1e-6));
        assert!(close(r.rows[0].expected_share, 0.5, 1e-12));
        assert!(!r.sample_ratio_mismatch);
        assert!(close(r.srm_p_value.unwrap(), 1.0, 1e-12));
    }
}
