#!/usr/bin/env python3
"""Send one inference request to a running SynergAI (scripts/up) and print where and how it ran.

    assets/.venv/bin/python scripts/infer.py squeezenet [--slo-ms 100] [--url http://127.0.0.1:8000]

Random inputs shaped from assets/catalog.json, sent over HTTP in the binary tensor form.
"""

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "UINT8": "u1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--slo-ms", type=float, default=200.0)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    catalog = json.loads((ROOT / "assets/catalog.json").read_text())
    entry = next((m for m in catalog["models"] if m["name"] == args.model), None)
    if entry is None:
        sys.exit(f"unknown model {args.model!r}; models: {[m['name'] for m in catalog['models']]}")
    rng = np.random.default_rng()
    tensors, raw = [], b""
    for spec in entry["inputs"]:
        shape = [1 if d < 0 else d for d in spec["shape"]]
        if "values" in spec:
            data = np.full(shape, spec["values"][0])
        else:
            data = rng.random(shape)
        data = np.asarray(data).astype(DTYPES[spec["datatype"]])
        raw += data.tobytes()
        tensors.append({"name": spec["name"], "shape": shape, "datatype": spec["datatype"],
                        "parameters": {"binary_data_size": data.nbytes}})
    header = json.dumps({"inputs": tensors, "parameters": {"slo_ms": args.slo_ms}}).encode()
    req = urllib.request.Request(f"{args.url}/v2/models/{args.model}/infer", data=header + raw,
                                 headers={"Inference-Header-Content-Length": str(len(header))})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{e.code}: {e.read().decode(errors='replace')}")
    reply = json.loads(body)
    print(json.dumps(reply["parameters"], indent=2))
    print("outputs:", [(o["name"], o["shape"]) for o in reply["outputs"]])


if __name__ == "__main__":
    main()
