"""OptimConfig.aux_proj_optimizer (techniques.md §3.1): bigram.proj and ve_shared.proj train with Muon
(R0320/R0321, the default) or with the scalar Adam (the bank scripts, R0323 = preset pr549)."""

import pytest

from golf.config import ModelConfig, OptimConfig
from golf.model import GPT
from golf.optim import build_optimizers
from golf.optim.param_groups import assign_param_groups, default_rules
from golf.presets import get_preset

AUX = {"bigram.proj.weight", "ve_shared.proj.weight"}


def small_model() -> GPT:
    cfg = ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=2, num_kv_heads=1, rope_dims=16,
                      bigram_vocab=16, bigram_dim=8, ve_layers="1,2", ve_dim=8, smear_gate="v1")
    return GPT(cfg)


def groups_for(aux: str):
    return assign_param_groups(small_model().named_parameters(), default_rules(OptimConfig(aux_proj_optimizer=aux)))


def test_aux_projections_move_from_muon_to_scalar_adam():
    muon, adam = groups_for("muon"), groups_for("adam")
    assert AUX <= set(muon.names("muon")) and not AUX & set(muon.names("adam_scalar"))
    assert AUX <= set(adam.names("adam_scalar")) and not AUX & set(adam.names("muon"))
    assert len(adam.names("muon")) == len(muon.names("muon")) - 2
    assert len(adam.names("adam_scalar")) == len(muon.names("adam_scalar")) + 2
    # nothing else moves: the embeddings and every block matrix stay where they were
    assert adam.names("adam_embed") == muon.names("adam_embed")
    assert set(muon.names("muon")) - AUX == set(adam.names("muon"))


def test_builder_puts_aux_projections_in_the_scalar_adamw():
    model = small_model()
    opts = build_optimizers(model, OptimConfig(aux_proj_optimizer="adam"))
    aux_params = {id(p) for n, p in model.named_parameters() if n in AUX}
    adam_params = {id(p) for g in opts.adams["adam_scalar"].param_groups for p in g["params"]}
    muon_params = {id(p) for g in opts.muon.param_groups for p in g["params"]}
    assert aux_params <= adam_params and not aux_params & muon_params


def test_bad_value_is_rejected_with_the_key():
    with pytest.raises(ValueError, match="aux_proj_optimizer"):
        OptimConfig(aux_proj_optimizer="sgd").validate()
    with pytest.raises(ValueError, match="aux_proj_optimizer"):
        default_rules(OptimConfig(aux_proj_optimizer="sgd"))


def test_pr549_uses_scalar_adam_for_the_projections_and_others_keep_muon():
    assert get_preset("pr549").optim.aux_proj_optimizer == "adam"
    assert get_preset("core11").optim.aux_proj_optimizer == "muon"
