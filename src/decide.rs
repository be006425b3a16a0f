//! Decision: the image score against the threshold, and the one verdict type that goes from here to
//! the reject scheduler (`schedule.rs`), the statistics and every report.

/// What happens to one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Score at or below the threshold: the part goes on.
    Pass,
    /// Score above the threshold: the part is rejected.
    Reject,
    /// The part could not be judged, and why. Fail-safe: the configured policy handles it (reject
    /// by default), it is never silently passed.
    Fault(Fault),
}

impl Verdict {
    pub fn fires_reject(self) -> bool {
        matches!(self, Verdict::Reject | Verdict::Fault(_))
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "OK",
            Verdict::Reject => "NG",
            Verdict::Fault(_) => "FAULT",
        }
    }
}

/// Why a part could not be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No decision before the commit point.
    Late,
    /// A trigger without a frame in time.
    MissedFrame,
    /// The frame arrived while every frame buffer was busy (inference behind the line).
    Overrun,
    /// The frame could not be converted (truncated, corrupt).
    BadFrame,
    /// Inference failed or gave a non-finite score.
    Inference,
    /// The model aligns the part (`partguard.alignment`) and none was found in the frame: an empty
    /// trigger, or a part outside the view or against a background of its own colour.
    NoPart,
    /// The tracking queue was full.
    QueueOverflow,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Late => "late",
            Fault::MissedFrame => "missed frame",
            Fault::Overrun => "overrun",
            Fault::BadFrame => "bad frame",
            Fault::Inference => "inference",
            Fault::NoPart => "no part found",
            Fault::QueueOverflow => "queue overflow",
        }
    }
}

/// Score above `threshold` => reject; a non-finite score is an inference fault.
pub fn decide(score: f32, threshold: f32) -> Verdict {
    if !score.is_finite() {
        Verdict::Fault(Fault::Inference)
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
        assert_eq!(decide(f32::NAN, 0.5), Verdict::Fault(Fault::Inference));
        assert_eq!(decide(f32::INFINITY, 0.5), Verdict::Fault(Fault::Inference));
        assert!(Verdict::Fault(Fault::BadFrame).fires_reject());
        assert!(!Verdict::Pass.fires_reject());
    }
}
