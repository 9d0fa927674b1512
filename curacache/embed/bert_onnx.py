"""The same BERT forward pass as bert_numpy.py, as an ONNX graph run by onnxruntime.

Why a second backend: onnxruntime's MLAS kernels and intra-op thread pool, with less
per-op overhead than numpy, make it ~1.2-1.5x faster than numpy in batch and ~1.5-2x for
one text here (numbers in minilm.py). Why no torch: the graph is written node by node
with the `onnx` helper API from the very safetensors arrays the numpy backend uses, in
memory at start-up (~1 s); no exported file, no download, no torch. Only standard ONNX ops (opset 17) are used: emitting
onnxruntime's contrib ops (com.microsoft Gelu, SkipLayerNormalization) was tried and was
not measurably faster here, so the graph stays portable and fully checker-validated.

The graph takes `input_ids` and `attention_mask` (int64, (B, L)) and returns `embedding`
(float32, (B, hidden)): mean-pooled over the mask and L2-normalised, so it is a drop-in
replacement for `BertEncoder.encode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from curacache.embed.bert_numpy import BertConfig


def onnx_available() -> bool:
    """Both packages importable (they are optional: the numpy backend needs neither)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _GraphBuilder:
    """Accumulates nodes and initializers; each node gets a unique output name."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._count = 0

    def const(self, name: str, value: np.ndarray | float | int | list) -> str:
        arr = np.array(value, order="C")  # np.array keeps 0-d scalars 0-d (Gather needs that)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        self.inits.append(self.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def build_bert_onnx(*, weights: Mapping[str, np.ndarray], config: BertConfig) -> bytes:
    """Serialized ONNX model (opset 17) of BERT + mean pooling + L2 normalisation."""
    import onnx
    from onnx import TensorProto

    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    hidden, heads = config.hidden, config.heads
    head_dim = hidden // heads
    eps = config.layer_norm_eps
    g = _GraphBuilder()

    def layer_norm(x: str, prefix: str) -> str:
        gamma = g.const(prefix + ".weight", w[prefix + ".weight"])
        beta = g.const(prefix + ".bias", w[prefix + ".bias"])
        return g.op("LayerNormalization", x, gamma, beta, axis=-1, epsilon=eps)

    def linear(x: str, prefix: str, weight: np.ndarray, bias: np.ndarray) -> str:
        mm = g.op("MatMul", x, g.const(prefix + ".w", np.ascontiguousarray(weight.T)))
        return g.op("Add", mm, g.const(prefix + ".b", bias))

    # Embeddings: word + position[:L] + token type 0, then LayerNorm.
    seq_len = g.op("Slice", g.op("Shape", "input_ids"), g.const("one1", [1]), g.const("two1", [2]))
    pos = g.op(
        "Slice",
        g.const("pos", w["embeddings.position_embeddings.weight"]),
        g.const("zero1", [0]),
        seq_len,
    )
    word = g.op("Gather", g.const("word", w["embeddings.word_embeddings.weight"]), "input_ids")
    x = g.op(
        "Add",
        g.op("Add", word, pos),
        g.const("type0", w["embeddings.token_type_embeddings.weight"][0]),
    )
    x = layer_norm(x, "embeddings.LayerNorm")

    # Additive attention bias (B, 1, 1, L): 0 for tokens, -1e9 for padding.
    mask_f = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = g.op("Mul", g.op("Sub", mask_f, g.const("one_f", 1.0)), g.const("big", 1e9))
    bias = g.op("Unsqueeze", bias, g.const("axes12", [1, 2]))

    shape5 = g.const("shape5", [0, 0, 3, heads, head_dim])
    shape3 = g.const("shape3", [0, 0, hidden])
    idx = [g.const(f"i{j}", j) for j in range(3)]
    half, rsqrt2 = g.const("half", 0.5), g.const("rsqrt2", 1.0 / np.sqrt(2.0))
    scale = np.float32(1.0 / np.sqrt(head_dim))
    for i in range(config.layers):
        p = f"encoder.layer.{i}."
        sa = p + "attention.self."
        w_qkv = np.concatenate(
            [w[sa + "query.weight"] * scale, w[sa + "key.weight"], w[sa + "value.weight"]]
        )
        b_qkv = np.concatenate(
            [w[sa + "query.bias"] * scale, w[sa + "key.bias"], w[sa + "value.bias"]]
        )
        qkv = g.op(
            "Transpose",
            g.op("Reshape", linear(x, p + "qkv", w_qkv, b_qkv), shape5),
            perm=[2, 0, 3, 1, 4],
        )
        q, k, v = (g.op("Gather", qkv, j, axis=0) for j in idx)
        scores = g.op("Add", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), bias)
        ctx = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]), shape3)
        ao = p + "attention.output."
        attn = linear(ctx, ao + "dense", w[ao + "dense.weight"], w[ao + "dense.bias"])
        x = layer_norm(g.op("Add", attn, x), ao + "LayerNorm")
        h = linear(
            x,
            p + "intermediate",
            w[p + "intermediate.dense.weight"],
            w[p + "intermediate.dense.bias"],
        )
        h = g.op(
            "Mul", g.op("Mul", h, half), g.op("Add", g.op("Erf", g.op("Mul", h, rsqrt2)), "one_f")
        )
        out = linear(h, p + "output", w[p + "output.dense.weight"], w[p + "output.dense.bias"])
        x = layer_norm(g.op("Add", out, x), p + "output.LayerNorm")

    # Mean pooling over real tokens, then L2 normalisation.
    mask3 = g.op("Unsqueeze", mask_f, g.const("axis2", [2]))
    axis1 = g.const("axis1", [1])
    summed = g.op("ReduceSum", g.op("Mul", x, mask3), axis1, keepdims=0)
    count = g.op("Max", g.op("ReduceSum", mask3, axis1, keepdims=0), g.const("tiny", 1e-9))
    pooled = g.op("Div", summed, count)
    g.nodes.append(g.helper.make_node("LpNormalization", [pooled], ["embedding"], axis=-1, p=2))

    graph = g.helper.make_graph(
        g.nodes,
        "minilm",
        [
            g.helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            g.helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [g.helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.inits,
    )
    model = g.helper.make_model(graph, opset_imports=[g.helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxBertEncoder:
    """onnxruntime session over `build_bert_onnx`; `encode` matches `BertEncoder.encode`.

    `threads=0` lets onnxruntime use every core for one pass (best for latency); the
    session is thread-safe, so concurrent passes from several worker threads are allowed.
    """

    def __init__(
        self, *, weights: Mapping[str, np.ndarray], config: BertConfig, threads: int = 0
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: on a CPU the event loop shares, spinning
        # burned the cores that serve the other requests (bench/load/README.md has the figures).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        model = build_bert_onnx(weights=weights, config=config)
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.config = config
        self.dim = config.hidden

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if input_ids.shape[1] > self.config.max_positions:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds {self.config.max_positions} positions"
            )
        (out,) = self._session.run(
            ["embedding"],
            {
                "input_ids": input_ids.astype(np.int64, copy=False),
                "attention_mask": attention_mask.astype(np.int64, copy=False),
            },
        )
        return out
