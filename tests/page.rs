//! The page on the device, end to end through the binary: its API and `/metrics` against the
//! run's `--stats-json`, hostile requests, the bearer token, `check`'s report, and the page in a
//! real headless Chromium (Debian's `chromium`, installed by `cross/setup-debian.sh`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::station::{
    config, get, get_json, metrics, request, stats_counts, wait_until_ended, Station, TOKEN,
};

#[test]
fn the_api_and_metrics_agree_with_the_stats_json_and_refuse_hostile_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        0.0,
        &format!("[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    );
    let stats = dir.path().join("stats.json");
    let station = Station::serving(&cfg, 24, &stats);
    let addr = station.address();
    // A scrape while the line runs (or has just ended, on a fast machine) is a valid exposition.
    let during = metrics(addr);
    assert!(during.contains_key("partguard_parts_total{verdict=\"ok\"}"));

    let status = wait_until_ended(addr);
    let counts = stats_counts(&stats);
    assert_eq!(
        status["counts"], counts,
        "the page's counts differ from --stats-json"
    );
    assert_eq!(counts["frames"], 24);
    let m = metrics(addr);
    for (verdict, key) in [
        ("ok", "ok"),
        ("ng", "ng"),
        ("late", "late"),
        ("missed", "missed"),
        ("fault", "faults"),
        ("overflow", "overflows"),
    ] {
        assert_eq!(
            m[&format!("partguard_parts_total{{verdict=\"{verdict}\"}}")],
            counts[key].as_f64().unwrap(),
            "{verdict}"
        );
    }
    for (metric, key) in [
        ("partguard_frames_inspected_total", "frames"),
        ("partguard_reject_pulses_total", "pulses"),
        ("partguard_archive_written_total", "archived"),
        ("partguard_archive_dropped_total", "archive_dropped"),
        ("partguard_camera_stalls_total", "stalls"),
    ] {
        assert_eq!(m[metric], counts[key].as_f64().unwrap(), "{metric}");
    }
    assert_eq!(m["partguard_capture_to_decision_seconds_count"], 24.0);
    assert_eq!(m["partguard_inference_seconds_count"], 24.0);
    assert_eq!(
        m["partguard_reject_onset_error_seconds_count"],
        counts["pulses"].as_f64().unwrap()
    );
    assert_eq!(m["partguard_telemetry_dropped_total"], 0.0);
    assert_eq!(status["station"]["model_name"], "bottle_sspcab");

    let decisions = get_json(addr, "/api/decisions?limit=600");
    let decisions = decisions.as_array().unwrap();
    assert_eq!(decisions.len(), 24);
    assert_eq!(decisions[0]["seq"], 23, "newest first");

    // The archive: every image listed, a thumbnail and the full image open.
    let archive = get_json(addr, "/api/archive");
    assert_eq!(archive["total"], counts["archived"]);
    let first = &archive["images"][0];
    let (s, ctype, thumb) = get(addr, first["thumb"].as_str().unwrap());
    assert_eq!((s, ctype.as_str()), (200, "image/jpeg"));
    assert_eq!(&thumb[..2], &[0xFF, 0xD8]);
    let (s, _, png) = get(addr, first["url"].as_str().unwrap());
    assert_eq!(s, 200);
    assert_eq!(&png[1..4], b"PNG");

    // Hostile names: never a file outside the archive, never a symlink out of it.
    let archive_dir = dir.path().join("archive");
    std::os::unix::fs::symlink(
        "/etc/passwd",
        archive_dir.join("99999999-20260101T000000Z-part1-NG-0.9.png"),
    )
    .unwrap();
    for path in [
        "/archive/..%2F..%2F..%2Fetc%2Fpasswd",
        "/archive/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/archive/../../etc/passwd",
        "/archive/00000001-..%2F..%2Fetc%2Fpasswd.png",
        "/archive/00000001-x%00.png",
        "/archive/99999999-20260101T000000Z-part1-NG-0.9.png",
        "/archive/99999999-20260101T000000Z-part1-NG-0.9.png/thumb",
        "/archive/00000001-20260101T000000Z-part1-NG-0.9.png",
        "/archive/%2Fetc%2Fpasswd",
        "/..%2f..%2fetc/passwd",
    ] {
        let (s, _, body) = get(addr, path);
        assert!(s == 400 || s == 404, "{path}: HTTP {s}");
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{path} leaked a file"
        );
    }
    // Garbage and oversized requests get an error, and the server goes on.
    let (s, _, _) = request(addr, "GARBAGE\r\n\r\n");
    assert_eq!(s, 400);
    let huge = format!(
        "GET /api/status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (s, _, _) = request(addr, &huge);
    assert_ne!(s, 200, "a 1 MiB header was served");
    assert_eq!(get(addr, "/api/status").0, 200);

    // Changing the line needs the token.
    let post = |auth: &str| {
        request(
            addr,
            &format!(
                "POST /api/reload HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .0
    };
    assert_eq!(post(""), 401);
    assert_eq!(
        post("Authorization: Bearer wrong-token-0123456789\r\n"),
        401
    );
    assert_eq!(post(&format!("Authorization: Bearer {TOKEN}\r\n")), 202);
    assert_eq!(get(addr, "/api/reload").0, 405);

    let (exit, _) = station.stop();
    assert!(exit.success(), "{exit}");
}

#[test]
fn without_a_token_the_page_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 0.0, "[http]\nlisten = \"127.0.0.1:0\"\n");
    let station = Station::start(&cfg, &["--frames", "2", "--linger", "600"]);
    let addr = station.address();
    let (s, _, body) = request(
        addr,
        &format!("POST /api/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    station.stop();
}

/// Chromium, headless, on the page; its DOM after `budget_ms` of the page's life.
fn chromium(url: &str, budget_ms: u32, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,1150",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"));
    match screenshot {
        Some(p) => c.arg(format!("--screenshot={}", p.display())),
        None => c.arg("--dump-dom"),
    };
    let out = c.arg(url).stderr(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run chromium ({e}): install it with `apt-get install chromium` (cross/setup-debian.sh does)")
    });
    assert!(out.status.success(), "chromium failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The text of the element with `id` in a dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[test]
fn the_page_in_a_real_browser_shows_the_runs_counts_frame_and_archive() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4.0, "[http]\nlisten = \"127.0.0.1:0\"\n");
    let stats = dir.path().join("stats.json");
    let station = Station::serving(&cfg, 40, &stats);
    let addr = station.address();
    let url = format!("http://{addr}/");
    // While the line runs (40 parts at 4 parts/s): the page asks for frames, the line copies them.
    let live = chromium(&url, 4000, None);
    assert!(live.contains("id=\"frame\""), "{live}");
    let status = wait_until_ended(addr);
    let counts = stats_counts(&stats);
    assert_eq!(status["counts"], counts);

    let dom = chromium(&url, 4000, None);
    assert_eq!(element_text(&dom, "state"), "run ended");
    for (id, key) in [
        ("c-ok", "ok"),
        ("c-ng", "ng"),
        ("c-late", "late"),
        ("c-missed", "missed"),
        ("c-faults", "faults"),
        ("c-parts", "parts"),
    ] {
        assert_eq!(
            element_text(&dom, id),
            counts[key].to_string(),
            "#{id} vs --stats-json {key}"
        );
    }
    // The frame image loaded (its src is set only from a loaded image).
    let frame_tag = &dom[dom.find("id=\"frame\"").unwrap()..];
    let frame_tag = &frame_tag[..frame_tag.find('>').unwrap()];
    assert!(
        frame_tag.contains("data-loaded=\"1\""),
        "the frame did not load: {frame_tag}"
    );
    // An archive thumbnail loaded, and its link opens the full image.
    assert!(counts["archived"].as_u64().unwrap() > 0);
    assert!(
        dom.contains("data-loaded=\"1\" alt=\"0") || dom.matches("data-loaded=\"1\"").count() >= 2,
        "no archive thumbnail loaded"
    );
    let href_at = dom.find("href=\"/archive/").expect("no archive link");
    let href = &dom[href_at + 6..];
    let href = &href[..href.find('"').unwrap()];
    let (s, ctype, _) = get(addr, href);
    assert_eq!((s, ctype.as_str()), (200, "image/png"), "{href}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page.png");
    chromium(&url, 4000, Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    eprintln!("screenshot: {}", shot.display());
    let (exit, _) = station.stop();
    assert!(exit.success());
}

#[test]
fn check_says_where_the_page_is_served_and_a_busy_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let check = |listen: &str| {
        let cfg = config(dir.path(), 0.0, &format!("[http]\nlisten = \"{listen}\"\n"));
        let out = common::partguard("warn")
            .arg("--config")
            .arg(&cfg)
            .arg("check")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let local = check("127.0.0.1:8080");
    assert!(
        local.contains("page and /metrics: http://127.0.0.1:8080/ (this machine only; read-only)"),
        "{local}"
    );
    let open = check("0.0.0.0:8080");
    assert!(open.contains("OPEN TO THE NETWORK"), "{open}");

    // A port someone else holds: `run` stops before the line starts, naming the field.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = config(
        dir.path(),
        0.0,
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let out = common::partguard("warn")
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--frames", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "[http] listen = \"127.0.0.1:{port}\": cannot listen there"
        )) && stderr.contains("pick a free port"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("part "),
        "a part was inspected"
    );
}
