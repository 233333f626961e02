//! The population methods and their parameters, in one table.
//!
//! A method is named once here ([`Method`]) with its parameters
//! ([`Method::params`]) and defaults ([`MethodConfig::new`]); the scenario
//! file's `[[detection.ward]]` entries, `vitalmesh detect --param` and the
//! aggregators' ward detectors all build a [`MethodConfig`] through
//! [`MethodConfig::set`], so a parameter means the same thing everywhere
//! and is checked the same way. Adding a method is one variant, one row in
//! [`Method::params`] and one arm in [`crate::detect::Detector::new`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A population aberration-detection method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// CDC EARS C1-MILD: 7-bucket baseline, no guard band.
    C1,
    /// CDC EARS C2-MEDIUM: 7-bucket baseline after a 2-bucket guard band.
    C2,
    /// CDC EARS C3-ULTRA: the sum of the last three `max(0, C2 − 1)`.
    C3,
    /// One-sided CUSUM of standardised residuals.
    Cusum,
    /// One-sided Poisson CUSUM of counts (optionally with census offset).
    PoissonCusum,
    /// One-sided EWMA chart of standardised residuals.
    Ewma,
}

impl Method {
    /// Every method, in the order tables list them.
    pub const ALL: [Self; 6] = [
        Self::C1,
        Self::C2,
        Self::C3,
        Self::Cusum,
        Self::PoissonCusum,
        Self::Ewma,
    ];

    /// The name in files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::C1 => "c1",
            Self::C2 => "c2",
            Self::C3 => "c3",
            Self::Cusum => "cusum",
            Self::PoissonCusum => "poisson_cusum",
            Self::Ewma => "ewma",
        }
    }

    /// The method called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The names, quoted, for messages: `'c1', 'c2', … or 'ewma'`.
    pub fn names() -> String {
        quoted_list(&Self::ALL.map(Self::name))
    }

    /// The parameters this method takes.
    pub const fn params(self) -> &'static [Param] {
        use Param::*;
        match self {
            Self::C1 | Self::C2 | Self::C3 => &[Baseline, MinSigma, Alpha, Threshold, Measure],
            Self::Cusum => &[
                K, H, Baseline, Guard, Window, Scale, Mu0, Sigma, MinSigma, Reset, Measure,
            ],
            Self::PoissonCusum => &[
                Lambda0, Lambda1, Ratio, MinLambda, H, Baseline, Guard, Window, Reset, Measure,
            ],
            Self::Ewma => &[
                Lambda, L, Baseline, Guard, Window, Scale, Mu0, Sigma, MinSigma, Reset, Measure,
            ],
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `'a', 'b' or 'c'`.
pub(crate) fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// Buckets in the baseline window.
    Baseline,
    /// Buckets between the baseline and the current one.
    Guard,
    /// `moving` (the buckets just before the guard band) or `fixed` (the
    /// first `baseline` buckets of the series).
    Window,
    /// `sd` (the baseline's sample SD) or `poisson` (√mean).
    Scale,
    /// Floor on the SD, in counts (half a patient by default).
    MinSigma,
    /// One-sided false-alarm probability: threshold = z(1 − α).
    Alpha,
    /// The threshold itself (overrides `alpha`).
    Threshold,
    /// CUSUM reference value, in SD units.
    K,
    /// CUSUM decision interval.
    H,
    /// Fixed in-control mean (no baseline estimate).
    Mu0,
    /// Fixed in-control SD.
    Sigma,
    /// Whether the statistic restarts from zero after an alarm.
    Reset,
    /// `count` or `proportion` (count / census).
    Measure,
    /// Fixed in-control Poisson mean.
    Lambda0,
    /// Out-of-control Poisson mean to detect.
    Lambda1,
    /// λ₁ / λ₀ when λ₁ is not given.
    Ratio,
    /// Floor on λ₀ (a zero baseline has no logarithm).
    MinLambda,
    /// EWMA weight of the newest value.
    Lambda,
    /// EWMA limit width, in SDs of the statistic.
    L,
}

