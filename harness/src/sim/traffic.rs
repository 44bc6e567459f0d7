// Load over time: a pool's rate curve (points, a daily cycle, bursts) and Poisson arrivals
// drawn from the scenario's seed.

use ebb_engine::rng::Rng;

use crate::scenario::{Scenario, Traffic};

const DAY_S: f64 = 86_400.0;

/// A pool's rate as a function of time, in simulated requests per second.
pub struct Curve {
    /// (seconds since start, rate), sorted.
    points: Vec<(f64, f64)>,
    diurnal: Option<(f64, f64, f64)>,
    bursts: Vec<(f64, f64, f64)>,
}

impl Curve {
    pub fn new(scenario: &Scenario, traffic: &[&Traffic]) -> Curve {
        let mut curve = Curve { points: Vec::new(), diurnal: None, bursts: Vec::new() };
        for t in traffic {
            for (at, rate) in &t.points {
                curve.points.push((scenario.offset_ms(*at) as f64 / 1000.0, *rate));
            }
            if let Some(d) = &t.diurnal {
                // Seconds from the start to the next trough.
                let trough = (d.trough.millis() as f64 - scenario.start.millis() as f64) / 1000.0;
                curve.diurnal = Some((d.min, d.max, trough));
            }
            for b in &t.bursts {
                let from = scenario.offset_ms(b.at) as f64 / 1000.0;
                curve.bursts.push((from, from + b.lasts.as_millis() as f64 / 1000.0, b.rate));
            }
        }
        curve.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        curve
    }

    /// Requests per second at `t` seconds.
    pub fn rate(&self, t: f64) -> f64 {
        let mut rate = match self.points.as_slice() {
            [] => 0.0,
            [(_, r)] => *r,
            points => {
                let i = points.partition_point(|(x, _)| *x <= t);
                if i == 0 {
                    points[0].1
                } else if i == points.len() {
                    points[i - 1].1
                } else {
                    let ((x0, y0), (x1, y1)) = (points[i - 1], points[i]);
                    if x1 > x0 {
                        y0 + (y1 - y0) * (t - x0) / (x1 - x0)
                    } else {
                        y1
                    }
                }
            }
        };
        if let Some((min, max, trough)) = self.diurnal {
            let phase = 2.0 * std::f64::consts::PI * (t - trough) / DAY_S;
            rate += min + (max - min) * (1.0 - phase.cos()) / 2.0;
        }
        for (from, to, extra) in &self.bursts {
            if t >= *from && t < *to {
                rate += extra;
            }
        }
        rate.max(0.0)
    }

    /// The next arrival after `t` (seconds), or None before `end`. Rates are re-read at least
    /// every second, so curves are followed closely without thinning.
    pub fn next_arrival(&self, t: f64, end: f64, rng: &mut Rng) -> Option<f64> {
        let mut now = t;
        while now < end {
            let rate = self.rate(now);
            if rate <= 0.0 {
                now = now.floor() + 1.0;
                continue;
            }
            let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let gap = -u.ln() / rate;
            if gap <= 1.0 {
                return Some(now + gap).filter(|x| *x < end);
            }
            // A long gap: step a second and draw again at the new rate (memoryless).
            now += 1.0;
        }
        None
    }
}

/// An exponential (or fixed) service time in milliseconds with mean `mean_ms`.
pub fn service_ms(mean_ms: u64, exponential: bool, rng: &mut Rng) -> u64 {
    if !exponential {
        return mean_ms;
    }
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    ((-u.ln()) * mean_ms as f64).round().max(1.0) as u64
}
