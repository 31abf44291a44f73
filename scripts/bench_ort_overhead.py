#!/usr/bin/env python3
"""Overhead of the worker's ONNX Runtime path against plain ONNX Runtime from Python.

For each model, the same input tensor (written to a file) is run at batch 1 with one intra-op
and one inter-op thread, full graph optimisation and ONNX Runtime's default spinning, by:
  - `onnxruntime.InferenceSession.run` (the Python package, same ONNX Runtime version), and
  - `synergai-worker profile --engine ort` (the worker's engine path: ort crate, libonnxruntime.so).
Both are pinned to the same core, and the two alternate for several rounds in one run, so
machine noise hits both alike. Prints the median of each side's per-round p50 and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent


def python_p50(model_path: Path, input_name: str, x: np.ndarray, warmup: int, runs: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    feed = {input_name: x}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def worker_p50(binary: Path, model: str, input_file: Path, core: int, warmup: int, runs: int) -> tuple[float, dict]:
    cmd = [str(binary), "--cores", str(core), "profile", "--model", model, "--engine", "ort", "--threads", "1",
           "--batch", "1", "--json", "--input", str(input_file), "--warmup", str(warmup),
           "--min-runs", str(runs), "--max-runs", str(runs), "--budget-ms", "0"]
    env = dict(os.environ, SYNERGAI_TELEMETRY__LOG_FILTER="warn", SYNERGAI_ENGINES__ORT__INTER_THREADS="1")
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    point = json.loads(out.strip().splitlines()[-1])
    return point["p50_ms"], point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/synergai-worker")
    parser.add_argument("--models", nargs="+", default=["resnet50", "squeezenet"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    catalog = json.loads((ROOT / "assets/catalog.json").read_text())
    entries = {m["name"]: m for m in catalog["models"]}
    os.sched_setaffinity(0, {args.core})
    rng = np.random.default_rng(2509)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            entry = entries[model]
            (spec,) = entry["inputs"]
            shape = [1 if d < 0 else d for d in spec["shape"]]
            x = rng.random(shape, dtype=np.float64).astype(np.float32)
            input_file = Path(tmp) / f"{model}.bin"
            input_file.write_bytes(x.astype("<f4").tobytes())
            model_path = ROOT / "assets" / entry["file"]
            py, rs = [], []
            point = {}
            for r in range(args.rounds):
                py.append(python_p50(model_path, spec["name"], x, args.warmup, args.runs))
                p50, point = worker_p50(args.binary, model, input_file, args.core, args.warmup, args.runs)
                rs.append(p50)
                print(f"  {model} round {r + 1}: python {py[-1]:.3f} ms, worker {rs[-1]:.3f} ms", file=sys.stderr)
            py_m, rs_m = statistics.median(py), statistics.median(rs)
            results.append({
                "model": model, "python_p50_ms": py_m, "worker_p50_ms": rs_m, "ratio": rs_m / py_m,
                "rounds": args.rounds, "runs_per_round": args.runs, "core": args.core,
                "python_onnxruntime": ort.__version__, "worker_library": point.get("library_version"),
                "worker_engine": point.get("engine_version"),
            })
    print(f"{'model':<12} {'python p50 ms':>14} {'worker p50 ms':>14} {'worker/python':>14}")
    for r in results:
        print(f"{r['model']:<12} {r['python_p50_ms']:>14.3f} {r['worker_p50_ms']:>14.3f} {r['ratio']:>14.3f}")
    print(f"python onnxruntime {ort.__version__}; worker {results[0]['worker_engine']} on {results[0]['worker_library']}; "
          f"batch 1, 1 intra-op + 1 inter-op thread, pinned to core {args.core}; "
          f"median over {args.rounds} alternating rounds of {args.runs} runs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
