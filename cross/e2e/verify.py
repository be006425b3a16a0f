#!/usr/bin/env python3
"""Checks the whole-system test's reject line, as QEMU saw it, against partguard's own report.

Usage: verify.py RUN_DIR   (with trace.log and results/{run.txt,stats.json} from cross/e2e/run.sh)

QEMU's pl061_set_output trace is an outside observer of the GPIO: the reject line (PL061 line 3)
must rest low, show one rising edge per reject pulse partguard reported (no more, no fewer), each
pulse at least the configured width, and end low (its safe state).
"""
import json
import re
import sys

LINE = 3
PULSE_MS = 200.0


def main(run):
    trace = open(f"{run}/trace.log").read().splitlines()
    # With `-msg timestamp=on`: "PID@SECONDS.MICROS:pl061_set_output DEV setting output N to V"
    pat = re.compile(r"@(\d+\.\d+):pl061_set_output .*setting output (\d+) to (\d+)")
    edges = []
    for raw in trace:
        m = pat.search(raw)
        if not m:
            continue
        t, line, level = float(m.group(1)), int(m.group(2)), int(m.group(3))
        if line != LINE:
            continue
        if not edges or edges[-1][1] != level:
            edges.append((t, level))
    stats = json.load(open(f"{run}/results/stats.json"))
    counts = stats["counts"]
    decisions = [l for l in open(f"{run}/results/run.txt") if l.startswith("part")]
    ng = sum(" NG " in l for l in decisions)
    print(f"reject line edges (host time, level): {edges}")
    print(f"partguard: frames {counts['frames']} OK {counts['ok']} NG {counts['ng']} "
          f"pulses {counts['pulses']} merged {counts['merged']}")
    problems = []
    if not edges or edges[0][1] != 0:
        problems.append("the reject line did not start low (its safe state)")
    if edges and edges[-1][1] != 0:
        problems.append("the reject line did not end low (its safe state)")
    rising = [(edges[i][0], edges[i + 1][0] if i + 1 < len(edges) else None)
              for i in range(len(edges)) if edges[i][1] == 1]
    if len(rising) != counts["pulses"]:
        problems.append(f"{len(rising)} pulses on the line, partguard reported {counts['pulses']}")
    if counts["ng"] != ng:
        problems.append(f"summary NG {counts['ng']} but {ng} NG decision lines")
    if counts["pulses"] + counts["merged"] != counts["ng"] + counts["failsafe_rejected"]:
        problems.append("pulses + merged != NG + fail-safe rejects")
    for start, end in rising:
        if end is None or (end - start) * 1000.0 < PULSE_MS:
            problems.append(f"pulse at {start} shorter than {PULSE_MS} ms (ends {end})")
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
