//! The reject scheduler driven with simulated time: deadlines, commit points, the fail-safe policy,
//! merging, the minimum gap, queue overflow and encoder positions. Deterministic: no threads, no
//! real clock.

use std::time::Duration;

use partguard::gpio::Level;
use partguard::schedule::{
    Delay, Fault, PartStamp, Policy, RejectScheduler, SchedulerSettings, Verdict,
};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn settings(delay: u64, margin: u64, pulse: u64, gap: u64, policy: Policy) -> SchedulerSettings {
    SchedulerSettings {
        delay: Delay::Time {
            delay: ms(delay),
            margin: ms(margin),
        },
        pulse: ms(pulse),
        min_gap: ms(gap),
        queue_size: 16,
        policy,
        alarm_hold: ms(500),
    }
}

fn stamp(seq: u64, t: u64) -> PartStamp {
    PartStamp {
        seq,
        time: ms(t),
        count: 0,
    }
}

/// Polls every millisecond over [from, to) and returns the level changes as (ms, level).
fn drive(s: &mut RejectScheduler, from: u64, to: u64) -> Vec<(u64, Level)> {
    let mut out = Vec::new();
    for t in from..to {
        while let Some(c) = s.poll(ms(t), 0) {
            out.push((t, c.level));
        }
    }
    out
}

#[test]
fn rejects_fire_at_capture_plus_delay_with_the_pulse_width() {
    let mut s = RejectScheduler::new(settings(500, 50, 30, 10, Policy::Reject));
    for (seq, t) in [(0, 0), (1, 100), (2, 200)] {
        assert!(s.register(stamp(seq, t)));
    }
    s.decide(0, Verdict::Pass, ms(150), 0);
    s.decide(1, Verdict::Reject, ms(250), 0);
    s.decide(2, Verdict::Reject, ms(260), 0);
    let edges = drive(&mut s, 0, 1000);
    assert_eq!(
        edges,
        vec![
            (600, Level::Active),
            (630, Level::Inactive),
            (700, Level::Active),
            (730, Level::Inactive)
        ]
    );
    let c = s.counts();
    assert_eq!((c.parts, c.ok, c.ng, c.pulses, c.late), (3, 1, 2, 2, 0));
    assert_eq!(c.settled(), c.parts);
    assert!(s.is_idle());
}

#[test]
fn onset_error_is_reported_against_the_due_time() {
    let mut s = RejectScheduler::new(settings(100, 10, 5, 0, Policy::Reject));
    s.register(stamp(0, 0));
    s.decide(0, Verdict::Reject, ms(20), 0);
    // The actuator wakes 3 ms late.
    assert_eq!(s.poll(ms(99), 0), None);
    let c = s.poll(ms(103), 0).expect("pulse starts");
    assert_eq!(c.level, Level::Active);
    assert_eq!(c.onset_error, Some(ms(3)));
    assert_eq!(s.next_wakeup(ms(103)).at, Some(ms(108)));
}

#[test]
fn a_part_without_a_decision_at_its_commit_point_is_rejected_by_default() {
    let mut s = RejectScheduler::new(settings(300, 40, 20, 0, Policy::Reject));
    s.register(stamp(7, 0));
    // The commit point is 260 ms: nothing yet at 259.
    assert_eq!(drive(&mut s, 0, 260), vec![]);
    assert!(!s.alarm(ms(259)));
    let edges = drive(&mut s, 260, 400);
    assert_eq!(edges, vec![(300, Level::Active), (320, Level::Inactive)]);
    let c = s.counts();
    assert_eq!((c.late, c.failsafe_rejected, c.ok, c.ng), (1, 1, 0, 0));
    assert!(
        s.alarm(ms(300)),
        "the alarm is raised for a fail-safe reject"
    );
    let ev = s.take_event().expect("event logged");
    assert_eq!(
        (ev.seq, ev.fault, ev.policy),
        (7, Fault::Late, Policy::Reject)
    );
    // A pass decision arriving afterwards changes nothing.
    s.decide(7, Verdict::Pass, ms(380), 0);
    assert_eq!(s.counts().ok, 0);
    assert_eq!(s.counts().late_decisions, 1);
}

#[test]
fn a_decision_after_the_commit_point_is_late_even_when_it_arrives_before_the_poll() {
    let mut s = RejectScheduler::new(settings(300, 40, 20, 0, Policy::Reject));
    s.register(stamp(0, 0));
    // Decided at 270 ms (commit point 260): a pass that came too late is not trusted.
    s.decide(0, Verdict::Pass, ms(270), 0);
    let edges = drive(&mut s, 0, 400);
    assert_eq!(edges, vec![(300, Level::Active), (320, Level::Inactive)]);
    assert_eq!(s.counts().late, 1);
    assert_eq!(s.counts().ok, 0);
}

