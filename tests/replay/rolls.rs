//! Percentage faults roll independently for every request: aborted requests per minute at a
//! constant rate are Poisson (a thinned Poisson process is Poisson), so their variance equals
//! their mean, whichever worker or proxy each request lands on. VMs that start with the same
//! generator abort the same request numbers and pile their aborts into the same minutes.

use std::path::Path;

use ebb_harness::report::Report;
use ebb_harness::scenario::Scenario;
use ebb_harness::sim;
use ebb_harness::Plugin;

use crate::wasm;

/// Four hours of 50 requests a second, 1% of them aborted from the start, on `proxies` proxies
/// of `workers` workers each: about 30 aborts a minute, over 240 minutes.
fn replay(proxies: u32, workers: u32) -> Report {
    let text = format!(
        r#"{{"version": 1, "name": "rolls", "duration": "4h", "seed": 11, "scrape_interval": "1m",
          "topology": {{"proxies": {proxies}, "workers": {workers}}},
          "pools": [{{"name": "web", "hosts": 100, "capacity_per_host": 100, "service_time": "10ms"}}],
          "traffic": [{{"pool": "web", "points": [["+0s", 50]]}}],
          "timeline": [{{"at": "+0s", "command": {{"id": "one-percent", "ttl": "5h", "abort": {{"pool": "web", "percent": 1, "status": 503}}}}}}],
          "slos": [{{"error_ratio": {{"pool": "web", "max": 1}}}}]}}"#
    );
    let scenario = Scenario::parse(Path::new("rolls.json"), text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let plugin = Plugin::load(wasm()).expect("load ebb.wasm");
    sim::replay(&scenario, &plugin, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

/// The upper `p` quantile of the chi-square distribution with `k` degrees of freedom (Wilson and
/// Hilferty's cube-root normal approximation, within 0.5% for k above 100) for the normal
/// quantile `z` of `p`.
fn chi_square_quantile(k: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

/// The index of dispersion test: `sum (x - mean)^2 / mean` over `n` Poisson counts is
/// chi-square with `n - 1` degrees of freedom. Returns (statistic, lower, upper bound, var/mean).
fn dispersion(counts: &[u64]) -> (f64, f64, f64, f64) {
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<u64>() as f64 / n;
    let statistic: f64 = counts.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / mean;
    // z = 4.753: each tail has probability 1e-6, so a correct generator fails this test with
    // probability 2e-6 for a seed chosen at random (and never for the fixed seed here).
    const Z: f64 = 4.753;
    let k = n - 1.0;
    (statistic, chi_square_quantile(k, -Z), chi_square_quantile(k, Z), statistic / k)
}

/// The aborts of each whole minute in which the fault was active (the first minute, when the
/// command lands, and the last are left out).
fn aborts_per_minute(report: &Report) -> Vec<u64> {
    let series = report.series.iter().find(|s| s.pool == "web").expect("web's series");
    let n = series.errors.len();
    assert!(n > 200, "{n} minutes");
    series.errors[1..n - 1].to_vec()
}

fn assert_independent(proxies: u32, workers: u32) {
    let report = replay(proxies, workers);
    let counts = aborts_per_minute(&report);
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    assert!((27.0..33.0).contains(&mean), "1% of 3,000 requests a minute, got {mean} a minute");
    let (statistic, low, high, ratio) = dispersion(&counts);
    assert!(
        (low..=high).contains(&statistic),
        "{proxies} proxies x {workers} workers: aborts per minute have variance/mean {ratio:.2} (dispersion \
         statistic {statistic:.0}, independent rolls give {low:.0} to {high:.0} but for one seed in 500,000)"
    );
}

#[test]
fn aborts_of_two_workers_are_independent_rolls() {
    assert_independent(1, 2);
}

#[test]
fn aborts_of_two_proxies_are_independent_rolls() {
    assert_independent(2, 1);
}

#[test]
fn the_dispersion_test_tells_poisson_counts_from_clustered_ones() {
    let mut rng = ebb_engine::rng::Rng::new(5);
    // Knuth's product of uniforms: a Poisson count of mean `mean`.
    let mut poisson = |mean: f64| {
        let (limit, mut product, mut k) = ((-mean).exp(), 1.0, 0u64);
        loop {
            product *= ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            if product < limit {
                break k;
            }
            k += 1;
        }
    };
    // Poisson(30) counts pass; aborts in pairs (Poisson(15) doubled, as two VMs with one
    // generator give at worst) have the same mean, variance/mean 2, and fail.
    let independent: Vec<u64> = (0..240).map(|_| poisson(30.0)).collect();
    let (statistic, low, high, _) = dispersion(&independent);
    assert!((low..=high).contains(&statistic), "{statistic} not in {low}..{high}");
    let paired: Vec<u64> = (0..240).map(|_| 2 * poisson(15.0)).collect();
    let (statistic, _, high, _) = dispersion(&paired);
    assert!(statistic > high, "{statistic} <= {high}");
}
