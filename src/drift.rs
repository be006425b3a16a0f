//! Drift of the good-part score distribution during `run`.
//!
//! Calibration records the 99th percentile of good-part scores. While running, the fraction of passed
//! parts scoring above it should stay near 1%. Over a window of passed parts, a fraction far above
//! that (more than 4 binomial standard deviations) means the parts, the lighting or the camera have
//! shifted: the monitor warns and suggests recalibrating. It allocates nothing per part.

const WINDOW: usize = 500;

pub struct DriftMonitor {
    reference: f32,
    expected_rate: f64,
    above: Box<[bool; WINDOW]>,
    next: usize,
    filled: usize,
    count_above: usize,
    since_check: usize,
    pub warnings: u64,
}

impl DriftMonitor {
    /// `reference`: the calibration's 99th-percentile good score; `expected_rate`: the fraction of good
    /// parts expected above it (0.01).
    pub fn new(reference: f32, expected_rate: f64) -> Self {
        DriftMonitor {
            reference,
            expected_rate,
            above: Box::new([false; WINDOW]),
            next: 0,
            filled: 0,
            count_above: 0,
            since_check: 0,
            warnings: 0,
        }
    }

    /// The limit on parts above the reference in a full window before a warning.
    pub fn limit(&self) -> f64 {
        let n = WINDOW as f64;
        let p = self.expected_rate;
        n * p + 4.0 * (n * p * (1.0 - p)).sqrt()
    }

    /// Records one passed part's score; returns true when this part triggered a drift warning.
    pub fn observe(&mut self, score: f32) -> bool {
        let a = score > self.reference;
        if self.filled == WINDOW && self.above[self.next] {
            self.count_above -= 1;
        }
        self.above[self.next] = a;
        self.count_above += a as usize;
        self.next = (self.next + 1) % WINDOW;
        self.filled = (self.filled + 1).min(WINDOW);
        self.since_check += 1;
        // Check once per half window, so a lasting drift warns periodically, not on every part.
        if self.filled < WINDOW || self.since_check < WINDOW / 2 {
            return false;
        }
        self.since_check = 0;
        if self.count_above as f64 > self.limit() {
            self.warnings += 1;
            log::warn!(
                "score drift: {} of the last {WINDOW} passed parts scored above the calibration's p99 ({:.4}); about {:.0} expected. Parts, lighting or camera have changed: check the station and recalibrate (`partguard calibrate`)",
                self.count_above,
                self.reference,
                self.expected_rate * WINDOW as f64
            );
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_on_the_expected_rate_warns_on_a_shift() {
        let mut m = DriftMonitor::new(0.5, 0.01);
        // 1% above the reference: no warning over many windows
        for i in 0..5000 {
            assert!(!m.observe(if i % 100 == 0 { 0.6 } else { 0.2 }));
        }
        assert_eq!(m.warnings, 0);
        // 10% above: a warning within one window
        let mut warned = false;
        for i in 0..WINDOW {
            warned |= m.observe(if i % 10 == 0 { 0.6 } else { 0.2 });
        }
        assert!(warned);
        assert!(m.limit() > 5.0 && m.limit() < 20.0, "{}", m.limit());
    }
}