#[test]
fn the_pass_policy_lets_late_parts_go_with_the_alarm_raised() {
    let mut s = RejectScheduler::new(settings(300, 40, 20, 0, Policy::Pass));
    s.register(stamp(0, 0));
    s.register(stamp(1, 50));
    s.decide(1, Verdict::Fault(Fault::Inference), ms(100), 0);
    let edges = drive(&mut s, 0, 600);
    assert!(
        edges.is_empty(),
        "no pulse under the pass policy: {edges:?}"
    );
    let c = s.counts();
    assert_eq!((c.late, c.faults, c.failsafe_passed), (1, 1, 2));
    assert!(s.alarm(ms(300)));
    assert!(!s.alarm(ms(300 + 500)), "the alarm clears after alarm_hold");
}

#[test]
fn close_rejects_merge_into_one_pulse() {
    let mut s = RejectScheduler::new(settings(200, 20, 30, 5, Policy::Reject));
    s.register(stamp(0, 0));
    s.register(stamp(1, 20));
    s.decide(0, Verdict::Reject, ms(10), 0);
    s.decide(1, Verdict::Reject, ms(30), 0);
    let edges = drive(&mut s, 0, 400);
    // One pulse from the first due (200) to the second due + width (250).
    assert_eq!(edges, vec![(200, Level::Active), (250, Level::Inactive)]);
    assert_eq!(s.counts().pulses, 1);
    assert_eq!(s.counts().merged, 1);
}

#[test]
fn rejects_within_the_minimum_gap_merge_and_others_stay_apart() {
    // Pulse 30, next due 40 ms later: the 10 ms off time is under a 20 ms gap -> merged.
    let mut s = RejectScheduler::new(settings(200, 20, 30, 20, Policy::Reject));
    s.register(stamp(0, 0));
    s.register(stamp(1, 40));
    s.decide(0, Verdict::Reject, ms(10), 0);
    s.decide(1, Verdict::Reject, ms(50), 0);
    assert_eq!(
        drive(&mut s, 0, 400),
        vec![(200, Level::Active), (270, Level::Inactive)]
    );
    // With a 5 ms gap they are two pulses.
    let mut s = RejectScheduler::new(settings(200, 20, 30, 5, Policy::Reject));
    s.register(stamp(0, 0));
    s.register(stamp(1, 40));
    s.decide(0, Verdict::Reject, ms(10), 0);
    s.decide(1, Verdict::Reject, ms(50), 0);
    assert_eq!(
        drive(&mut s, 0, 400),
        vec![
            (200, Level::Active),
            (230, Level::Inactive),
            (240, Level::Active),
            (270, Level::Inactive)
        ]
    );
}

#[test]
fn a_reject_decided_after_the_previous_pulse_ended_waits_for_the_gap() {
    let mut s = RejectScheduler::new(settings(100, 5, 30, 20, Policy::Reject));
    s.register(stamp(0, 0));
    s.register(stamp(1, 40));
    s.decide(0, Verdict::Reject, ms(10), 0);
    let mut edges = drive(&mut s, 0, 135);
    // Part 1 is decided at its commit point (135 ms), after the first pulse ended at 130.
    s.decide(1, Verdict::Reject, ms(135), 0);
    edges.extend(drive(&mut s, 135, 300));
    assert_eq!(
        edges,
        vec![
            (100, Level::Active),
            (130, Level::Inactive),
            (150, Level::Active),
            (180, Level::Inactive)
        ]
    );
    assert_eq!(s.counts().gap_delayed, 1);
}

#[test]
fn a_full_queue_is_a_fault_that_holds_the_reject_until_the_lost_part_passed() {
    let mut st = settings(300, 20, 10, 0, Policy::Reject);
    st.queue_size = 2;
    let mut s = RejectScheduler::new(st);
    assert!(s.register(stamp(0, 0)));
    assert!(s.register(stamp(1, 10)));
    assert!(!s.register(stamp(2, 20)), "the third part overflows");
    s.decide(0, Verdict::Pass, ms(30), 0);
    s.decide(1, Verdict::Pass, ms(30), 0);
    let edges = drive(&mut s, 0, 500);
    // Held active from the overflow until part 2's due (320 ms), then one pulse width.
    assert_eq!(edges, vec![(0, Level::Active), (330, Level::Inactive)]);
    let c = s.counts();
    assert_eq!((c.overflows, c.ok, c.parts), (1, 2, 3));
    assert_eq!(c.settled(), c.parts);
}

