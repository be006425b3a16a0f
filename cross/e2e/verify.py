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
import json
import re
import sys

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
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
