//! Conformance with the field's reference implementation: the R package
//! `surveillance` (1.20.3, Debian's `r-cran-surveillance`). The fixtures in
//! `tests/fixtures/surveillance/` were written by `generate.R` there, which
//! calls `earsC`, `algo.cusum` and `findK` on five count series; every
//! figure they hold must come out of vitalmesh's detectors.

use std::collections::BTreeMap;

use vitalmesh_core::detect::{Detector, Method, MethodConfig, Observation, Step};

const SERIES: &str = include_str!("fixtures/surveillance/series.csv");
const EARS: &str = include_str!("fixtures/surveillance/ears.csv");
const CUSUM: &str = include_str!("fixtures/surveillance/cusum.csv");

/// Rows of a CSV file as maps from column name to text.
fn rows(text: &str) -> Vec<BTreeMap<&str, &str>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| header.iter().copied().zip(l.split(',')).collect())
        .collect()
}

fn num(row: &BTreeMap<&str, &str>, col: &str) -> f64 {
    row[col]
        .parse()
        .unwrap_or_else(|_| panic!("{col} = '{}' in {row:?}", row[col]))
}

fn series() -> BTreeMap<String, Vec<Observation>> {
    let mut out: BTreeMap<String, Vec<Observation>> = BTreeMap::new();
    for r in rows(SERIES) {
        out.entry(r["series"].to_owned())
            .or_default()
            .push(Observation::count(num(&r, "count")));
    }
    out
}

fn config(method: Method, params: &[(&str, String)]) -> MethodConfig {
    let mut c = MethodConfig::new(method);
    for (k, v) in params {
        c.set(k, v).unwrap_or_else(|e| panic!("{method} {k}: {e}"));
    }
    c
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + b.abs())
}

/// Fixture rows grouped by the columns that identify one R call.
fn groups<'a>(
    rows: &'a [BTreeMap<&'a str, &'a str>],
    key: &[&str],
) -> BTreeMap<Vec<&'a str>, Vec<&'a BTreeMap<&'a str, &'a str>>> {
    let mut out: BTreeMap<Vec<&str>, Vec<_>> = BTreeMap::new();
    for r in rows {
        out.entry(key.iter().map(|k| r[k]).collect())
            .or_default()
            .push(r);
    }
    out
}

#[test]
fn ears_c1_and_c2_match_earsc_bucket_for_bucket() {
    let all = series();
    let ears = rows(EARS);
    let mut compared = 0;
    for (key, group) in groups(&ears, &["series", "method", "min_sigma", "alpha"]) {
        let method = Method::parse(key[1]).unwrap();
        if method == Method::C3 {
            continue;
        }
        let c = config(
            method,
            &[("min_sigma", key[2].into()), ("alpha", key[3].into())],
        );
        let steps = Detector::run(c, &all[key[0]]);
        let first = num(group[0], "index") as usize;
        assert_eq!(first, c.warm_up(), "{key:?}: R's first monitored bucket");
        assert!(
            steps[..first]
                .iter()
                .all(|s| s.statistic.is_none() && !s.alarm)
        );
        for r in group {
            let i = num(r, "index") as usize;
            let (mean, sd, y) = (num(r, "mean"), num(r, "sd"), num(r, "count"));
            let s = steps[i];
            assert!(close(s.expected.unwrap(), mean), "{key:?} [{i}] mean");
            if sd > 0.0 {
                assert!(
                    close(s.statistic.unwrap(), (y - mean) / sd),
                    "{key:?} [{i}]"
                );
                let bound = mean + s.threshold.unwrap() * sd;
                assert!(close(bound, num(r, "upperbound")), "{key:?} [{i}] bound");
            }
            assert_eq!(s.alarm, r["alarm"] == "1", "{key:?} [{i}] alarm");
            compared += 1;
        }
    }
    assert!(compared > 700, "{compared} buckets compared");
}

/// R's C3 bound as `earsC` 1.20.3 computes it, from vitalmesh's C2 series:
/// `max(0, y + max(sd, σmin)·(z − Σ_{i=1,2} max(0, C2_{t−i} − 1)))`.
fn r_c3_bound(y: f64, sd: f64, z: f64, lag2: f64, lag1: f64) -> f64 {
    (y + sd * (z - ((lag2 - 1.0).max(0.0) + (lag1 - 1.0).max(0.0)))).max(0.0)
}

