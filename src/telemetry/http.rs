//! The page on the device and its API, served by `axum` (the tokio project's HTTP framework) on the
//! telemetry thread:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (one HTML file, no external assets) |
//! | `GET /api/status` | counts, rate, threshold and its origin, model, health, MQTT |
//! | `GET /api/decisions?limit=N` | the last decisions, newest first (at most 600) |
//! | `GET /api/archive` | the reject archive's images, newest first |
//! | `GET /archive/{name}` / `GET /archive/{name}/thumb` | one archive image (PNG) / its thumbnail (JPEG) |
//! | `GET /api/frame.jpg` | the latest frame beside its heatmap overlay |
//! | `GET /metrics` | Prometheus text exposition |
//! | `POST /api/reload` | re-read the calibration (needs `Authorization: Bearer <http.token>`) |
//!
//! Everything is read-only unless `[http] token` is set; archive names are checked against the
//! archive's own naming pattern before any file is touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;

use super::view::View;
use super::Telemetry;
use crate::decide::Verdict;

const PAGE: &str = include_str!("page.html");
/// Thumbnails kept in memory.
const THUMBS_KEPT: usize = 256;
const THUMB_WIDTH: u32 = 320;
/// Archive entries listed at most.
const ARCHIVE_LISTED: usize = 200;

/// What the handlers share.
pub(super) struct AppState {
    pub telemetry: Telemetry,
    pub view: Arc<Mutex<View>>,
    pub registry: Registry,
    pub token: Option<String>,
    pub mqtt_broker: Option<String>,
    frame_jpeg: Mutex<(u64, Vec<u8>)>,
    thumbs: Mutex<HashMap<String, Vec<u8>>>,
}

impl AppState {
    pub fn new(
        telemetry: Telemetry,
        view: Arc<Mutex<View>>,
        registry: Registry,
        token: Option<String>,
        mqtt_broker: Option<String>,
    ) -> AppState {
        AppState {
            telemetry,
            view,
            registry,
            token,
            mqtt_broker,
            frame_jpeg: Mutex::new((0, Vec::new())),
            thumbs: Mutex::new(HashMap::new()),
        }
    }
}

pub(super) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/decisions", get(decisions))
        .route("/api/archive", get(archive_list))
        .route("/archive/{name}", get(archive_image))
        .route("/archive/{name}/thumb", get(archive_thumb))
        .route("/api/frame.jpg", get(frame))
        .route("/metrics", get(metrics))
        .route("/api/reload", post(reload))
        .fallback(not_found)
        .with_state(state)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page; see / and /api/status (README, Watching the line)",
    )
}