impl Param {
    /// The name in files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Guard => "guard",
            Self::Window => "window",
            Self::Scale => "scale",
            Self::MinSigma => "min_sigma",
            Self::Alpha => "alpha",
            Self::Threshold => "threshold",
            Self::K => "k",
            Self::H => "h",
            Self::Mu0 => "mu0",
            Self::Sigma => "sigma",
            Self::Reset => "reset",
            Self::Measure => "measure",
            Self::Lambda0 => "lambda0",
            Self::Lambda1 => "lambda1",
            Self::Ratio => "ratio",
            Self::MinLambda => "min_lambda",
            Self::Lambda => "lambda",
            Self::L => "l",
        }
    }
}

/// What a series value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// The count itself.
    Count,
    /// Count / census: a ward whose census halves does not look quiet.
    Proportion,
}

/// Which buckets form the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The `baseline` buckets before the guard band, moving with time.
    Moving,
    /// The first `baseline` buckets, then fixed (R `algo.cusum`'s training
    /// period).
    Fixed,
}

/// How the baseline's spread is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Sample standard deviation (n − 1).
    Sd,
    /// √mean, as for Poisson counts (R `algo.cusum`, `trans = "standard"`).
    Poisson,
}

/// A method with every parameter decided.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MethodConfig {
    /// The method.
    pub method: Method,
    /// Baseline buckets.
    pub baseline: usize,
    /// Guard buckets (EARS: 0 for C1, 2 for C2 and C3; fixed by the method).
    pub guard: usize,
    /// Baseline window.
    pub window: WindowKind,
    /// Spread estimate.
    pub scale: Scale,
    /// SD floor in counts.
    pub min_sigma: f64,
    /// Threshold on the statistic (EARS z, CUSUM h, EWMA L).
    pub threshold: f64,
    /// CUSUM reference value.
    pub k: f64,
    /// Fixed mean.
    pub mu0: Option<f64>,
    /// Fixed SD.
    pub sigma: Option<f64>,
    /// Restart after an alarm.
    pub reset: bool,
    /// Count or proportion.
    pub measure: Measure,
    /// Fixed λ₀.
    pub lambda0: Option<f64>,
    /// Fixed λ₁.
    pub lambda1: Option<f64>,
    /// λ₁ / λ₀.
    pub ratio: f64,
    /// λ₀ floor.
    pub min_lambda: f64,
    /// EWMA weight.
    pub lambda: f64,
}

impl MethodConfig {
    /// `method` with its defaults.
    ///
    /// EARS: `baseline = 7`, `min_sigma = 0.5` (Burkom's suggestion for
    /// sparse counts; R's `earsC` default is 0, which makes a flat baseline
    /// alarm on any rise), thresholds z(0.999) = 3.09 for C1 and C2 and
    /// z(0.975) = 1.96 for C3 (R's defaults, the CDC's choices).
    /// CUSUM: `k = 0.5`, `h = 4` (ARL₀ ≈ 336 buckets), reset after an
    /// alarm, a moving 28-bucket baseline after a 2-bucket guard.
    /// Poisson CUSUM: λ₁ = 2λ₀, `h = 4`. EWMA: `λ = 0.2`, `L = 3`
    /// (ARL₀ ≈ 560; `domain-science.md` §2).
    pub fn new(method: Method) -> Self {
        let ears = matches!(method, Method::C1 | Method::C2 | Method::C3);
        Self {
            method,
            baseline: if ears { 7 } else { 28 },
            guard: match method {
                Method::C1 => 0,
                _ => 2,
            },
            window: WindowKind::Moving,
            scale: Scale::Sd,
            min_sigma: 0.5,
            threshold: match method {
                Method::C1 | Method::C2 => z_upper(0.001),
                Method::C3 => z_upper(0.025),
                Method::Cusum | Method::PoissonCusum => 4.0,
                Method::Ewma => 3.0,
            },
            k: 0.5,
            mu0: None,
            sigma: None,
            reset: !matches!(method, Method::Ewma),
            measure: Measure::Count,
            lambda0: None,
            lambda1: None,
            ratio: 2.0,
            min_lambda: 0.2,
            lambda: 0.2,
        }
    }

