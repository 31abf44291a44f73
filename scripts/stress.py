"""Overload and soak scenarios on the native stack (scripts/up), driven by the load generator.

    scripts/stress overload [--dev] [--model M] [--capacity RPS] [--phase-secs S]
    scripts/stress soak     [--dev] [--model M] [--capacity RPS] [--minutes N] [--load 0.8]

Both start `scripts/up` (its own NATS hub and leaf nodes, the store, scheduler, intake and three
workers, two of them on EMULATED edge sites), sample the resident memory (VmRSS) of every process
of the stack once a second, and run `synergai-loadgen run` against the hub.

Capacity is measured, not predicted: unless --capacity is given, a calibration run offers far
more than the stack can serve for a while and the capacity is the rate of answers with a result
(200) over its second half.

overload: three phases in one load-generator run: 0.5x capacity (baseline), 3x capacity
(overload), 0.5x capacity (recovery). Per phase it prints what was offered, answered and how, the
latency of results and of refusals (shedding must be quick), and the peak memory of every
process; then how long after the overload latency came back to the baseline's.

soak: N minutes (10 by default) at 0.8x capacity; after a warm-up (the first fifth of the run,
at least one minute, or --warmup-s) the RSS of every process in the last minute is compared with
the first minute after warm-up: growth beyond 10% is reported as a failure (exit status 1).
Reply claims are kept for 10 minutes (one JetStream message per request), so the NATS hub's
memory grows for the first 10 minutes of any load: `--minutes 21 --warmup-s 660` measures ten
minutes after that steady state is reached.

Everything lands in target/stress/<scenario>-<time>/ (report.json of the loadgen, records.csv,
rss.csv, summary.txt). This is a benchmark: it prints measurements taken in one run on a shared
machine; nothing in CI runs it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HUB = "nats://127.0.0.1:4232"


def log(msg: str) -> None:
    print(f"stress: {msg}", file=sys.stderr, flush=True)


class Stack:
    """scripts/up in the background; its processes by name."""

    def __init__(self, out: Path, dev: bool, models: str):
        self.out = out
        self.dev = dev
        self.log_path = out / "up.log"
        env = dict(os.environ)
        env["SYNERGAI_UP_DIR"] = str(out / "up")
        env["SYNERGAI_UP_MODELS"] = models
        env.setdefault("SYNERGAI_TELEMETRY__LOG_FILTER", "warn")
        args = ["scripts/up"] + (["--dev"] if dev else [])
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pids: dict[str, int] = {}

    def wait_up(self, timeout_s: float = 3600) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            text = self.log_path.read_text(errors="replace")
            for name, pid in re.findall(r"^up: (\S+) \(pid (\d+)\)", text, re.M):
                self.pids[name] = int(pid)
            if "SynergAI is up." in text:
                return
            if self.proc.poll() is not None:
                raise SystemExit(f"stress: scripts/up exited; see {self.log_path}:\n{text[-3000:]}")
            time.sleep(0.5)
        raise SystemExit(f"stress: scripts/up not up after {timeout_s} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()

    @property
    def bin(self) -> Path:
        return ROOT / "target" / ("debug" if self.dev else "release")


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Samples every process's RSS once a second into rss.csv (t_s, process, rss_kib)."""

    def __init__(self, pids: dict[str, int], path: Path):
        super().__init__(daemon=True)
        self.pids = pids
        self.path = path
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, str, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with open(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "process", "rss_kib"])
            while not self.halt.is_set():
                t = time.monotonic() - self.t0
                for name, pid in self.pids.items():
                    kib = rss_kib(pid)
                    if kib is not None:
                        self.rows.append((t, name, kib))
                        w.writerow([f"{t:.1f}", name, kib])
                f.flush()
                self.halt.wait(1.0)

    def between(self, name: str, a: float, b: float) -> list[int]:
        return [k for t, n, k in self.rows if n == name and a <= t < b]