async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    let hub = &s.telemetry.hub;
    let live = hub.live.lock().map(|l| *l).unwrap_or_default();
    let origin = hub
        .threshold_origin
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    let (rate, since_last, mqtt) = match s.view.lock() {
        Ok(v) => (
            v.rate,
            v.last_part.map(|t| t.elapsed().as_secs_f64()),
            v.mqtt,
        ),
        Err(_) => (0.0, None, Default::default()),
    };
    let camera = if live.ended {
        "ended"
    } else {
        match since_last {
            None => "waiting for the first part",
            Some(t) if t > 5.0 && live.summary.stalls > 0 => "stalled",
            Some(t) if t > 5.0 => "no parts",
            Some(_) => "ok",
        }
    };
    let c = &live.summary;
    let doc = serde_json::json!({
        "station": &hub.info,
        "threshold": live.threshold,
        "threshold_origin": origin,
        "running": !live.ended,
        "counts": c,
        "parts_per_second": rate,
        "health": {
            "camera": camera,
            "camera_stalls": c.stalls,
            "seconds_since_last_part": since_last,
            "reject_output": if c.output_errors == 0 { "ok".to_owned() } else { format!("{} write errors", c.output_errors) },
            "alarm": live.alarm,
            "drift_warnings": live.drift_warnings,
            "reject_pending": live.reject_pending,
            "telemetry_dropped": hub.records_dropped.load(Ordering::Relaxed),
        },
        "mqtt": s.mqtt_broker.as_ref().map(|b| serde_json::json!({"broker": b, "counts": mqtt})),
        "reload": if s.token.is_some() { "POST /api/reload with Authorization: Bearer <token>" } else { "disabled (no http.token)" },
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(doc)).into_response()
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn decisions(State(s): State<Arc<AppState>>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(100).min(super::view::DECISIONS_KEPT);
    let list: Vec<serde_json::Value> = match s.view.lock() {
        Ok(v) => v
            .decisions
            .iter()
            .rev()
            .take(limit)
            .map(|r| {
                serde_json::json!({
                    "seq": r.seq,
                    "time": crate::clock::utc_from_unix_us(r.captured_unix_us),
                    "score": r.score.is_finite().then_some(r.score),
                    "threshold": r.threshold,
                    "verdict": r.verdict.as_str(),
                    "fault": match r.verdict { Verdict::Fault(f) => Some(f.as_str()), _ => None },
                    "capture_to_decision_ms": f64::from(r.total_us) / 1000.0,
                })
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(list)).into_response()
}

/// An archive file name as the archive writes it (`NNNNNNNN-YYYYMMDDTHHMMSSZ-partSEQ-VERDICT-SCORE.png`):
/// only `[A-Za-z0-9.-]`, no leading dot, no `..`, eight digits first, `.png` last. Anything else
/// (slashes, `..`, percent-encoded tricks after decoding, NUL) is refused before a path is built.
pub fn valid_archive_name(name: &str) -> bool {
    name.len() <= 120
        && name.len() > 13
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.contains("..")
        && name.as_bytes()[..8].iter().all(u8::is_ascii_digit)
        && name.as_bytes()[8] == b'-'
        && name.ends_with(".png")
}

fn archive_dir(s: &AppState) -> Option<&Path> {
    s.telemetry.hub.info.archive_dir.as_deref()
}

/// The archive file `name`, if the name is valid and it is a regular file in the archive folder.
fn archive_file(s: &AppState, name: &str) -> Result<PathBuf, (StatusCode, &'static str)> {
    let Some(dir) = archive_dir(s) else {
        return Err((
            StatusCode::NOT_FOUND,
            "no reject archive on this station ([archive] is not configured)",
        ));
    };
    if !valid_archive_name(name) {
        return Err((StatusCode::BAD_REQUEST, "not an archive file name"));
    }
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        _ => Err((
            StatusCode::NOT_FOUND,
            "no such archive image (the ring may have deleted it)",
        )),
    }
}

async fn archive_list(State(s): State<Arc<AppState>>) -> Response {
    let Some(dir) = archive_dir(&s) else {
        return Json(serde_json::json!({ "enabled": false, "images": [] })).into_response();
    };
    let mut names: Vec<(String, u64, Option<SystemTime>)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok()?;
                (valid_archive_name(&name) && meta.is_file())
                    .then(|| (name, meta.len(), meta.modified().ok()))
            })
            .collect(),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot read the archive folder: {e}"),
            )
        }
    };
    // The ring index leads the name: newest first.
    names.sort_by(|a, b| b.0.cmp(&a.0));
    let images: Vec<serde_json::Value> = names
        .iter()
        .take(ARCHIVE_LISTED)
        .map(|(name, bytes, modified)| {
            let secs = modified
                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            serde_json::json!({
                "name": name,
                "bytes": bytes,
                "written": crate::clock::utc_from_unix(secs),
                "url": format!("/archive/{name}"),
                "thumb": format!("/archive/{name}/thumb"),
            })
        })
        .collect();
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "enabled": true, "total": names.len(), "images": images })),
    )
        .into_response()
}

async fn archive_image(State(s): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Response {
    let path = match archive_file(&s, &name) {
        Ok(p) => p,
        Err((status, message)) => return error(status, message),
    };
    match std::fs::read(&path) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes).into_response(),
        Err(_) => error(StatusCode::NOT_FOUND, "no such archive image"),
    }
}

