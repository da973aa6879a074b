"""The `golf` command's surface: help text for every command, config errors as exit code 2 with a hint,
and `golf info` as JSON with the preset's parameter count."""

import json

import pytest

from golf.cli import main
from golf.config import valid_keys


@pytest.mark.parametrize("command", ["train", "eval", "quantize", "info"])
def test_every_command_has_help_listing_the_config_keys(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key in ("train.iterations", "train.batch_tokens", "train.seq_len", "data.dir", "out", "seed"):
        assert f"--{key}=" in out
    assert len([k for k in valid_keys() if f"--{k}=" in out]) == len(valid_keys())


def test_unknown_key_is_exit_2_with_the_closest_key(capsys):
    assert main(["info", "--preset", "core11", "--train.iteratons=5"]) == 2
    assert "did you mean --train.iterations" in capsys.readouterr().err


def test_bad_value_is_exit_2_naming_the_field(capsys):
    assert main(["info", "--model.num_kv_heads=3"]) == 2
    assert "model.num_kv_heads" in capsys.readouterr().err


def test_info_prints_config_and_parameter_count(capsys):
    assert main(["info", "--preset", "baseline", "--seed", "7"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 17_059_912  # the NaiveBaseline record's logged model_params
    assert out["config"]["seed"] == 7 and out["config"]["preset"] == "baseline"
