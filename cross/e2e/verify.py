#!/usr/bin/env python3
"""Checks the whole-system test's reject line, as QEMU saw it, against the parts that were shown.

Usage: verify.py RUN_DIR   (trace.log and results/{feed.txt,run.txt,stats.json} from cross/e2e/run.sh)

results/feed.txt (written in the guest by vivid_feed) lists the part images in the order shown:
`index label path trigger_ns` (guest CLOCK_MONOTONIC). QEMU's pl061_set_output trace is an outside
observer of the GPIO, stamped with the host's clock. The reject line (PL061 line 3) must:
- rest low before and after (its safe state);
- show exactly one pulse per defective image and none for a good one, in order: pulse i belongs
  to the i-th defective image, and partguard judged every image as its label says;
- pulse at the configured delay after each trigger: the guest and host clocks differ by a constant,
  so (pulse time - trigger time) must be the same for every pulse within TIMING_TOL_MS;
- last the configured width (PULSE_MS, up to WIDTH_TOL_MS longer under emulation).
"""
import glob
import json
import re
import struct
import sys
import zlib

LINE = 3
PULSE_MS = 200.0
WIDTH_TOL_MS = 100.0
TIMING_TOL_MS = 100.0


def line_edges(path):
    # With `-msg timestamp=on`: "PID@SECONDS.MICROS:pl061_set_output DEV setting output N to V"
    pat = re.compile(r"@(\d+\.\d+):pl061_set_output .*setting output (\d+) to (\d+)")
    edges = []
    for raw in open(path).read().splitlines():
        m = pat.search(raw)
        if not m or int(m.group(2)) != LINE:
            continue
        t, level = float(m.group(1)), int(m.group(3))
        if not edges or edges[-1][1] != level:
            edges.append((t, level))
    return edges


def png_mean(path):
    """Mean sample value of an 8-bit grey or RGB PNG (what partguard collect writes)."""
    data = open(path, "rb").read()
    pos, idat, (w, h, depth, ctype) = 8, b"", (0, 0, 0, 0)
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert depth == 8 and ctype in (0, 2), f"{path}: depth {depth} colour type {ctype}"
    bpp = 1 if ctype == 0 else 3
    raw, stride = zlib.decompress(idat), w * bpp
    prev, total = bytearray(stride), 0
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        total += sum(line)
        prev = line
    return total / (w * h * bpp)


def camera_controls(run):
    """[camera.controls] on vivid: check lists the controls, collect saves frames that show the
    brightness set, a missing control and an out-of-range value fail check with their names."""
    problems = []
    check = open(f"{run}/results/check.txt").read()
    # (vivid moves brightness's range with the input: 0-255 on the webcam, 384-639 on HDMI)
    if not re.search(r"\n\s+brightness\s+\d+\s+\d+ to \d+ \(default \d+\)", check):
        problems.append("check does not list vivid's brightness control with its range")
    if not re.search(r"\* osd_text_mode\s+\"None\"", check):
        problems.append("check does not mark osd_text_mode as set by [camera.controls]")
    means = {}
    for name, value in [("dark", "40"), ("bright", "220")]:
        rc = open(f"{run}/results/{name}.rc").read().strip()
        images = sorted(glob.glob(f"{run}/results/{name}/*.png"))
        if rc != "0" or len(images) != 3:
            problems.append(f"collect at brightness {value}: exit {rc}, {len(images)} images")
            continue
        manifest = json.load(open(f"{run}/results/{name}/manifest.json"))
        recorded = manifest["sessions"][0]["camera_controls"]
        if recorded.get("brightness") != value or recorded.get("osd_text_mode") != '"None"':
            problems.append(f"the manifest records controls {recorded}, brightness {value} was set")
        means[name] = [round(png_mean(p), 1) for p in images]
    print(f"collected at brightness 40 / 220, mean sample value per image: {means}")
    if len(means) == 2 and min(means["bright"]) < max(means["dark"]) + 40:
        problems.append(f"brightness 220 did not brighten the frames: {means}")
    for name, words in [("missing", ["exposure_time_absolute", "has no control", "brightness"]),
                        ("range", ["brightness", "300", "0 to 255"])]:
        rc = open(f"{run}/results/{name}.rc").read().strip()
        text = open(f"{run}/results/{name}.txt").read()
        print(f"check with a {name} control: exit {rc}: {text.strip().splitlines()[-1][:400]}")
        if rc == "0" or not all(w in text for w in words):
            problems.append(f"check with a {name} control: exit {rc}, does not name {words}: {text!r}")
    return problems


