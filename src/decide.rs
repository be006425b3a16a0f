//! Decision: the image score against the threshold.

/// What happens to one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Score at or below the threshold: the part goes on.
    Pass,
    /// Score above the threshold: the part is rejected.
    Reject,
    /// The part could not be judged (unreadable frame, inference error, non-finite score). Fail-safe:
    /// a fault is rejected, never silently passed.
    Fault,
}

impl Verdict {
    pub fn fires_reject(self) -> bool {
        matches!(self, Verdict::Reject | Verdict::Fault)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "OK",
            Verdict::Reject => "NG",
            Verdict::Fault => "FAULT",
        }
    }
}

/// Score above `threshold` => reject; a non-finite score is a fault.
pub fn decide(score: f32, threshold: f32) -> Verdict {
    if !score.is_finite() {
        Verdict::Fault
    } else if score > threshold {
        Verdict::Reject
    } else {
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_exclusive_and_nan_is_a_fault() {
        assert_eq!(decide(0.5, 0.5), Verdict::Pass);
        assert_eq!(decide(0.500_001, 0.5), Verdict::Reject);
        assert_eq!(decide(f32::NAN, 0.5), Verdict::Fault);
        assert_eq!(decide(f32::INFINITY, 0.5), Verdict::Fault);
        assert!(Verdict::Fault.fires_reject());
        assert!(!Verdict::Pass.fires_reject());
    }
}