def loadgen(stack: Stack, out: Path, steps: str, model: str, slo: str) -> list[dict]:
    """One load-generator run; its records (sent_ms made relative to the sampler's clock)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(stack.bin / "synergai-loadgen"), "run", "--nats", HUB, "--schedule", steps,
        "--mix", model, "--slo", slo, "--arrivals", "poisson", "--out", str(out), "--quiet",
        "--timeout-s", "30",
        "--emulated", "edge sites edge-a and edge-b: single cores of this machine (EMULATED edge boards)",
    ]
    log(" ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    with open(out / "records.csv", newline="") as f:
        return list(csv.DictReader(f))


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def window(records: list[dict], a_ms: float, b_ms: float) -> list[dict]:
    return [r for r in records if a_ms <= float(r["sent_ms"]) < b_ms]


def latency(r: dict) -> float | None:
    v = r.get("latency_ms") or ""
    return float(v) if v else None


def calibrate(stack: Stack, out: Path, model: str, slo: str, offered: float, secs: float) -> float:
    recs = loadgen(stack, out / "calibration", f"{secs:g}:{offered:g}", model, slo)
    half = window(recs, secs * 500, secs * 1000)
    served = sum(1 for r in half if r["code"] == "200")
    cap = served / (secs / 2)
    log(f"calibration: offered {offered:g}/s for {secs:g} s; answered with a result {cap:.1f}/s "
        f"in its second half: capacity {cap:.1f}/s")
    if cap <= 0:
        raise SystemExit("stress: nothing was served during calibration")
    return cap


def phase_row(name: str, recs: list[dict], secs: float, sampler: Sampler, t0: float) -> dict:
    codes: dict[str, int] = {}
    for r in recs:
        codes[r["code"]] = codes.get(r["code"], 0) + 1
    ok = [latency(r) for r in recs if r["code"] == "200"]
    refused = [latency(r) for r in recs if r["code"] in ("503", "504")]
    ok = [x for x in ok if x is not None]
    refused = [x for x in refused if x is not None]
    a = t0 + min((float(r["sent_ms"]) for r in recs), default=0) / 1000
    peak = {n: max(sampler.between(n, a, a + secs) or [0]) for n in sampler.pids}
    return {
        "phase": name,
        "offered_rps": len(recs) / secs,
        "ok_rps": len(ok) / secs,
        "codes": dict(sorted(codes.items())),
        "lost": codes.get("0", 0),
        "ok_p50_ms": pct(ok, 50),
        "ok_p99_ms": pct(ok, 99),
        "refusal_p50_ms": pct(refused, 50),
        "refusal_p99_ms": pct(refused, 99),
        "peak_rss_mib": {n: round(k / 1024, 1) for n, k in peak.items()},
    }


def overload(stack: Stack, sampler: Sampler, args, out: Path, cap: float) -> int:
    s = args.phase_secs
    low, high = 0.5 * cap, 3.0 * cap
    t0 = time.monotonic() - sampler.t0
    recs = loadgen(stack, out / "run", f"{s:g}:{low:.2f},{s:g}:{high:.2f},{s:g}:{low:.2f}",
                   args.model, args.slo)
    rows = [
        phase_row(name, window(recs, i * s * 1000, (i + 1) * s * 1000), s, sampler, t0)
        for i, name in enumerate(["baseline 0.5x", "overload 3x", "recovery 0.5x"])
    ]
    base_p50 = rows[0]["ok_p50_ms"]
    base_recs = window(recs, 0, s * 1000)
    base_bad = sum(1 for r in base_recs if r["code"] != "200") / max(1, len(base_recs))
    bad_limit = max(2 * base_bad, 0.05)
    # Recovery: the first 2-second window after the overload from which on every window is like
    # the baseline: the median latency of its results within 1.5x of the baseline's, and no more
    # of it refused than twice the baseline's share (at least 5%).
    recovered_at = None
    step = 2.0
    start = 2 * s
    k = start
    windows = []
    while k < 3 * s - 1e-9:
        w = window(recs, k * 1000, (k + step) * 1000)
        ok = [x for x in (latency(r) for r in w if r["code"] == "200") if x is not None]
        bad = (len(w) - len(ok)) / max(1, len(w))
        med = statistics.median(ok) if ok else float("nan")
        good = bool(ok) and med <= 1.5 * base_p50 and bad <= bad_limit
        windows.append((k - start, good, med, bad))
        k += step
    for i in range(len(windows)):
        if all(g for _, g, _, _ in windows[i:]):
            recovered_at = windows[i][0]
            break
    ratio = rows[1]["offered_rps"] / max(rows[1]["ok_rps"], 1e-9)
    lines = [
        f"overload scenario: model {args.model}, target {args.slo}, "
        f"{'given' if args.capacity else 'measured'} capacity {cap:.1f}/s, "
        f"phases of {s:g} s ({'debug' if args.dev else 'release'} build; 2 EMULATED edge sites)",
        f"{'phase':<15} {'offered/s':>9} {'ok/s':>7} {'lost':>5} {'ok p50':>8} {'ok p99':>8} "
        f"{'refuse p50':>10} {'refuse p99':>10}  codes",
    ]
    for r in rows:
        lines.append(
            f"{r['phase']:<15} {r['offered_rps']:>9.1f} {r['ok_rps']:>7.1f} {r['lost']:>5} "
            f"{r['ok_p50_ms']:>8.1f} {r['ok_p99_ms']:>8.1f} {r['refusal_p50_ms']:>10.1f} "
            f"{r['refusal_p99_ms']:>10.1f}  {r['codes']}"
        )
    lines.append("peak RSS (MiB) per phase:")
    for n in sampler.pids:
        lines.append(f"  {n:<12} " + "  ".join(f"{r['peak_rss_mib'][n]:>8.1f}" for r in rows))
    lines.append(f"during the overload {ratio:.2f}x as many requests were offered as were served")
    lines.append(
        f"after the overload, 2 s windows (start: like the baseline?, median ms, share not served; "
        f"baseline median {base_p50:.1f} ms, {base_bad:.1%} not served):"
    )
    lines.append("  " + " ".join(f"{t:g}s:{'yes' if g else 'no'}({m:.0f},{b:.0%})" for t, g, m, b in windows))
    lines.append(
        f"recovery: latency back to baseline {recovered_at:g} s after the overload ended"
        if recovered_at is not None else "recovery: latency did NOT return to baseline within the phase"
    )
    text = "\n".join(lines)
    print(text)
    (out / "summary.txt").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps({"capacity_rps": cap, "phases": rows,
                                                  "recovered_after_s": recovered_at,
                                                  "offered_over_served": ratio}, indent=2))
    lost = sum(r["lost"] for r in rows)
    return 0 if recovered_at is not None and lost == 0 else 1


def soak(stack: Stack, sampler: Sampler, args, out: Path, cap: float) -> int:
    secs = args.minutes * 60
    rate = args.load * cap
    t0 = time.monotonic() - sampler.t0
    recs = loadgen(stack, out / "run", f"{secs:g}:{rate:.2f}", args.model, args.slo)
    warm = args.warmup_s if args.warmup_s is not None else max(60.0, secs / 5)
    lines = [
        f"soak scenario: model {args.model}, {args.minutes:g} min at {args.load:g}x of a "
        f"{'given' if args.capacity else 'measured'} capacity of {cap:.1f}/s ({rate:.1f}/s); "
        f"warm-up {warm:g} s; "
        f"({'debug' if args.dev else 'release'} build; 2 EMULATED edge sites)",
    ]
    codes: dict[str, int] = {}
    for r in recs:
        codes[r["code"]] = codes.get(r["code"], 0) + 1
    lines.append(f"sent {len(recs)}, codes {dict(sorted(codes.items()))}")
    lines.append(f"{'process':<12} {'after warm-up':>13} {'last minute':>11} {'growth':>7} {'max':>7} (MiB)")
    worst = 0.0
    for n in sampler.pids:
        first = sampler.between(n, t0 + warm, t0 + warm + 60)
        last = sampler.between(n, t0 + secs - 60, t0 + secs)
        allv = sampler.between(n, t0, t0 + secs)
        if not first or not last:
            lines.append(f"{n:<12} (no samples)")
            continue
        a, b = statistics.mean(first) / 1024, statistics.mean(last) / 1024
        g = (b - a) / a * 100
        worst = max(worst, g)
        lines.append(f"{n:<12} {a:>13.1f} {b:>11.1f} {g:>6.1f}% {max(allv) / 1024:>7.1f}")
    verdict = "PASS" if worst <= 10.0 else "FAIL"
    lines.append(f"largest growth {worst:.1f}% (limit 10%): {verdict}")
    text = "\n".join(lines)
    print(text)
    (out / "summary.txt").write_text(text + "\n")
    return 0 if verdict == "PASS" and codes.get("0", 0) == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["overload", "soak"])
    p.add_argument("--dev", action="store_true", help="debug builds (quicker to build)")
    p.add_argument("--model", default="squeezenet")
    p.add_argument("--slo", default="x10", help="latency target (ms like 50ms, or xN of the fastest profile)")
    p.add_argument("--capacity", type=float, help="requests/s the stack serves (else measured)")
    p.add_argument("--calibrate-secs", type=float, default=20.0)
    p.add_argument("--phase-secs", type=float, default=40.0, help="overload: length of each phase")
    p.add_argument("--minutes", type=float, default=10.0, help="soak: length")
    p.add_argument("--load", type=float, default=0.8, help="soak: fraction of capacity")
    p.add_argument("--warmup-s", type=float, help="soak: warm-up, s (default a fifth of the run, at least 60)")
    args = p.parse_args()
    out = ROOT / "target" / "stress" / f"{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    log(f"output in {out}")
    stack = Stack(out, args.dev, args.model)
    try:
        stack.wait_up()
        procs = {n: pid for n, pid in stack.pids.items()}
        log("sampling RSS of " + ", ".join(f"{n} ({pid})" for n, pid in procs.items()))
        sampler = Sampler(procs, out / "rss.csv")
        sampler.start()
        cap = args.capacity or calibrate(stack, out, args.model, args.slo, 200.0, args.calibrate_secs)
        # Let the calibration's queues drain before measuring.
        time.sleep(5)
        rc = (overload if args.scenario == "overload" else soak)(stack, sampler, args, out, cap)
        sampler.halt.set()
        sampler.join()
        return rc
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
