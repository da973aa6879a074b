"""The `golf` command: `golf <command> --preset NAME --section.key=value ...`.

Commands: train (the main job), eval (score an artifact), quantize (checkpoint -> artifact),
data (prepare | fineweb | stats), info (resolved config and parameter count as JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from golf.config import SECTIONS, GolfConfig, apply_overrides, parse_override_args
from golf.presets import PRESETS, get_preset


def config_help() -> str:
    """Every config key with its type and default, for --help."""
    cfg = GolfConfig()
    lines = ["config keys (override with --section.key=value):"]
    for f in dataclasses.fields(cfg):
        if f.name in SECTIONS:
            section = getattr(cfg, f.name)
            hints = typing.get_type_hints(type(section))
            for g in dataclasses.fields(section):
                typ = hints[g.name]
                name = (
                    "|".join(map(str, typing.get_args(typ))) if typing.get_origin(typ) is typing.Literal else typ.__name__
                )
                lines.append(f"  --{f.name}.{g.name}={getattr(section, g.name)!r}  ({name})")
        else:
            lines.append(f"  --{f.name}={getattr(cfg, f.name)!r}")
    return "\n".join(lines)


def _add_config_command(sub, name: str, help_text: str, default_preset: str = "demo") -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=f"presets: {', '.join(PRESETS)}\n\n{config_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=default_preset, help=f"starting configuration (default: {default_preset})")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="golf",
        description="Train the best small GPT whose artifact fits in 16,000,000 bytes.",
        epilog="`golf COMMAND --help` describes each command; `golf train` alone runs the demo main job.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _add_config_command(sub, "train", "train, quantize, pack under the budget, evaluate the artifact, report")
    p.add_argument("--resume", default="", metavar="CKPT", help="continue from a checkpoint written by a run")

    p = _add_config_command(sub, "eval", "score an artifact on the val split: val_loss, val_bpb (plain, sliding)")
    p.add_argument("artifact", help="path to an artifact written by `golf train` or `golf quantize`")

    p = _add_config_command(sub, "quantize", "GPTQ a checkpoint into a compressed artifact")
    p.add_argument("checkpoint", help="path to a checkpoint written by `golf train`")

    _add_config_command(sub, "info", "print the resolved config and the parameter count as JSON")

    from golf.data.commands import register as register_data

    register_data(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        args, rest = parser.parse_known_args(["train", *(argv if argv is not None else sys.argv[1:])])
    try:
        if args.command == "data":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return args.func(args)
        overrides = parse_override_args(rest)
        cfg = get_preset(args.preset)
        apply_overrides(cfg, overrides)
        cfg.validate()
        from golf import commands

        return getattr(commands, args.command)(cfg, args, overrides)
    except ValueError as e:
        print(f"golf {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