#[test]
fn ears_c3_builds_on_the_same_c2_as_earsc_and_adds_the_current_bucket() {
    let all = series();
    let ears = rows(EARS);
    let mut differ = 0;
    let mut compared = 0;
    for (key, group) in groups(&ears, &["series", "method", "min_sigma", "alpha"]) {
        if key[1] != "c3" {
            continue;
        }
        let obs = &all[key[0]];
        let c2_config = config(Method::C2, &[("min_sigma", key[2].into())]);
        let c2: Vec<Step> = Detector::run(c2_config, obs);
        let c3_config = config(
            Method::C3,
            &[("min_sigma", key[2].into()), ("alpha", key[3].into())],
        );
        let c3 = Detector::run(c3_config, obs);
        let z = c3_config.threshold;
        assert_eq!(num(group[0], "index") as usize, c3_config.warm_up());
        for r in group {
            let i = num(r, "index") as usize;
            let y = num(r, "count");
            let (lag2, lag1, now) = (
                c2[i - 2].statistic.unwrap(),
                c2[i - 1].statistic.unwrap(),
                c2[i].statistic.unwrap(),
            );
            let sd = (y - c2[i].expected.unwrap()) / now;
            let sd = if now == 0.0 { f64::NAN } else { sd };
            if sd.is_finite() {
                let bound = r_c3_bound(y, sd, z, lag2, lag1);
                assert!(close(bound, num(r, "upperbound")), "{key:?} [{i}] R bound");
                assert_eq!(y > bound, r["alarm"] == "1", "{key:?} [{i}] R alarm");
            }
            // vitalmesh's C3 is the published sum, including this bucket.
            let published = [lag2, lag1, now]
                .iter()
                .map(|c| (c - 1.0).max(0.0))
                .sum::<f64>();
            assert!(close(c3[i].statistic.unwrap(), published));
            assert_eq!(c3[i].alarm, published > z);
            differ += usize::from(c3[i].alarm != (r["alarm"] == "1"));
            compared += 1;
        }
    }
    assert!(compared > 150, "{compared}");
    // The two definitions do disagree on these series (DETECTION.md).
    assert!(differ > 0);
}

#[test]
fn cusum_matches_algo_cusum_standard_and_poisson() {
    let all = series();
    let cusum = rows(CUSUM);
    let mut compared = 0;
    for (key, group) in groups(&cusum, &["series", "variant", "k", "h"]) {
        let obs = &all[key[0]];
        let c = match key[1] {
            // m = the mean of the 7 buckets before the range, z = (x − m)/√m,
            // no restart after an alarm.
            "standard" => config(
                Method::Cusum,
                &[
                    ("window", "fixed".into()),
                    ("baseline", "7".into()),
                    ("scale", "poisson".into()),
                    ("min_sigma", "0".into()),
                    ("k", key[2].into()),
                    ("h", key[3].into()),
                    ("reset", "false".into()),
                ],
            ),
            "poisson" => {
                let c = config(
                    Method::PoissonCusum,
                    &[
                        ("lambda0", group[0]["lambda0"].into()),
                        ("lambda1", group[0]["lambda1"].into()),
                        ("h", key[3].into()),
                        ("reset", "false".into()),
                    ],
                );
                // R's findK agrees with the reference value used here.
                let (l0, l1) = (num(group[0], "lambda0"), num(group[0], "lambda1"));
                assert!(close((l1 - l0) / (l1.ln() - l0.ln()), num(group[0], "k")));
                c
            }
            other => panic!("unknown variant {other}"),
        };
        // R monitors from the 8th bucket on; a Poisson CUSUM with a fixed λ₀
        // could start at once, so it is fed from there too.
        let first = num(group[0], "index") as usize;
        let steps = Detector::run(c, &obs[first - c.warm_up()..]);
        let offset = first - c.warm_up();
        for r in group {
            let i = num(r, "index") as usize;
            let s = steps[i - offset];
            if key[1] == "standard" {
                assert!(close(s.expected.unwrap(), num(r, "m")));
            }
            assert!(
                close(s.statistic.unwrap(), num(r, "cusum")),
                "{key:?} [{i}]: {:?} vs {}",
                s.statistic,
                r["cusum"]
            );
            assert_eq!(s.alarm, r["alarm"] == "1", "{key:?} [{i}] alarm");
            compared += 1;
        }
    }
    assert!(compared > 700, "{compared}");
}
