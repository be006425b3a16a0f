//! The `telemetry` thread: a single-threaded tokio runtime at low CPU priority (nice 10) that
//! drains the line's part results, serves `[http]` and publishes to `[mqtt]`. Started before the
//! line, stopped after it (the last counts are published, MQTT says `offline`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::http::{router, AppState};
use super::mqtt::{self, MqttError, Publisher};
use super::view::View;
use super::Telemetry;
use crate::config::{HttpConfig, MqttConfig};

/// How often the telemetry thread takes the line's results.
const DRAIN_PERIOD: Duration = Duration::from_millis(20);
/// Nice value of the telemetry thread (the line's threads keep theirs, or SCHED_FIFO).
const NICE: i32 = 10;

/// What went wrong starting the page or MQTT.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("[http] listen = \"{addr}\": cannot listen there: {source}; pick a free port or another address")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error("cannot start the telemetry thread: {source}")]
    Thread {
        #[source]
        source: std::io::Error,
    },
}

/// The running telemetry thread. Dropping it stops the thread (as [`TelemetryService::stop`]).
pub struct TelemetryService {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    addr: Option<SocketAddr>,
}

impl TelemetryService {
    /// Binds `[http]`'s address (so a busy port fails here, before the line starts), sets up
    /// `[mqtt]`, and starts the thread.
    pub fn start(
        telemetry: &Telemetry,
        http: Option<&HttpConfig>,
        mqtt_cfg: Option<&MqttConfig>,
    ) -> Result<TelemetryService, TelemetryError> {
        let listener = match http {
            Some(h) => {
                let listen_err = |source| TelemetryError::Listen {
                    addr: h.listen.clone(),
                    source,
                };
                let l = std::net::TcpListener::bind(h.listen.as_str()).map_err(listen_err)?;
                l.set_nonblocking(true).map_err(listen_err)?;
                Some(l)
            }
            None => None,
        };
        let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let view = Arc::new(Mutex::new(View::new()));
        let mqtt = match mqtt_cfg {
            Some(cfg) => {
                let (p, ev) = mqtt::connect(cfg, &telemetry.hub.info.model_sha256, view.clone())?;
                Some((
                    Arc::new(Mutex::new(p)),
                    ev,
                    cfg.broker.clone(),
                    Duration::from_secs_f64(cfg.status_interval_s),
                ))
            }
            None => None,
        };
        let state = http.map(|h| {
            Arc::new(AppState::new(
                telemetry.clone(),
                view.clone(),
                super::metrics::registry(telemetry.hub.clone(), view.clone()),
                h.token.clone(),
                mqtt_cfg.map(|m| m.broker.clone()),
            ))
        });
        let (stop, stop_rx) = watch::channel(false);
        let telemetry = telemetry.clone();
        let thread = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || {
                lower_priority();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        log::error!("telemetry: cannot start its runtime ({e}); no page, metrics or MQTT this run");
                        return;
                    }
                };
                runtime.block_on(serve(telemetry, view, listener, state, mqtt, stop_rx));
            })
            .map_err(|source| TelemetryError::Thread { source })?;
        if let Some(a) = addr {
            log::info!("page, API and /metrics on http://{a}/");
        }
        Ok(TelemetryService {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// The address the page is served on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Publishes what is left, says `offline` to the broker and stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TelemetryService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Nice 10 for the calling thread: the page and the broker yield to the line.
fn lower_priority() {
    // SAFETY: gettid and setpriority only read their arguments.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
    };
    if rc != 0 {
        log::debug!(
            "telemetry: cannot lower its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

type MqttParts = (Arc<Mutex<Publisher>>, rumqttc::EventLoop, String, Duration);

async fn serve(
    telemetry: Telemetry,
    view: Arc<Mutex<View>>,
    listener: Option<std::net::TcpListener>,
    state: Option<Arc<AppState>>,
    mqtt: Option<MqttParts>,
    stop: watch::Receiver<bool>,
) {
    if let (Some(l), Some(state)) = (listener, state) {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    if let Err(e) = axum::serve(l, router(state))
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        log::error!("[http] server stopped: {e}");
                    }
                });
            }
            Err(e) => log::error!("[http] cannot serve: {e}"),
        }
    }
    let (publisher, mqtt_task, status_every) = match mqtt {
        Some((p, ev, broker, every)) => {
            let task = tokio::spawn(mqtt::drive(ev, p.clone(), broker, stop.clone()));
            (Some(p), Some(task), every)
        }
        None => (None, None, Duration::MAX),
    };
    let mut tick = tokio::time::interval(DRAIN_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_rate = Instant::now();
    let mut next_status = Instant::now() + status_every.min(Duration::from_secs(86_400));
    let mut stop_rx = stop.clone();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop_rx.wait_for(|s| *s) => true,
        };
        drain(&telemetry, &view, publisher.as_ref());
        let now = Instant::now();
        let live = telemetry.hub.live.lock().map(|l| *l).unwrap_or_default();
        if now >= next_rate {
            if let Ok(mut v) = view.lock() {
                v.tick(live.summary.counts.parts, now);
            }
            next_rate = now + Duration::from_secs(1);
        }
        if let Some(p) = &publisher {
            if now >= next_status || stopping {
                let rate = view.lock().map(|v| v.rate).unwrap_or(0.0);
                if let Ok(mut p) = p.lock() {
                    p.status(&live, rate);
                }
                next_status = now + status_every;
            }
        }
        if stopping {
            break;
        }
    }
    if let (Some(p), Some(task)) = (publisher, mqtt_task) {
        if let Ok(mut p) = p.lock() {
            let left = p.buffered();
            if left > 0 {
                log::warn!(
                    "[mqtt] {left} part results still waiting for the broker at the stop; not sent"
                );
            }
            p.goodbye();
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        if let Ok(v) = view.lock() {
            let m = v.mqtt;
            log::info!(
                "[mqtt] part results published {}, dropped {} (broker away, buffer full), {} reconnects",
                m.published,
                m.dropped,
                m.reconnects
            );
        }
    }
}

/// Takes every waiting result: into the view (page, metrics) and to the broker.
fn drain(telemetry: &Telemetry, view: &Mutex<View>, publisher: Option<&Arc<Mutex<Publisher>>>) {
    let now = Instant::now();
    let mut p = publisher.and_then(|p| p.lock().ok());
    while let Some(r) = telemetry.next_record() {
        if let Ok(mut v) = view.lock() {
            v.observe(&r, now);
        }
        if let Some(p) = p.as_mut() {
            p.offer(r);
        }
    }
}