#[test]
fn encoder_mode_fires_at_the_count_and_times_the_width() {
    let mut s = RejectScheduler::new(SchedulerSettings {
        delay: Delay::Ticks {
            ticks: 100,
            margin: 10,
        },
        pulse: ms(20),
        min_gap: ms(0),
        queue_size: 8,
        policy: Policy::Reject,
        alarm_hold: ms(100),
    });
    s.register(PartStamp {
        seq: 0,
        time: ms(0),
        count: 1000,
    });
    s.decide(0, Verdict::Reject, ms(5), 1010);
    assert_eq!(s.next_wakeup(ms(5)).count, Some(1100));
    // The line is slow: one tick every 2 ms.
    let mut edges = Vec::new();
    for t in 0..400u64 {
        let count = 1000 + t / 2;
        while let Some(c) = s.poll(ms(t), count) {
            edges.push((t, c.level));
        }
    }
    assert_eq!(edges, vec![(200, Level::Active), (220, Level::Inactive)]);
    // A decision later than 10 ticks before the ejector is late.
    s.register(PartStamp {
        seq: 1,
        time: ms(400),
        count: 1200,
    });
    s.decide(1, Verdict::Pass, ms(500), 1291);
    assert_eq!(s.counts().late, 1);
}

#[test]
fn a_decision_that_overtakes_its_registration_is_kept() {
    let mut s = RejectScheduler::new(settings(100, 10, 10, 0, Policy::Reject));
    s.register(stamp(0, 0));
    s.decide(1, Verdict::Reject, ms(30), 0);
    s.register(stamp(1, 20));
    s.decide(0, Verdict::Pass, ms(30), 0);
    let edges = drive(&mut s, 0, 300);
    assert_eq!(edges, vec![(120, Level::Active), (130, Level::Inactive)]);
    assert_eq!(s.counts().ng, 1);
    assert_eq!(s.counts().late, 0);
}

#[test]
fn next_wakeup_names_the_commit_point_of_an_open_part() {
    let mut s = RejectScheduler::new(settings(300, 40, 20, 0, Policy::Reject));
    assert_eq!(s.next_wakeup(ms(0)).at, None);
    s.register(stamp(0, 100));
    assert_eq!(s.next_wakeup(ms(100)).at, Some(ms(360)));
    s.decide(0, Verdict::Pass, ms(200), 0);
    assert_eq!(s.next_wakeup(ms(200)).at, Some(ms(400)));
}

/// The actuator sleeps until `next_wakeup`: a time in the past would make it spin. Through pulses,
/// gaps, gap delays, an expired alarm, overflow holds and idle stretches, every wake-up after a poll
/// is in the future, and the scheduler still acts on time.
#[test]
fn wakeups_are_never_in_the_past() {
    let mut st = settings(100, 10, 20, 15, Policy::Reject);
    st.queue_size = 4;
    let mut s = RejectScheduler::new(st);
    let mut edges = Vec::new();
    for t in 0..1500u64 {
        // Parts every 30 ms for 300 ms, odd ones rejected, one never decided (late -> alarm),
        // a burst that overflows the queue at 600 ms.
        if t < 300 && t % 30 == 0 {
            s.register(stamp(t / 30, t));
        }
        if t < 300 && t % 30 == 5 && t / 30 != 4 {
            let j = if (t / 30) % 2 == 1 {
                Verdict::Reject
            } else {
                Verdict::Pass
            };
            s.decide(t / 30, j, ms(t), 0);
        }
        if t == 600 {
            for k in 0..5 {
                s.register(stamp(100 + k, t));
            }
        }
        if t == 601 {
            for k in 0..4 {
                s.decide(100 + k, Verdict::Pass, ms(t), 0);
            }
        }
        while let Some(c) = s.poll(ms(t), 0) {
            edges.push((t, c.level));
        }
        if let Some(w) = s.next_wakeup(ms(t)).at {
            assert!(w > ms(t), "wake-up {w:?} at {t} ms is not in the future");
        }
    }
    assert!(s.is_idle());
    let c = s.counts();
    assert_eq!(c.settled(), c.parts, "{c:?}");
    assert_eq!((c.late, c.overflows), (1, 1), "{c:?}");
    assert!(!s.alarm(ms(1499)), "the alarm expired");
    assert_eq!(s.next_wakeup(ms(1499)), Default::default());
    assert!(edges.len() >= 8, "{edges:?}");
}
