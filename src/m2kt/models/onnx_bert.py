"""Rebuild a torch `BertModel` from a BERT exported to ONNX (the embedded default E2).

ONNX exports keep LayerNorm and bias tensors under their PyTorch names, but store each Linear
weight transposed as an anonymous `MatMul` initializer. The Linear a MatMul belongs to is named
by the bias added right after it in the graph, which is how weights are matched here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from m2kt.errors import UsageError


def onnx_bert_state_dict(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """State dict for `transformers.BertModel` (no pooler) read from an ONNX BERT export.

    `prefix` is stripped from initializer names (e.g. "model.0.auto_model." for
    sentence-transformers exports).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    state: dict[str, torch.Tensor] = {}
    for name, array in weights.items():
        if not name.startswith("onnx::"):
            state[name.removeprefix(prefix)] = torch.from_numpy(array.copy())
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        matrix = next((i for i in node.input if i in weights), None)
        if matrix is None:
            continue
        bias = next(
            (
                i
                for add in consumers.get(node.output[0], [])
                if add.op_type == "Add"
                for i in add.input
                if i.endswith(".bias") and i in weights
            ),
            None,
        )
        if bias is None:
            raise UsageError(f"{Path(path).name}: MatMul {matrix} is not followed by a bias")
        key = bias.removeprefix(prefix).removesuffix(".bias") + ".weight"
        state[key] = torch.from_numpy(weights[matrix].T.copy())
    return state


def bert_from_onnx(path: str | Path, config: dict[str, Any], prefix: str = "") -> Any:
    """A `BertModel` with every weight taken from the ONNX file; refuses partial matches."""
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(**config), add_pooling_layer=False)
    state = onnx_bert_state_dict(path, prefix)
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise UsageError(
            f"{Path(path).name} does not map onto BERT: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    model.load_state_dict(state, strict=False)
    return model.eval()
