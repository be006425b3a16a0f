//! The reject scheduler: tracks every part from the moment it is seen until it reaches the ejector.
//!
//! Smart cameras fire the reject when the part reaches the ejector, not when the decision is made.
//! [`RejectScheduler`] is that tracking register as a pure state machine (no threads, no clock): a
//! part is registered when it is seen (its frame's capture time, or its trigger edge, plus the
//! encoder count at that moment), its decision arrives later, and [`RejectScheduler::poll`] says when
//! the reject output must change. The actuator thread (`reject.rs`) drives it with the real clock;
//! the tests drive it with simulated time.
//!
//! Positions are nanoseconds of `CLOCK_MONOTONIC` in time mode and encoder ticks in encoder mode.
//! A part is due at `seen + delay`; its decision must be in by `due - margin` (the commit point).
//! A part with no decision at its commit point, a part the camera missed, a frame that could not be
//! judged and a part that did not fit the queue are handed to the [`Policy`]: rejected (default) or
//! passed with the alarm raised. Every part ends in exactly one of the counts of
//! [`ScheduleCounts`], so nothing is lost silently.

use std::time::Duration;

use heapless::Deque;
use serde::{Deserialize, Serialize};

pub use crate::decide::{Fault, Verdict};
use crate::gpio::Level;

/// Upper bound of `queue_size` (the tracking queue is preallocated at this size).
pub const MAX_QUEUE: usize = 256;

/// Where the ejector is, seen from the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// The part reaches the ejector `delay` after it was seen; its decision must be in `margin`
    /// before that.
    Time { delay: Duration, margin: Duration },
    /// The part reaches the ejector `ticks` encoder counts after it was seen; its decision must be in
    /// `margin` counts before that.
    Ticks { ticks: u64, margin: u64 },
}

/// What happens to a part that could not be judged in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Reject it (the default: an uninspected part never goes on silently).
    #[default]
    Reject,
    /// Let it pass, raise the alarm and count it.
    Pass,
}

/// Settings of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerSettings {
    pub delay: Delay,
    /// Reject pulse width, counted from the real onset.
    pub pulse: Duration,
    /// Least time the output stays inactive between two pulses. A reject due while a pulse runs
    /// merges into it; in time mode one due within `min_gap` after the pulse's end (and already
    /// decided) merges too. Otherwise (encoder mode, or decided later) it waits for the gap and is
    /// counted in `gap_delayed`. A good part that passes the ejector during a merged pulse or an
    /// overflow hold is physically rejected, though counted `ok` (its decision).
    pub min_gap: Duration,
    /// Parts tracked at once (between camera and ejector); more is a fault.
    pub queue_size: usize,
    pub policy: Policy,
    /// The alarm output stays active this long after the last fail-safe event.
    pub alarm_hold: Duration,
}

/// Where and when a part was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartStamp {
    pub seq: u64,
    /// `CLOCK_MONOTONIC` time: the frame's capture time, or the trigger edge.
    pub time: Duration,
    /// Encoder count at that moment (0 without an encoder).
    pub count: u64,
}

/// Every part ends in exactly one of `ok`, `ng`, `late`, `missed`, `faults`, `overflows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ScheduleCounts {
    pub parts: u64,
    pub ok: u64,
    pub ng: u64,
    pub late: u64,
    pub missed: u64,
    /// Overrun, bad frame, inference failure.
    pub faults: u64,
    pub overflows: u64,
    /// Fail-safe parts the policy rejected / passed.
    pub failsafe_rejected: u64,
    pub failsafe_passed: u64,
    /// Decisions that arrived after the policy had already handled their part.
    pub late_decisions: u64,
    /// Pulses started, and rejects that merged into a running pulse.
    pub pulses: u64,
    pub merged: u64,
    /// Pulses held back to keep `min_gap` after the previous one.
    pub gap_delayed: u64,
}

impl ScheduleCounts {
    /// Parts with a final outcome.
    pub fn settled(&self) -> u64 {
        self.ok + self.ng + self.late + self.missed + self.faults + self.overflows
    }
}

/// A fail-safe event, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailSafeEvent {
    pub seq: u64,
    pub fault: Fault,
    pub policy: Policy,
}

/// A change of the reject output asked for by [`RejectScheduler::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub level: Level,
    /// For a pulse start in time mode: how late the onset is against the part's due time.
    pub onset_error: Option<Duration>,
}

