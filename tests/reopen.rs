//! Fault injection: the camera fails mid-run (ENODEV from a driver) -> the outage is reported and
//! alarmed, parts triggered meanwhile take the fail-safe policy, and the camera is reopened with
//! exponential backoff; inspection then goes on.

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use partguard::capture::controls::ControlsInForce;
use partguard::capture::{
    CaptureError, Frame, FrameSource, PixelFormat, ReopeningSource, ReplaySource,
};
use partguard::clock::{monotonic_now, Clock, MonotonicClock};
use partguard::gpio::Level;
use partguard::gpio::{InputEdge, SimulatedInput};
use partguard::infer::TractEngine;
use partguard::pipeline::{run, Inspector, TriggerSettings};
use partguard::schedule::Policy;

fn enodev() -> CaptureError {
    CaptureError::Io {
        device: PathBuf::from("/dev/video0"),
        operation: "VIDIOC_DQBUF",
        source: std::io::Error::from_raw_os_error(19), // ENODEV
    }
}

/// `frames` tiny frames, then the driver's ENODEV (or the end).
struct Scripted {
    frames: u32,
    then_fail: bool,
    data: [u8; 12],
}

impl FrameSource for Scripted {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.frames == 0 {
            return if self.then_fail {
                Err(enodev())
            } else {
                Ok(None)
            };
        }
        self.frames -= 1;
        Ok(Some(Frame {
            data: &self.data,
            width: 2,
            height: 2,
            stride: 6,
            format: PixelFormat::Rgb24,
            timestamp: monotonic_now(),
            sequence: 0,
            origin: None,
            driver_error: false,
        }))
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
    /// What a camera would read back; it tells the opens apart.
    fn controls_in_force(&self) -> ControlsInForce {
        [("brightness".to_string(), self.data[0].to_string())].into()
    }
}

#[test]
fn a_failed_camera_is_reopened_with_doubling_backoff() {
    let attempts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = attempts.clone();
    let open = move || -> Result<Box<dyn FrameSource>, CaptureError> {
        let mut a = seen.lock().unwrap();
        a.push(Instant::now());
        if a.len() < 3 {
            return Err(CaptureError::DeviceMissing {
                device: "/dev/video0".into(),
            });
        }
        Ok(Box::new(Scripted {
            frames: 3,
            then_fail: false,
            data: [7; 12],
        }))
    };
    let first = Scripted {
        frames: 3,
        then_fail: true,
        data: [1; 12],
    };
    let mut src = ReopeningSource::new(
        "/dev/video0".into(),
        Box::new(first),
        Box::new(open),
        ms(20),
        ms(1000),
    );
    assert_eq!(src.controls_in_force()["brightness"], "1");
    let mut events = String::new();
    let mut first_outage = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no recovery: {events}");
        match src.next_frame() {
            Ok(Some(f)) => events.push(if f.data[0] == 1 { 'a' } else { 'b' }),
            Ok(None) => break,
            Err(e @ CaptureError::Reopening { .. }) => {
                if !events.ends_with('R') {
                    events.push('R');
                }
                first_outage.get_or_insert(e.to_string());
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(events, "aaaRbbb");
    assert_eq!(src.reopens(), 1);
    // The controls read back at the reopen are the ones reported from then on.
    assert_eq!(src.controls_in_force()["brightness"], "7");
    let msg = first_outage.unwrap();
    assert!(
        msg.contains("/dev/video0") && msg.contains("reopened"),
        "{msg}"
    );
    let a = attempts.lock().unwrap();
    assert_eq!(a.len(), 3, "two failed attempts, then success");
    // Backoff doubles: at least 20 ms, then 40 ms between attempts.
    assert!(a[1] - a[0] >= ms(20), "{:?}", a[1] - a[0]);
    assert!(a[2] - a[1] >= ms(40), "{:?}", a[2] - a[1]);
}

/// A paced replay of the samples that fails with ENODEV after `left` frames.
struct FailsAfter {
    inner: ReplaySource,
    left: u32,
}

impl FrameSource for FailsAfter {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.left == 0 {
            return Err(enodev());
        }
        self.left -= 1;
        self.inner.next_frame()
    }
    fn describe(&self) -> String {
        "samples, failing".into()
    }
}

#[test]
fn parts_triggered_while_the_camera_is_down_are_fail_safe_and_inspection_resumes() {
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
    let line = SimLine::new(clock.clone());
    let engine = TractEngine::load(&f32_model()).unwrap();
    let rate = 5.0 / scale() as f64;
    // Frames at t0 + k*200 ms for k = 0, 1, 2, then ENODEV. The device is missing until
    // t1 - 150 ms (reopen attempts fail, backoff 50 ms doubling to 200 ms); the camera is back with
    // frames at t1 + k*200 ms, k = 0..7.
    let t0 = clock.now() + sms(300);
    let t1 = t0 + sms(1400);
    let mut replay = ReplaySource::open(&samples(), false, rate, 64).unwrap();
    replay.start_at(t0);
    let open = move || -> Result<Box<dyn FrameSource>, CaptureError> {
        if MonotonicClock.now() < t1 - sms(150) {
            return Err(CaptureError::DeviceMissing {
                device: "/dev/video0".into(),
            });
        }
        let mut s = ReplaySource::open(&samples(), false, rate, 64)?;
        s.start_at(t1);
        Ok(Box::new(s))
    };
    let source = ReopeningSource::new(
        "/dev/video0".into(),
        Box::new(FailsAfter {
            inner: replay,
            left: 3,
        }),
        Box::new(open),
        sms(50),
        sms(200),
    );
    let mut insp = Inspector::new(
        Box::new(source),
        Box::new(engine),
        threshold(),
        clock.clone(),
    );
    // A photo-eye edge 40 ms before every frame (the simulated input thread may be woken late on
    // a loaded machine; a real edge carries its kernel stamp), and two while the camera is down.
    let mut at: Vec<Duration> = (0..3).map(|k| t0 + sms(200 * k) - sms(40)).collect();
    at.extend([t0 + sms(700), t0 + sms(1000)]);
    at.extend((0..8).map(|k| t1 + sms(200 * k) - sms(40)));
    let edges = at
        .into_iter()
        .map(|at| InputEdge {
            at,
            rising: true,
            lost: 0,
        })
        .collect();
    let mut io = line.io();
    io.trigger = Some(Box::new(SimulatedInput::new(clock.clone(), edges)));
    let mut opts = options(time_schedule(800, 50, 15, Policy::Reject));
    opts.trigger = Some(TriggerSettings {
        debounce: sms(5),
        window: sms(100),
    });
    let stop = AtomicBool::new(false);
    let (s, _) = run(&mut insp, io, opts, &stop, None).unwrap();
    // 3 + 8 inspected (samples: 4 defective first, then 4 good), 2 missed -> rejected.
    assert_eq!(
        (
            s.counts.parts,
            s.frames,
            s.counts.missed,
            s.counts.failsafe_rejected
        ),
        (13, 11, 2, 2),
        "{s:?}"
    );
    assert_eq!(
        (s.counts.ng, s.counts.ok, s.counts.late, s.stalls),
        (7, 4, 0, 1),
        "{s:?}"
    );
    assert_eq!(line.reject.pulses().len(), 9);
    assert!(
        line.alarm.edges().iter().any(|e| e.level == Level::Active),
        "the outage raised the alarm"
    );
    assert_eq!(line.reject.level(), Some(Level::Inactive));
}