    /// Sets one parameter from text (`"0.5"`, `"moving"`, `"true"`).
    ///
    /// # Errors
    ///
    /// A message naming the bad value in quotes and what was expected; the
    /// caller adds where it came from (file and line, or the flag).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let Some(param) = self
            .method
            .params()
            .iter()
            .copied()
            .find(|p| p.name() == name)
        else {
            let names: Vec<&str> = self.method.params().iter().map(|p| p.name()).collect();
            return Err(format!(
                "'{name}' is not a parameter of '{}'; expected {}",
                self.method,
                quoted_list(&names)
            ));
        };
        let number = |min: f64, max: f64, what: &str| -> Result<f64, String> {
            match value.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x >= min && x <= max => Ok(x),
                _ => Err(format!("'{value}' is not {what}")),
            }
        };
        let count = |min: usize, max: usize| -> Result<usize, String> {
            match value.trim().parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(format!(
                    "'{value}' is not a number of buckets; expected {min} to {max}"
                )),
            }
        };
        match param {
            Param::Baseline => {
                let min = if self.method == Method::Ewma || self.method == Method::Cusum {
                    2
                } else {
                    3
                };
                self.baseline = count(min, 10_000)?;
            }
            Param::Guard => self.guard = count(0, 1_000)?,
            Param::Window => {
                self.window = match value.trim() {
                    "moving" => WindowKind::Moving,
                    "fixed" => WindowKind::Fixed,
                    _ => {
                        return Err(format!(
                            "'{value}' is not a window; expected 'moving' or 'fixed'"
                        ));
                    }
                }
            }
            Param::Scale => {
                self.scale = match value.trim() {
                    "sd" => Scale::Sd,
                    "poisson" => Scale::Poisson,
                    _ => {
                        return Err(format!(
                            "'{value}' is not a scale; expected 'sd' or 'poisson'"
                        ));
                    }
                }
            }
            Param::MinSigma => {
                self.min_sigma = number(0.0, 1e9, "an SD floor; expected a number of at least 0")?
            }
            Param::Alpha => {
                let a = number(
                    1e-12,
                    0.5,
                    "a false-alarm probability; expected above 0 and at most 0.5",
                )?;
                self.threshold = z_upper(a);
            }
            Param::Threshold => {
                self.threshold = number(0.0, 1e9, "a threshold; expected a number of at least 0")?
            }
            Param::K => self.k = number(0.0, 100.0, "a reference value; expected 0 to 100 SDs")?,
            Param::H => {
                self.threshold =
                    number(1e-9, 1e6, "a decision interval; expected a number above 0")?
            }
            Param::Mu0 => self.mu0 = Some(number(-1e12, 1e12, "a mean; expected a finite number")?),
            Param::Sigma => {
                self.sigma = Some(number(1e-12, 1e12, "an SD; expected a number above 0")?)
            }
            Param::Reset => {
                self.reset = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(format!(
                            "'{value}' is not a switch; expected 'true' or 'false'"
                        ));
                    }
                }
            }
            Param::Measure => {
                self.measure = match value.trim() {
                    "count" => Measure::Count,
                    "proportion" => Measure::Proportion,
                    _ => {
                        return Err(format!(
                            "'{value}' is not a measure; expected 'count' or 'proportion'"
                        ));
                    }
                }
            }
            Param::Lambda0 => {
                self.lambda0 = Some(number(
                    1e-9,
                    1e12,
                    "a Poisson mean; expected a number above 0",
                )?)
            }
            Param::Lambda1 => {
                self.lambda1 = Some(number(
                    1e-9,
                    1e12,
                    "a Poisson mean; expected a number above 0",
                )?)
            }
            Param::Ratio => self.ratio = number(1.0001, 1e6, "a ratio; expected a number above 1")?,
            Param::MinLambda => {
                self.min_lambda = number(1e-9, 1e12, "a floor; expected a number above 0")?
            }
            Param::Lambda => {
                self.lambda = number(1e-6, 1.0, "an EWMA weight; expected above 0 and at most 1")?
            }
            Param::L => {
                self.threshold = number(
                    1e-9,
                    100.0,
                    "a limit width; expected above 0 and at most 100",
                )?
            }
        }
        Ok(())
    }

    /// Checks combinations no single parameter can: a fixed λ₁ must exceed
    /// a fixed λ₀.
    ///
    /// # Errors
    ///
    /// What is wrong, in the style of [`MethodConfig::set`].
    pub fn check(&self) -> Result<(), String> {
        if let (Some(l0), Some(l1)) = (self.lambda0, self.lambda1) {
            if l1 <= l0 {
                return Err(format!(
                    "lambda1 '{l1}' is not above lambda0 '{l0}'; expected the out-of-control mean to be the larger"
                ));
            }
        }
        Ok(())
    }

    /// Observations before the first statistic.
    pub fn warm_up(&self) -> usize {
        let reference = match self.window {
            WindowKind::Moving => self.baseline + self.guard,
            WindowKind::Fixed => self.baseline,
        };
        match self.method {
            Method::C1 | Method::C2 => self.baseline + self.guard,
            Method::C3 => self.baseline + self.guard + 2,
            Method::Cusum | Method::Ewma if self.mu0.is_some() && self.sigma.is_some() => 0,
            Method::PoissonCusum if self.lambda0.is_some() => 0,
            Method::Cusum | Method::Ewma | Method::PoissonCusum => reference,
        }
    }
}

