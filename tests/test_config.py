import json

import pytest

from golf.config import GolfConfig, apply_overrides, parse_override_args, valid_keys
from golf.presets import PRESETS, get_preset

PINNED_KEYS = ["train.iterations", "train.batch_tokens", "train.seq_len", "data.dir", "out", "seed"]


def test_pinned_keys_exist():
    keys = valid_keys()
    for key in PINNED_KEYS:
        assert key in keys


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate_and_round_trip(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    again = GolfConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_override_parsing_forms():
    assert parse_override_args(["--train.iterations=5", "--seed", "3", "--out=x"]) == {
        "train.iterations": "5",
        "seed": "3",
        "out": "x",
    }
    with pytest.raises(ValueError, match="needs a value"):
        parse_override_args(["--seed"])
    with pytest.raises(ValueError, match="unexpected argument"):
        parse_override_args(["seed=3"])


def test_overrides_are_type_checked():
    cfg = get_preset("demo")
    apply_overrides(cfg, {"train.iterations": "7", "optim.matrix_lr": "0.02", "model.unet_skips": "false"})
    assert cfg.train.iterations == 7 and cfg.optim.matrix_lr == 0.02 and cfg.model.unet_skips is False
    with pytest.raises(ValueError, match="expected an integer"):
        apply_overrides(cfg, {"train.iterations": "7.5"})
    with pytest.raises(ValueError, match="expected a boolean"):
        apply_overrides(cfg, {"model.unet_skips": "maybe"})
    with pytest.raises(ValueError, match="must be one of"):
        apply_overrides(cfg, {"quant.compressor": "zip"})


def test_unknown_key_suggests_closest():
    with pytest.raises(ValueError, match=r"did you mean --train\.iterations"):
        apply_overrides(GolfConfig(), {"train.iteratons": "3"})
    with pytest.raises(ValueError, match="unknown config key --nonsense.thing"):
        apply_overrides(GolfConfig(), {"nonsense.thing": "3"})


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("model.num_kv_heads", "3", "model.num_kv_heads"),
        ("model.rope_dims", "65", "model.rope_dims"),
        ("train.batch_tokens", "1000", "train.batch_tokens"),
        ("optim.ema_decay", "1.5", "optim.ema_decay"),
        ("quant.bits", "4", "quant.bits"),
        ("eval.batch_seqs", "0", "eval.batch_seqs"),
    ],
)
def test_validation_names_the_field(key, value, field):
    cfg = get_preset("baseline")
    apply_overrides(cfg, {key: value})
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        cfg.validate()


def test_unknown_preset():
    with pytest.raises(ValueError, match="did you mean 'demo'"):
        get_preset("dem")
