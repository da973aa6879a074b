"""golf.ops bookkeeping inside torch.compile: recording which implementation ran must not make a compiled
graph recompile when another graph records a different op (late QAT's switch back and forth)."""

import pytest
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


class _FakeKernels:
    INTERPRETED = False


def _can_run(device, kernels=_FakeKernels, *, cpu_kernels=False):
    return _dispatch.kernel_can_run("fake_quant", torch.device(device), kernels, "triton is not importable (x)",
                                    cpu_kernels=cpu_kernels, min_capability=9, capability_reason="needs sm_90")


@pytest.mark.filterwarnings("ignore:golf.ops.fake_quant. falling back")  # the real fallbacks warn, by design
def test_shared_kernel_checks_record_why_the_reference_runs(monkeypatch):
    monkeypatch.setattr(_dispatch, "_cuda_capability_major", lambda index: 8)
    cases = [
        (lambda: _can_run("cpu"), "reference (cpu)"),  # the reference by design: no warning
        (lambda: _can_run("cpu", cpu_kernels=True, kernels=None), "reference (triton is not importable (x))"),
        (lambda: _can_run("meta"), "reference (no kernel for device meta)"),
        (lambda: _can_run("cuda"), "reference (needs sm_90)"),
    ]
    for check, recorded in cases:
        _dispatch.reset()
        assert check() is False
        assert _dispatch.implementations() == {"fake_quant": recorded}
    _dispatch.reset()
    golf.ops.set_kernels_enabled(False)
    try:
        assert _can_run("cuda") is False
        assert _dispatch.implementations() == {"fake_quant": "reference (kernels disabled)"}
    finally:
        golf.ops.set_kernels_enabled(True)
    monkeypatch.setattr(_dispatch, "_cuda_capability_major", lambda index: 9)
    assert _can_run("cuda") is True and _can_run("cpu", cpu_kernels=True) is True
    assert _dispatch.kernel_runs("fake_quant", _FakeKernels) is True
    assert _dispatch.implementations() == {"fake_quant": "triton"}
    _dispatch.reset()