/// The upper `1 − alpha` quantile of the standard normal distribution, by
/// Acklam's rational approximation (relative error below 1.2e-9). Written
/// out because it is twenty lines and a statistics crate for one quantile
/// would be the larger dependency.
pub fn z_upper(alpha: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let p = 1.0 - alpha;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        // Upper tail: use alpha directly, not 1 − (1 − alpha), for precision.
        -tail((-2.0 * alpha.ln()).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles_match_r_qnorm() {
        // qnorm(1 - alpha) in R 4.x.
        for (alpha, z) in [
            (0.001, 3.090_232_306_167_813),
            (0.025, 1.959_963_984_540_054),
            (0.05, 1.644_853_626_951_472),
            (0.5, 0.0),
            (1e-6, 4.753_424_308_822_899),
        ] {
            assert!(
                (z_upper(alpha) - z).abs() < 1e-6,
                "alpha {alpha}: {}",
                z_upper(alpha)
            );
        }
    }

    #[test]
    fn every_parameter_of_every_method_parses_and_bad_values_say_what_was_expected() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()), Some(m));
            let mut c = MethodConfig::new(m);
            for p in m.params() {
                let good = match p {
                    Param::Window => "fixed",
                    Param::Scale => "poisson",
                    Param::Reset => "false",
                    Param::Measure => "proportion",
                    Param::Alpha => "0.01",
                    Param::Lambda => "0.3",
                    _ => "5",
                };
                c.set(p.name(), good)
                    .unwrap_or_else(|e| panic!("{m} {}: {e}", p.name()));
                let e = c.set(p.name(), "nonsense").unwrap_err();
                assert!(e.starts_with("'nonsense' is not"), "{e}");
                assert!(e.contains("expected"), "{e}");
            }
        }
        let e = MethodConfig::new(Method::C1).set("k", "1").unwrap_err();
        assert_eq!(
            e,
            "'k' is not a parameter of 'c1'; expected 'baseline', 'min_sigma', 'alpha', 'threshold' or 'measure'"
        );
    }

    #[test]
    fn warm_up_matches_the_ears_definitions() {
        assert_eq!(MethodConfig::new(Method::C1).warm_up(), 7);
        assert_eq!(MethodConfig::new(Method::C2).warm_up(), 9);
        assert_eq!(MethodConfig::new(Method::C3).warm_up(), 11);
        let mut c = MethodConfig::new(Method::Cusum);
        assert_eq!(c.warm_up(), 30);
        c.set("mu0", "2").unwrap();
        c.set("sigma", "1").unwrap();
        assert_eq!(c.warm_up(), 0);
    }
}
