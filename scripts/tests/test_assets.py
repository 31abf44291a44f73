"""The setup's batch rewrite and its proof must reject what is unsafe, not just pass what is."""

import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import assets  # noqa: E402

SPECS = {"x": {"shape": [4], "batch_axis": 0}}


def save(model, folder: Path, name: str) -> Path:
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def graph(nodes, inits, out_shape=(1, 4)):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        initializer=inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


class BatchProof(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.rng = np.random.default_rng(1)

    def tearDown(self):
        self.tmp.cleanup()

    def test_fixed_reshape_is_rewritten_and_proven(self):
        # x [1,4] -> Reshape [1,2,2] -> Reshape [1,4] -> Softmax: both targets pin batch 1.
        model = graph(
            [helper.make_node("Reshape", ["x", "s1"], ["a"]),
             helper.make_node("Reshape", ["a", "s2"], ["b"]),
             helper.make_node("Softmax", ["b"], ["y"], axis=1)],
            [numpy_helper.from_array(np.array([1, 2, 2], np.int64), "s1"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "s2")],
        )
        note = assets.make_batch_dynamic(model, {"x": 0})
        self.assertIn("2 Reshape target(s)", note)
        ok, why, axes = assets.prove_batch(save(model, self.dir, "ok"), SPECS, self.rng)
        self.assertTrue(ok, why)
        self.assertEqual(axes, [0])

    def test_unrewritten_graph_fails_at_batch_4(self):
        model = graph(
            [helper.make_node("Reshape", ["x", "s"], ["y"])],
            [numpy_helper.from_array(np.array([1, 4], np.int64), "s")],
        )
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
        ok, why, _ = assets.prove_batch(save(model, self.dir, "fixed"), SPECS, self.rng)
        self.assertFalse(ok)
        self.assertIn("failed to run", why)

    def test_samples_that_mix_are_caught(self):
        # y = x + sum over the batch: right at batch 1, wrong for every sample at batch 4.
        model = graph(
            [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
             helper.make_node("Add", ["x", "s"], ["y"])],
            [numpy_helper.from_array(np.array([0], np.int64), "axes")],
        )
        assets.make_batch_dynamic(model, {"x": 0})
        ok, why, _ = assets.prove_batch(save(model, self.dir, "mix"), SPECS, self.rng)
        self.assertFalse(ok)
        self.assertIn("differs from its batch-1 run", why)

    def test_a_proof_that_sees_nothing_is_refused(self):
        # y = x * 0: every sample gives the same output, so agreement proves nothing.
        model = graph(
            [helper.make_node("Mul", ["x", "zero"], ["y"])],
            [numpy_helper.from_array(np.zeros([1], np.float32), "zero")],
        )
        assets.make_batch_dynamic(model, {"x": 0})
        ok, why, _ = assets.prove_batch(save(model, self.dir, "blind"), SPECS, self.rng)
        self.assertFalse(ok)
        self.assertIn("blind", why)

    def test_weight_reshapes_are_left_alone(self):
        # A Reshape of a weight whose target starts with 1 is not on the activation path.
        model = graph(
            [helper.make_node("Reshape", ["w", "ws"], ["w2"]),
             helper.make_node("Add", ["x", "w2"], ["y"])],
            [numpy_helper.from_array(np.ones([4], np.float32), "w"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "ws")],
        )
        note = assets.make_batch_dynamic(model, {"x": 0})
        self.assertIn("0 Reshape target(s)", note)
        ws = next(i for i in model.graph.initializer if i.name == "ws")
        self.assertEqual(list(numpy_helper.to_array(ws)), [1, 4])
        ok, why, _ = assets.prove_batch(save(model, self.dir, "weights"), SPECS, self.rng)
        self.assertTrue(ok, why)


if __name__ == "__main__":
    unittest.main()
