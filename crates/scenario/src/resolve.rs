//! Turning selectors into concrete nodes, reproducibly from the seed.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use vitalmesh_core::Population;
use vitalmesh_firmware::rng::{self, Draw, Purpose};
use vitalmesh_wire::{GatewayId, NodeId};

use crate::action::{NodeSelector, Pick};

/// The random stream for choices made by event number `key` of a run.
pub fn event_rng(seed: u64, key: u32) -> ChaCha8Rng {
    rng::stream(seed, NodeId(key), Purpose::Events)
}

/// The nodes `selector` names in `population`, sorted.
pub fn resolve(
    selector: &NodeSelector,
    population: &Population,
    rng: &mut ChaCha8Rng,
) -> Vec<NodeId> {
    resolve_among(selector, population, rng, |_| true)
}

/// The nodes `selector` names among those `eligible` allows: `count` and
/// `fraction` pick from the eligible ones (an outbreak among the occupied
/// beds, a restart among the nodes that are down).
pub fn resolve_among(
    selector: &NodeSelector,
    population: &Population,
    rng: &mut ChaCha8Rng,
    eligible: impl Fn(NodeId) -> bool,
) -> Vec<NodeId> {
    let mut scope: Vec<NodeId> = match (&selector.nodes, selector.ward) {
        (Some(list), _) => list.iter().copied().map(NodeId).collect(),
        (None, Some(w)) => population.nodes_of(vitalmesh_core::WardId(w)).collect(),
        (None, None) => population.all_nodes().collect(),
    };
    scope.retain(|n| n.0 < population.nodes() && eligible(*n));
    pick_from(scope, selector.pick, rng)
}

/// `pick` of `scope`, chosen uniformly, sorted.
fn pick_from<T: Ord>(mut scope: Vec<T>, pick: Pick, rng: &mut ChaCha8Rng) -> Vec<T> {
    let want = match pick {
        Pick::All => scope.len(),
        Pick::Count(n) => (n as usize).min(scope.len()),
        Pick::Fraction(f) => ((f * scope.len() as f64).round() as usize)
            .clamp(usize::from(!scope.is_empty()), scope.len()),
    };
    // Partial Fisher–Yates: the first `want` positions are a uniform sample.
    for i in 0..want {
        let last = scope.len() - 1;
        let j = i + (rng.unit() * (scope.len() - i) as f64) as usize;
        scope.swap(i, j.min(last));
    }
    scope.truncate(want);
    scope.sort_unstable();
    scope
}

/// The gateways `selector` names (its `ward`, then `count` or
/// `fraction` of them) among those `eligible` allows, sorted.
pub fn resolve_gateways(
    selector: &NodeSelector,
    population: &Population,
    rng: &mut ChaCha8Rng,
    eligible: impl Fn(GatewayId) -> bool,
) -> Vec<GatewayId> {
    let mut scope: Vec<GatewayId> = match selector.ward {
        Some(w) => population.gateways_of(vitalmesh_core::WardId(w)).collect(),
        None => (0..population.gateways()).map(GatewayId).collect(),
    };
    scope.retain(|g| eligible(*g));
    pick_from(scope, selector.pick, rng)
}

/// Who falls ill in an outbreak and when: `attack_rate` of the ward's
/// patients (the beds `occupied` says hold one), each with an onset `median · exp(spread · z)` after the event,
/// z standard normal — the lognormal epidemic curve used for simulated
/// outbreaks by Hutwagner et al. 2005 (`domain-science.md` §3.2).
pub fn outbreak_onsets(
    ward: u16,
    attack_rate: f64,
    median: Duration,
    spread: f64,
    population: &Population,
    rng: &mut ChaCha8Rng,
    occupied: impl Fn(NodeId) -> bool,
) -> Vec<(NodeId, Duration)> {
    let selector = NodeSelector {
        ward: Some(ward),
        nodes: None,
        pick: Pick::Fraction(attack_rate),
    };
    let cases = resolve_among(&selector, population, rng, occupied);
    cases
        .into_iter()
        .map(|n| {
            let z = rng.normal(0.0, 1.0);
            (n, median.mul_f64((spread * z).exp().min(50.0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop() -> Population {
        Population {
            wards: 4,
            nodes_per_ward: 50,
            nodes_per_gateway: 0,
        }
    }

    #[test]
    fn selections_are_reproducible_distinct_and_in_scope() {
        let sel = NodeSelector {
            ward: Some(2),
            nodes: None,
            pick: Pick::Count(10),
        };
        let a = resolve(&sel, &pop(), &mut event_rng(7, 0));
        assert_eq!(a, resolve(&sel, &pop(), &mut event_rng(7, 0)));
        assert_ne!(
            a,
            resolve(&sel, &pop(), &mut event_rng(7, 1)),
            "another event picks others"
        );
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|n| (100..150).contains(&n.0)));
    }

    #[test]
    fn fractions_round_but_never_to_nothing() {
        let all = NodeSelector {
            ward: None,
            nodes: None,
            pick: Pick::Fraction(0.25),
        };
        assert_eq!(resolve(&all, &pop(), &mut event_rng(1, 0)).len(), 50);
        let tiny = NodeSelector {
            ward: None,
            nodes: Some(vec![3, 4]),
            pick: Pick::Fraction(0.01),
        };
        assert_eq!(resolve(&tiny, &pop(), &mut event_rng(1, 0)).len(), 1);
    }

    #[test]
    fn outbreak_onsets_follow_the_attack_rate_and_median() {
        let p = Population {
            wards: 2,
            nodes_per_ward: 1000,
            nodes_per_gateway: 0,
        };
        let cases = outbreak_onsets(
            1,
            0.3,
            Duration::from_secs(3600),
            0.5,
            &p,
            &mut event_rng(3, 5),
            |_| true,
        );
        assert_eq!(cases.len(), 300);
        assert!(cases.iter().all(|(n, _)| n.0 >= 1000));
        let mut onsets: Vec<f64> = cases.iter().map(|(_, d)| d.as_secs_f64()).collect();
        onsets.sort_by(f64::total_cmp);
        let median = onsets[150];
        assert!(
            (3000.0..4300.0).contains(&median),
            "median onset {median} s"
        );
    }
}