/// When the scheduler next needs a poll: at a time, or at an encoder count, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wakeup {
    pub at: Option<Duration>,
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Pass,
    Fire,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    due: u64,
    commit: u64,
    state: State,
    /// Already counted in `gap_delayed`.
    gap_counted: bool,
}

/// The tracking register. See the module documentation.
pub struct RejectScheduler {
    s: SchedulerSettings,
    entries: Deque<Entry, MAX_QUEUE>,
    /// Decisions that overtook their registration (different threads), applied at registration.
    early: heapless::Vec<(u64, Verdict, u64), 32>,
    highest_seq: Option<u64>,
    active: bool,
    pulse_end: Option<Duration>,
    last_release: Option<Duration>,
    /// Overflow under the `reject` policy: the output is held active until this position.
    hold_until: Option<u64>,
    alarm_until: Option<Duration>,
    events: Deque<FailSafeEvent, 32>,
    counts: ScheduleCounts,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl RejectScheduler {
    /// `queue_size` is clamped to 1..=[`MAX_QUEUE`] (the config checks it first).
    pub fn new(mut s: SchedulerSettings) -> Self {
        s.queue_size = s.queue_size.clamp(1, MAX_QUEUE);
        RejectScheduler {
            s,
            entries: Deque::new(),
            early: heapless::Vec::new(),
            highest_seq: None,
            active: false,
            pulse_end: None,
            last_release: None,
            hold_until: None,
            alarm_until: None,
            events: Deque::new(),
            counts: ScheduleCounts::default(),
        }
    }

    pub fn settings(&self) -> &SchedulerSettings {
        &self.s
    }

    pub fn counts(&self) -> ScheduleCounts {
        self.counts
    }

    /// Parts registered and not yet past the ejector.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Nothing pending and the output at rest.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty() && !self.active && self.hold_until.is_none()
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether the alarm output should be active at `now`.
    pub fn alarm(&self, now: Duration) -> bool {
        self.alarm_until.is_some_and(|t| now < t)
    }

    /// Raises the alarm for `alarm_hold` from `at` (a fault that concerns no particular part).
    pub fn raise_alarm(&mut self, at: Duration) {
        let until = at + self.s.alarm_hold;
        self.alarm_until = Some(self.alarm_until.map_or(until, |a| a.max(until)));
    }

    /// The next fail-safe event not yet taken (for the log).
    pub fn take_event(&mut self) -> Option<FailSafeEvent> {
        self.events.pop_front()
    }

    fn pos(&self, time: Duration, count: u64) -> u64 {
        match self.s.delay {
            Delay::Time { .. } => nanos(time),
            Delay::Ticks { .. } => count,
        }
    }

    fn fail_safe(&mut self, seq: u64, fault: Fault, at: Duration) -> State {
        match fault {
            Fault::Late => self.counts.late += 1,
            Fault::MissedFrame => self.counts.missed += 1,
            Fault::QueueOverflow => self.counts.overflows += 1,
            Fault::Overrun | Fault::BadFrame | Fault::Inference | Fault::NoPart => {
                self.counts.faults += 1
            }
        }
        match self.s.policy {
            Policy::Reject => self.counts.failsafe_rejected += 1,
            Policy::Pass => self.counts.failsafe_passed += 1,
        }
        self.raise_alarm(at);
        let event = FailSafeEvent {
            seq,
            fault,
            policy: self.s.policy,
        };
        if self.events.push_back(event).is_err() {
            self.events.pop_front();
            let _ = self.events.push_back(event);
        }
        match self.s.policy {
            Policy::Reject => State::Fire,
            Policy::Pass => State::Pass,
        }
    }

    /// Registers a part seen at `stamp`. Parts must be registered in the order they travel (their
    /// due positions never decrease). Returns false when the queue was full: the part is then a
    /// [`Fault::QueueOverflow`], handed to the policy (under `reject`, the output is held active
    /// until the part has passed the ejector, rejecting every part in between).
    pub fn register(&mut self, stamp: PartStamp) -> bool {
        let (mut due, margin) = match self.s.delay {
            Delay::Time { delay, margin } => (nanos(stamp.time + delay), nanos(margin)),
            Delay::Ticks { ticks, margin } => (stamp.count.saturating_add(ticks), margin),
        };
        if let Some(last) = self.entries.back() {
            due = due.max(last.due);
        }
        self.highest_seq = Some(self.highest_seq.map_or(stamp.seq, |h| h.max(stamp.seq)));
        self.counts.parts += 1;
        // Registrations come in sequence order: an early decision for an older part can never
        // match any more (its registration was lost); drop it.
        let before = self.early.len();
        self.early.retain(|e| e.0 >= stamp.seq);
        self.counts.late_decisions += (before - self.early.len()) as u64;
        let early = self
            .early
            .iter()
            .position(|e| e.0 == stamp.seq)
            .map(|i| self.early.swap_remove(i));
        if self.entries.len() >= self.s.queue_size {
            if self.fail_safe(stamp.seq, Fault::QueueOverflow, stamp.time) == State::Fire {
                self.hold_until = Some(self.hold_until.map_or(due, |h| h.max(due)));
            }
            self.counts.late_decisions += u64::from(early.is_some());
            return false;
        }
        let entry = Entry {
            seq: stamp.seq,
            due,
            commit: due.saturating_sub(margin),
            state: State::Open,
            gap_counted: false,
        };
        // Cannot fail: the length was checked against queue_size <= MAX_QUEUE.
        let _ = self.entries.push_back(entry);
        if let Some((seq, j, pos)) = early {
            self.apply(seq, j, pos, stamp.time);
        }
        true
    }

    /// The decision for part `seq`, made at `at` (encoder count `count`). A decision after the
    /// part's commit point is late: the policy has (or will have) handled the part.
    pub fn decide(&mut self, seq: u64, verdict: Verdict, at: Duration, count: u64) {
        let pos = self.pos(at, count);
        if self.highest_seq.is_none_or(|h| seq > h) {
            // Overtook its registration; keep it until the part is registered.
            if self.early.push((seq, verdict, pos)).is_err() {
                self.counts.late_decisions += 1;
            }
            return;
        }
        self.apply(seq, verdict, pos, at);
    }

    fn apply(&mut self, seq: u64, verdict: Verdict, pos: u64, at: Duration) {
        let Some(entry) = self.entries.iter().find(|e| e.seq == seq).copied() else {
            self.counts.late_decisions += 1;
            return;
        };
        if entry.state != State::Open {
            self.counts.late_decisions += 1;
            return;
        }
        // A decision must be in before the commit point (poll hands a part still open *at* its
        // commit point to the policy, so a decision at that very position is late too).
        let state = if pos >= entry.commit {
            self.counts.late_decisions += 1;
            self.fail_safe(seq, Fault::Late, at)
        } else {
            match verdict {
                Verdict::Pass => {
                    self.counts.ok += 1;
                    State::Pass
                }
                Verdict::Reject => {
                    self.counts.ng += 1;
                    State::Fire
                }
                Verdict::Fault(f) => self.fail_safe(seq, f, at),
            }
        };
        if let Some(e) = self.entries.iter_mut().find(|e| e.seq == seq) {
            e.state = state;
        }
    }

    /// Advances to `now` (encoder count `count`). Returns the change of the reject output to make
    /// now, if any; call again until it returns `None`.
    pub fn poll(&mut self, now: Duration, count: u64) -> Option<Change> {
        let pos = self.pos(now, count);
        // 1. Parts still open at their commit point go to the policy.
        while let Some(seq) = self
            .entries
            .iter()
            .take_while(|e| e.commit <= pos)
            .find(|e| e.state == State::Open)
            .map(|e| e.seq)
        {
            let st = self.fail_safe(seq, Fault::Late, now);
            if let Some(e) = self.entries.iter_mut().find(|e| e.seq == seq) {
                e.state = st;
            }
        }
        // 2. Overflow hold.
        if let Some(h) = self.hold_until {
            if pos < h {
                self.pulse_end = Some(now + self.s.pulse);
                if !self.active {
                    self.active = true;
                    self.counts.pulses += 1;
                    return Some(Change {
                        level: Level::Active,
                        onset_error: None,
                    });
                }
            } else {
                // The lost part is at the ejector now: one more pulse width for it.
                self.hold_until = None;
                self.pulse_end = Some(now + self.s.pulse);
                if !self.active {
                    self.active = true;
                    self.counts.pulses += 1;
                    return Some(Change {
                        level: Level::Active,
                        onset_error: None,
                    });
                }
            }
        }
        // 3. Parts at the ejector.
        while let Some(&front) = self.entries.front() {
            if front.due > pos {
                break;
            }
            match front.state {
                State::Open => break, // unreachable: committed above (commit <= due)
                State::Pass => {
                    self.entries.pop_front();
                }
                State::Fire if self.active => {
                    // Merge into the running pulse.
                    self.pulse_end = Some(now + self.s.pulse);
                    self.counts.merged += 1;
                    self.entries.pop_front();
                }
                State::Fire => {
                    if let Some(rel) = self.last_release {
                        if now < rel + self.s.min_gap {
                            if let Some(f) = self.entries.front_mut() {
                                if !f.gap_counted {
                                    f.gap_counted = true;
                                    self.counts.gap_delayed += 1;
                                }
                            }
                            return None;
                        }
                    }
                    self.entries.pop_front();
                    self.active = true;
                    self.pulse_end = Some(now + self.s.pulse);
                    self.counts.pulses += 1;
                    let onset_error = match self.s.delay {
                        Delay::Time { .. } => {
                            Some(now.saturating_sub(Duration::from_nanos(front.due)))
                        }
                        Delay::Ticks { .. } => None,
                    };
                    return Some(Change {
                        level: Level::Active,
                        onset_error,
                    });
                }
            }
        }
        // 4. End of the pulse, unless the next reject is due within the minimum gap (time mode).
        if self.active && self.hold_until.is_none() && self.pulse_end.is_some_and(|e| now >= e) {
            if let (Delay::Time { .. }, Some(next)) = (self.s.delay, self.next_fire()) {
                let end = self.pulse_end.unwrap_or(now);
                let next_due = Duration::from_nanos(next.due);
                if next.state == State::Fire && next_due <= end + self.s.min_gap {
                    // Stay active; the part merges into this pulse when it is due.
                    self.pulse_end = Some(next_due);
                    return None;
                }
            }
            self.active = false;
            self.pulse_end = None;
            self.last_release = Some(now);
            return Some(Change {
                level: Level::Inactive,
                onset_error: None,
            });
        }
        None
    }

    fn next_fire(&self) -> Option<Entry> {
        self.entries
            .iter()
            .find(|e| e.state != State::Pass)
            .copied()
    }

    /// The reject output really went active at `at` (after the poll that asked for it): the pulse
    /// width counts from there, so a slow output write never shortens a pulse.
    pub fn confirm_onset(&mut self, at: Duration) {
        if self.active {
            let end = at + self.s.pulse;
            self.pulse_end = Some(self.pulse_end.map_or(end, |e| e.max(end)));
        }
    }

    /// When to poll next after a [`RejectScheduler::poll`] at `now` (only future times: the poll
    /// handled everything up to `now`).
    pub fn next_wakeup(&self, now: Duration) -> Wakeup {
        let mut w = Wakeup::default();
        let mut at = |t: Duration| {
            if t > now {
                w.at = Some(w.at.map_or(t, |a| a.min(t)));
            }
        };
        if self.active {
            if let Some(e) = self.pulse_end {
                at(e);
            }
        }
        if let Some(a) = self.alarm_until {
            at(a);
        }
        let open_commit = self
            .entries
            .iter()
            .find(|e| e.state == State::Open)
            .map(|e| e.commit);
        let front = self.entries.front().copied();
        // A reject at the front that is due but held back by the minimum gap waits for the gap.
        let gap_end = self
            .last_release
            .map(|rel| rel + self.s.min_gap)
            .filter(|_| front.is_some_and(|f| f.state == State::Fire));
        match self.s.delay {
            Delay::Time { .. } => {
                let front_due = front.map(|f| Duration::from_nanos(f.due));
                let front_due = match (front_due, gap_end) {
                    (Some(d), Some(g)) => Some(d.max(g)),
                    (d, _) => d,
                };
                for t in [open_commit.map(Duration::from_nanos), front_due]
                    .into_iter()
                    .flatten()
                    .chain(self.hold_until.map(Duration::from_nanos))
                {
                    at(t);
                }
            }
            Delay::Ticks { .. } => {
                let front_due = front.map(|f| f.due);
                // Due (count reached) but waiting for the gap: a time, not a count.
                if let (Some(g), Some(f)) = (gap_end, front) {
                    if f.gap_counted {
                        at(g);
                    }
                }
                let pending_due = front_due.filter(|_| !front.is_some_and(|f| f.gap_counted));
                w.count = [open_commit, pending_due, self.hold_until]
                    .into_iter()
                    .flatten()
                    .min();
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_are_distinct() {
        let all = [
            Fault::Late,
            Fault::MissedFrame,
            Fault::Overrun,
            Fault::BadFrame,
            Fault::Inference,
            Fault::NoPart,
            Fault::QueueOverflow,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
    }
}