def main(run):
    edges = line_edges(f"{run}/trace.log")
    shown = [l.split() for l in open(f"{run}/results/feed.txt").read().splitlines() if l.strip()]
    parts = [(int(k), label, path, int(ns)) for k, label, path, ns in shown]
    decisions = [l.split() for l in open(f"{run}/results/run.txt") if l.startswith("part ")]
    counts = json.load(open(f"{run}/results/stats.json"))["counts"]
    print(f"reject line edges (host time, level): {edges}")
    print(f"shown: {[(k, label) for k, label, _, _ in parts]}")
    print(f"decisions: {[' '.join(d) for d in decisions]}")
    print(f"partguard: frames {counts['frames']} OK {counts['ok']} NG {counts['ng']} "
          f"pulses {counts['pulses']} late {counts['late']} missed {counts['missed']} "
          f"faults {counts['faults']}")
    problems = []
    if not edges or edges[0][1] != 0:
        problems.append("the reject line did not start low (its safe state)")
    if edges and edges[-1][1] != 0:
        problems.append("the reject line did not end low (its safe state)")
    for key in ["late", "missed", "faults", "overflows"]:
        if counts[key] != 0:
            problems.append(f"{counts[key]} {key} part(s): every shown image must be judged in time")
    if len(decisions) != len(parts):
        problems.append(f"{len(parts)} images shown, {len(decisions)} decisions")
    for (k, label, path, _), d in zip(parts, decisions):
        want = "OK" if label == "good" else "NG"
        if d[2] != want:
            problems.append(f"image {k} ({path}, {label}) judged {d[2]} (score {d[4]}), expected {want}")
    pulses = [(edges[i][0], edges[i + 1][0] if i + 1 < len(edges) else None)
              for i in range(len(edges)) if edges[i][1] == 1]
    defective = [p for p in parts if p[1] != "good"]
    if len(pulses) != len(defective):
        problems.append(f"{len(pulses)} pulses on the line for {len(defective)} defective images")
    if counts["pulses"] != len(pulses):
        problems.append(f"partguard reported {counts['pulses']} pulses, the line showed {len(pulses)}")
    for start, end in pulses:
        width = None if end is None else (end - start) * 1000.0
        if width is None or not PULSE_MS <= width <= PULSE_MS + WIDTH_TOL_MS:
            problems.append(f"pulse at {start}: width {width} ms, configured {PULSE_MS} ms")
    offsets = [start * 1e3 - ns / 1e6 for (start, _), (_, _, _, ns) in zip(pulses, defective)]
    if offsets:
        spread = max(offsets) - min(offsets)
        print(f"pulse - trigger offsets (ms, host minus guest clock): {[round(o, 1) for o in offsets]}, "
              f"spread {spread:.1f} ms")
        if spread > TIMING_TOL_MS:
            problems.append(f"pulses are not at one fixed delay after their triggers: spread {spread:.1f} ms "
                            f"> {TIMING_TOL_MS} ms")
    # The page's live status and /metrics, fetched in the guest after every part had passed.
    try:
        live = json.load(open(f"{run}/results/status.json"))["counts"]
        metrics = {}
        for line in open(f"{run}/results/metrics.txt").read().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                metrics[key] = float(value)
    except (OSError, ValueError, KeyError) as e:
        live, metrics = None, None
        problems.append(f"the guest could not fetch /api/status and /metrics: {e}")
    if live is not None:
        good = len(parts) - len(defective)
        ng_key = 'partguard_parts_total{verdict="ng"}'
        print(f"page (guest 127.0.0.1): parts {live['parts']} OK {live['ok']} NG {live['ng']} "
              f"pulses {live['pulses']}; metrics NG {metrics.get(ng_key)} "
              f"pulses {metrics.get('partguard_reject_pulses_total')}")
        for name, got, want in [
            ("/api/status parts", live["parts"], len(parts)),
            ("/api/status ok", live["ok"], good),
            ("/api/status ng", live["ng"], len(pulses)),
            ("/api/status pulses", live["pulses"], len(pulses)),
            ("/metrics parts_total ok", metrics.get('partguard_parts_total{verdict="ok"}'), good),
            ("/metrics parts_total ng", metrics.get('partguard_parts_total{verdict="ng"}'), len(pulses)),
            ("/metrics reject_pulses_total", metrics.get("partguard_reject_pulses_total"), len(pulses)),
            ("/metrics frames_inspected_total", metrics.get("partguard_frames_inspected_total"), len(parts)),
        ]:
            if got != want:
                problems.append(f"{name} is {got}, the reject line and the images say {want}")
    # partguard safe-state while partguard run held the reject line.
    busy_rc = open(f"{run}/results/busy.rc").read().strip()
    busy = open(f"{run}/results/busy.txt").read()
    print(f"second process on the reject line: exit {busy_rc}: {busy.strip()}")
    if busy_rc in ("0", ""):
        problems.append("a second process could take the reject line while partguard held it")
    if "reject: GPIO line 3 on" not in busy or "is already in use" not in busy:
        problems.append(f"the busy-line error does not name the line and the cause: {busy!r}")
    problems += camera_controls(run)
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
