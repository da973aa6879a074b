"""golf.ops bookkeeping inside torch.compile: recording which implementation ran must not make a compiled
graph recompile when another graph records a different op (late QAT's switch back and forth)."""

import torch

import golf.ops
from golf.ops import _dispatch
from golf.ops.fake_quant import fake_quant


class _Toggle(torch.nn.Module):
    """Like a model with late QAT: the flag picks a graph with or without the fake-quant op."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(8, 8))
        self.qat = False

    def forward(self, x):
        _dispatch.note_impl("attention", "sdpa")
        w = fake_quant(self.weight, bits=6, clip="absmax") if self.qat else self.weight
        return x @ w


def test_switching_graphs_back_and_forth_compiles_each_graph_once():
    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    _dispatch.reset()
    golf.ops.set_kernels_enabled(False)
    try:
        torch._dynamo.reset()
        model = _Toggle()
        compiled = torch.compile(model, backend=counting_backend, fullgraph=True)
        x = torch.randn(2, 8)
        for qat in (False, True, False, True, False):
            model.qat = qat
            compiled(x)
    finally:
        golf.ops.set_kernels_enabled(True)
        torch._dynamo.reset()
    assert len(compiles) == 2  # QAT off and on; a third compile is the old dict-guard recompile
    assert _dispatch.implementations() == {"attention": "sdpa", "fake_quant": "reference (kernels disabled)"}
    _dispatch.reset()
