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
                let trough = scenario.clock_offset_s(d.trough);
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
                // Whole seconds are stepped through; where the curve is 0 until its next
                // breakpoint, the seconds before it are skipped at once (they would all read 0
                // and draw nothing, so arrivals are the same), and an idle pool costs nothing.
                let next = now.floor() + 1.0;
                now = match self.zero_until(now) {
                    Some(until) if until > next => next + (until - next).floor(),
                    _ => next,
                };
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

impl Curve {
    /// When the rate, 0 at `now`, may next rise: the next point or burst boundary (infinity when
    /// none comes); None when it may rise any moment (a daily cycle, a rising segment).
    fn zero_until(&self, now: f64) -> Option<f64> {
        if self.diurnal.is_some_and(|(min, max, _)| min > 0.0 || max > 0.0) {
            return None;
        }
        let mut until = f64::INFINITY;
        match self.points.as_slice() {
            [] | [_] => {}
            points => {
                let i = points.partition_point(|(x, _)| *x <= now);
                if i == 0 {
                    until = points[0].0;
                } else if i < points.len() {
                    let ((_, y0), (x1, y1)) = (points[i - 1], points[i]);
                    if y0 > 0.0 || y1 > 0.0 {
                        return None;
                    }
                    until = x1;
                }
            }
        }
        for (from, to, extra) in &self.bursts {
            if *from <= now && now < *to && *extra > 0.0 {
                return None;
            }
            for edge in [*from, *to] {
                if edge > now {
                    until = until.min(edge);
                }
            }
        }
        Some(until)
    }

    /// Requests the curve stands for over `[0, end]` seconds: the integral of its rate (what
    /// Poisson arrivals average). Exact for points and bursts, closed form for the daily cycle;
    /// negative values, which `ebb check` refuses, are counted as they are rather than as 0.
    pub fn integral(&self, end: f64) -> f64 {
        if end <= 0.0 {
            return 0.0;
        }
        let mut total = match self.points.as_slice() {
            [] => 0.0,
            [(_, r)] => r * end,
            points => {
                let (first, last) = (points[0], points[points.len() - 1]);
                // Flat before the first point and after the last.
                let mut sum = first.1 * first.0.clamp(0.0, end) + last.1 * (end - last.0.clamp(0.0, end));
                for w in points.windows(2) {
                    let ((x0, y0), (x1, y1)) = (w[0], w[1]);
                    let (a, b) = (x0.clamp(0.0, end), x1.clamp(0.0, end));
                    if b > a && x1 > x0 {
                        let at = |t: f64| y0 + (y1 - y0) * (t - x0) / (x1 - x0);
                        sum += (at(a) + at(b)) / 2.0 * (b - a);
                    }
                }
                sum
            }
        };
        if let Some((min, max, trough)) = self.diurnal {
            let w = 2.0 * std::f64::consts::PI / DAY_S;
            let cycle = ((w * (end - trough)).sin() - (w * -trough).sin()) / w;
            total += (min + max) / 2.0 * end - (max - min) / 2.0 * cycle;
        }
        for (from, to, extra) in &self.bursts {
            total += extra * (to.min(end) - from.max(0.0)).max(0.0);
        }
        total
    }

    /// The highest rate the curve can reach (an upper bound: every burst at once).
    pub fn peak(&self) -> f64 {
        let points = self.points.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        let diurnal = self.diurnal.map_or(0.0, |(min, max, _)| min.max(max));
        let bursts: f64 = self.bursts.iter().map(|(_, _, r)| r.max(0.0)).sum();
        points + diurnal + bursts
    }

    /// Rate-curve evaluations per arrival cost this many steps: every burst is looked at.
    pub fn cost(&self) -> u64 {
        1 + self.bursts.len() as u64
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

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(f64, f64)], diurnal: Option<(f64, f64, f64)>, bursts: &[(f64, f64, f64)]) -> Curve {
        Curve { points: points.to_vec(), diurnal, bursts: bursts.to_vec() }
    }

    /// The integral by the rectangle rule, in 1ms steps.
    fn numeric(c: &Curve, end: f64) -> f64 {
        let n = (end * 1000.0) as usize;
        (0..n).map(|k| c.rate((k as f64 + 0.5) / 1000.0) / 1000.0).sum()
    }

    #[test]
    fn the_integral_is_what_the_rate_adds_up_to() {
        let cases = [
            curve(&[(10.0, 2.0), (50.0, 6.0), (50.0, 1.0), (80.0, 3.0)], None, &[]),
            curve(&[(0.0, 5.0)], None, &[(20.0, 30.0, 4.0), (95.0, 200.0, 1.0)]),
            curve(&[], Some((1.0, 9.0, 30_000.0)), &[]),
            curve(&[(-5.0, 1.0), (300.0, 2.0)], Some((0.0, 3.0, -100.0)), &[(-10.0, 5.0, 2.0)]),
        ];
        for c in &cases {
            let (exact, sum) = (c.integral(100.0), numeric(c, 100.0));
            assert!((exact - sum).abs() < 1e-3 * sum.max(1.0), "{exact} vs {sum}");
        }
    }

    #[test]
    fn an_idle_curve_skips_to_where_it_can_rise_and_draws_the_same() {
        let c = curve(&[(0.0, 0.0), (100.0, 0.0), (200.0, 5.0)], None, &[(50.5, 60.0, 3.0)]);
        assert_eq!(c.zero_until(0.0), Some(50.5));
        assert_eq!(c.zero_until(60.0), Some(100.0));
        assert_eq!(c.zero_until(100.0), None, "rising from 100");
        assert_eq!(curve(&[], None, &[]).zero_until(7.0), Some(f64::INFINITY));
        assert_eq!(curve(&[], Some((0.0, 1.0, 0.0)), &[]).zero_until(0.0), None);
        // The same arrivals as stepping second by second would give.
        let stepped = |t: f64, rng: &mut Rng| {
            let mut now = t;
            while now < 300.0 {
                let rate = c.rate(now);
                if rate <= 0.0 {
                    now = now.floor() + 1.0;
                    continue;
                }
                let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let gap = -u.ln() / rate;
                if gap <= 1.0 {
                    return Some(now + gap).filter(|x| *x < 300.0);
                }
                now += 1.0;
            }
            None
        };
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let (mut ta, mut tb) = (Some(0.0), Some(0.0));
        while let (Some(x), Some(y)) = (ta, tb) {
            assert_eq!(x, y);
            ta = c.next_arrival(x, 300.0, &mut a);
            tb = stepped(y, &mut b);
        }
        assert_eq!(ta, tb);
    }
}
