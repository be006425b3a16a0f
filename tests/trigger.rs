//! The software trigger: one datagram on its UNIX socket is one part in position.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use partguard::clock::monotonic_now;
use partguard::gpio::GpioError;
use partguard::gpio::{EdgeInput, SocketTrigger};

#[test]
fn each_datagram_is_one_rising_edge_stamped_on_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trigger");
    let mut trig = SocketTrigger::bind(&path).unwrap();
    assert!(trig.describe().contains("trigger"));
    // Nothing sent: a timeout, not an edge.
    assert_eq!(trig.wait_edge(Duration::from_millis(20)).unwrap(), None);
    let tx = UnixDatagram::unbound().unwrap();
    let before = monotonic_now();
    tx.send_to(b"part", &path).unwrap();
    tx.send_to(b"part", &path).unwrap();
    let a = trig.wait_edge(Duration::from_secs(5)).unwrap().unwrap();
    let b = trig.wait_edge(Duration::from_secs(5)).unwrap().unwrap();
    assert!(a.rising && b.rising);
    assert!(a.at >= before && b.at >= a.at && a.at <= monotonic_now());
    assert_eq!(trig.wait_edge(Duration::from_millis(1)).unwrap(), None);
    // A socket another process receives on is never taken over (`check` beside a running
    // partguard); the socket is removed on drop.
    let err = SocketTrigger::bind(&path).err().unwrap();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(trig);
    assert!(!path.exists());
    // A stale socket (its owner gone) is replaced.
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let again = SocketTrigger::bind(&path).unwrap();
    drop(again);
}

#[test]
fn a_path_that_is_not_a_socket_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "keep me").unwrap();
    let err = SocketTrigger::bind(&path).err().unwrap();
    assert!(matches!(
        err,
        GpioError::Socket {
            role: "trigger",
            ..
        }
    ));
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    let missing = dir.path().join("no/such/dir/trigger");
    let err = SocketTrigger::bind(&missing).err().unwrap();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn edges_the_kernel_dropped_on_the_photo_eye_are_reported_beside_the_parts() {
    use partguard::clock::{Clock, MonotonicClock};
    use partguard::gpio::{watch_trigger, InputEdge, SimulatedInput, TriggerEvent};
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(MonotonicClock);
    let t0 = clock.now();
    let ms = Duration::from_millis;
    let edge = |at, lost| InputEdge {
        at,
        rising: true,
        lost,
    };
    // parts at 0 and 100 ms; 3 edges dropped before the one at 200 ms
    let mut input = SimulatedInput::new(
        clock.clone(),
        vec![edge(t0, 0), edge(t0 + ms(100), 0), edge(t0 + ms(200), 3)],
    );
    let events = std::cell::RefCell::new(Vec::new());
    let end = t0 + ms(200);
    watch_trigger(
        &mut input,
        ms(5),
        || events.borrow().len() < 4 && clock.now() < end + Duration::from_secs(20),
        |e| events.borrow_mut().push(e),
    )
    .unwrap();
    let events = events.into_inner();
    assert_eq!(
        events,
        [
            TriggerEvent::Part(t0),
            TriggerEvent::Part(t0 + ms(100)),
            TriggerEvent::Dropped {
                at: t0 + ms(200),
                edges: 3
            },
            TriggerEvent::Part(t0 + ms(200)),
        ]
    );
}