async fn archive_thumb(State(s): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Response {
    let path = match archive_file(&s, &name) {
        Ok(p) => p,
        Err((status, message)) => return error(status, message),
    };
    if let Some(jpeg) = s.thumbs.lock().ok().and_then(|t| t.get(&name).cloned()) {
        return jpeg_response(jpeg);
    }
    let thumb = image::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|img| {
            let w = THUMB_WIDTH.min(img.width().max(1));
            let h = (u64::from(img.height()) * u64::from(w) / u64::from(img.width().max(1))).max(1)
                as u32;
            let small = image::imageops::thumbnail(&img.to_rgb8(), w, h);
            encode_jpeg(small.as_raw(), w, h)
        });
    match thumb {
        Ok(jpeg) => {
            if let Ok(mut t) = s.thumbs.lock() {
                if t.len() >= THUMBS_KEPT {
                    t.clear();
                }
                t.insert(name, jpeg.clone());
            }
            jpeg_response(jpeg)
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot read the archive image: {e}"),
        ),
    }
}

fn encode_jpeg(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode(rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn jpeg_response(jpeg: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        jpeg,
    )
        .into_response()
}

/// The latest frame (the region the model sees) beside it under its heatmap. Asking for it is
/// what makes the line copy frames, a few times a second, for the next few seconds.
async fn frame(State(s): State<Arc<AppState>>) -> Response {
    s.telemetry.note_frame_interest();
    let copy = match s.telemetry.hub.frame.lock() {
        Ok(v) if v.version > 0 && v.width > 0 => {
            let cached = s
                .frame_jpeg
                .lock()
                .map(|c| c.0 == v.version)
                .unwrap_or(false);
            if cached {
                None
            } else {
                Some((
                    v.version,
                    v.rgb.clone(),
                    v.width,
                    v.height,
                    v.map.clone(),
                    v.map_width,
                    v.map_height,
                ))
            }
        }
        _ => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no frame yet; the line copies one within a second of this request",
            )
        }
    };
    if let Some((version, rgb, w, h, map, mw, mh)) = copy {
        let map = (mw > 0 && mh > 0).then_some((map.as_slice(), mw, mh));
        let mut picture = Vec::new();
        let (pw, ph) = crate::archive::part_beside_heatmap(&rgb, w, h, map, &mut picture);
        let side = encode_jpeg(&picture, pw as u32, ph as u32);
        match side {
            Ok(jpeg) => {
                if let Ok(mut c) = s.frame_jpeg.lock() {
                    *c = (version, jpeg);
                }
            }
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot encode the frame: {e}"),
                )
            }
        }
    }
    match s.frame_jpeg.lock() {
        Ok(c) => jpeg_response(c.1.clone()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "frame cache unavailable"),
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::metrics::render(&s.registry),
    )
        .into_response()
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn reload(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(token) = &s.token else {
        return error(
            StatusCode::FORBIDDEN,
            "this station is read-only: set [http] token to allow reloading the calibration over HTTP",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same_secret(g.trim().as_bytes(), token.as_bytes()) => {
            s.telemetry
                .hub
                .reload_requested
                .store(true, Ordering::Release);
            log::info!("calibration reload requested over HTTP");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"reload": "requested; the line re-reads the calibration between two parts"})),
            )
                .into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({"error": "missing or wrong Authorization: Bearer token"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_only_the_archives_own() {
        assert!(valid_archive_name(
            "00000012-20261202T101500Z-part17-NG-0.2345.png"
        ));
        assert!(valid_archive_name(
            "00000013-20261202T101500Z-part18-FAULT-nan.png"
        ));
        for hostile in [
            "../../etc/passwd",
            "..%2f..%2fetc%2fpasswd",
            "00000012-../../../etc/shadow.png",
            "00000012-x/../../y.png",
            "00000012-a\0.png",
            "/etc/passwd",
            "00000012-20261202T101500Z-part17-NG-0.2345.png.sh",
            ".00000012-x.png",
            "00000012-..png",
            "",
            "0000001-short.png",
            "00000012-20261202T101500Z-part17-NG-0.2345.PNG\\..\\x.png",
        ] {
            assert!(!valid_archive_name(hostile), "{hostile:?} was accepted");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!same_secret(b"abcdef0123456789", b"abcdef012345678"));
        assert!(!same_secret(b"abcdef0123456789", b"abcdef0123456780"));
    }
}
