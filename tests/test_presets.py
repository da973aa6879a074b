"""The record presets (issue 7 item 4): each preset's parameter count equals its record's logged
`model_params`, its docstring cites the record and its FineWeb val_bpb, and its model features are the
record's. Two more record shapes (R0409, R0427) check depth recurrence variant C, SmearGate v2, the sparse
gate and the two-lane lambdas against their logged counts."""

import pytest
import torch

from golf.config import GolfConfig, ModelConfig
from golf.model import GPT
from golf.presets import PRESETS, get_preset

# model_params lines of the records' train logs (openai/parameter-golf):
LOGGED_PARAMS = {
    # records/track_10min_16mb/2026-03-19_NorMuon_Int6STE_SWA_SlidingWindow/train.log (PR #89): model_params:21778504
    "pr89": 21_778_504,
    # records/track_10min_16mb/2026-03-23_LeakyReLU_LegalTTT_ParallelMuon/train_seed1337.log: model_params:26928220
    "pr549": 26_928_220,
    # records/track_10min_16mb/2026-04-03_MuonEqR_DepthRecurrence_WD090_AllInt6/train_seed42.log: model_params:34401371
    "pr1285": 34_401_371,
    # records/track_10min_16mb/2026-04-04_MuonEqR_3LayerRecurrence_WD095_MLR022_AllInt6/train_seed42.log (PR #1331):
    # model_params:34401371, the same weights as PR #1285 (the repeated layers share them)
    "pr1331": 34_401_371,
}
VAL_BPB = {"pr89": "1.1622", "pr549": "1.1194", "pr1285": "1.0912", "pr1331": "1.0900"}


def meta_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):  # counting needs no storage, as in `golf info`
        return GPT(cfg).num_params()


@pytest.mark.parametrize("name", sorted(LOGGED_PARAMS))
def test_preset_param_count_equals_the_records_logged_model_params(name):
    golf_params = meta_params(get_preset(name).model)
    assert golf_params == LOGGED_PARAMS[name], f"golf {golf_params:,} vs record {LOGGED_PARAMS[name]:,}"


@pytest.mark.parametrize("name", sorted(LOGGED_PARAMS))
def test_preset_docstring_cites_record_and_val_bpb(name):
    doc = " ".join(PRESETS[name].__doc__.split())
    assert f"FineWeb val_bpb {VAL_BPB[name]}" in doc and "records/track_10min_16mb/" in doc
    assert f"{LOGGED_PARAMS[name]:,}" in doc
    cfg = get_preset(name)
    assert cfg.preset == name and isinstance(cfg, GolfConfig)


def test_preset_features_are_the_records():
    def features(name):
        with torch.device("meta"):
            return GPT(get_preset(name).model).features()

    assert features("pr89") == []  # the baseline's model: no OrthoInit, no record features
    pr549 = " | ".join(features("pr549"))
    for phrase in ("OrthoInit", "XSA on layers 7-10", "SmearGate v1", "BigramHash 1536x128",
                   "value embeddings dim 128 on layers [9, 10]", "LN scale"):
        assert phrase in pr549
    assert "skip gates" not in pr549 and "recurrence" not in pr549
    pr1285 = " | ".join(features("pr1285"))
    assert "XSA on layers 0-10" in pr1285 and "skip gates" in pr1285 and "BigramHash" not in pr1285
    assert "layers 4-5 x1 extra (encoder [0, 1, 2, 3, 4, 5], decoder [4, 5, 6, 7, 8, 9, 10]" in pr1285
    assert "layers 3-5 x1 extra (encoder [0, 1, 2, 3, 4, 5, 3], decoder [4, 5, 6, 7, 8, 9, 10]" in " | ".join(
        features("pr1331"))


def test_pr1331_is_pr1285_with_its_three_changes():
    a, b = get_preset("pr1285").to_dict(), get_preset("pr1331").to_dict()
    diff = {(s, k): (a[s][k], b[s][k]) for s in ("model", "optim", "quant", "train", "eval", "data")
            for k in a[s] if a[s][k] != b[s][k]}
    assert diff == {("model", "loop_start"): (4, 3), ("optim", "muon_wd"): (0.09, 0.095),
                    ("optim", "embed_wd"): (0.09, 0.095), ("optim", "matrix_lr"): (0.02, 0.022)}


def test_existing_presets_keep_their_features_off():
    for name in ("demo", "baseline", "core11"):
        m = get_preset(name).model
        assert (m.xsa_last_n, m.smear_gate, m.bigram_vocab, m.ve_layers, m.num_loops, m.parallel_residual,
                m.attn_gate, m.ln_scale, m.skip_gates, m.value_residual) == (0, "off", 0, "", 0, "off", "off",
                                                                             False, False, False)


def _record_base(**features) -> ModelConfig:
    """sp8192, 11L, MLP 4x, XSA all, skip gates, LN scale (R0409/R0427's shared settings)."""
    cfg = ModelConfig(vocab_size=8192, num_layers=11, mlp_mult=4.0, leaky_slope=0.5, rope_dims=16, qk_gain_init=5.0,
                      xsa_last_n=11, ln_scale=True, skip_gates=True, loop_start=3, loop_end=5, num_loops=2)
    for k, v in features.items():
        setattr(cfg, k, v)
    return cfg


def test_r0409_and_r0427_shapes_match_their_logged_counts():
    # 2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT/train_seed314.log: model_params:35944536
    # (8 skip weights and gates from the looped lists; GPT-J parallel residuals add none).
    assert meta_params(_record_base(parallel_residual="gptj", parallel_start_layer=7)) == 35_944_536
    # 2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_seed0.log: model_params:35945671
    # (+ SmearGate v2 12+1, sparse gate 8x12 per layer, two-lane lambdas 11x2x2 + 11x2).
    r0427 = _record_base(parallel_residual="two_lane", parallel_start_layer=8, smear_gate="v2",
                         attn_gate="sparse", attn_gate_scale=0.5)
    assert meta_params(r0427) == 35_945_671
