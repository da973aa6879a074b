"""The main job: data -> train -> EMA -> quantize -> artifact under the byte budget -> score the artifact
-> report. `golf train` runs it; its stages are reused by `golf quantize` and `golf eval`."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import torch

import golf.ops
from golf.config import GolfConfig
from golf.data.dataset import Dataset, open_dataset
from golf.data.loader import TokenLoader
from golf.data.prepare import default_cache_dir, ensure_builtin
from golf.eval.artifact_eval import load_artifact_model, score
from golf.eval.evaluate import autocast_for
from golf.eval.ttt import score_ttt
from golf.model import GPT
from golf.optim.swa import SWA
from golf.quant.artifact import write_artifact
from golf.quant.codesize import CodeSize, check_budget, code_bytes
from golf.quant.hessian import collect_hessians_over_ranks
from golf.quant.mixed import generate_calibration, quantize_to_budget
from golf.quant.qat import set_qat
from golf.train import checkpoint, dist, report
from golf.train.dist import DistInfo
from golf.train.trainer import Trainer, grad_accum_steps

EVAL_ENTRY = "golf.eval.artifact_eval"


def resolve_dataset(cfg: GolfConfig, info: DistInfo, log) -> Dataset:
    """cfg.data.dir, or the builtin corpus (built once by rank 0 into the cache) when it is empty."""
    data_dir = cfg.data.dir
    if not data_dir:
        vocab = cfg.data.vocab_size or cfg.model.vocab_size
        if info.is_main:
            cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
            log(f"data: builtin corpus at vocab {vocab} (cache {cache})")
            data_dir = str(ensure_builtin(cache, vocab_size=vocab, val_docs=cfg.data.val_docs))
        dist.barrier()
        data_dir = dist.broadcast_object(data_dir)
    return open_dataset(data_dir, tokenizer=cfg.data.tokenizer, model_vocab_size=cfg.model.vocab_size)


def run_dir(cfg: GolfConfig) -> Path:
    name = cfg.out or f"runs/{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(dist.broadcast_object(name))


def calibration_batches(cfg: GolfConfig, dataset: Dataset, device: torch.device, rank: int = 0,
                        world_size: int = 1) -> Iterator[torch.Tensor]:
    """quant.calib_batches batches of training tokens (each split into micro-batches like a train step); with
    several ranks each rank gets its share of every batch, as in training."""
    t, q = cfg.train, cfg.quant
    batch_tokens = q.calib_batch_tokens or t.batch_tokens
    accum = grad_accum_steps(batch_tokens, t.seq_len, world_size, t.max_micro_batch_tokens)
    loader = TokenLoader(dataset.train_files, batch_tokens=batch_tokens, seq_len=t.seq_len, grad_accum=accum,
                         rank=rank, world_size=world_size)
    for _ in range(q.calib_batches * accum):
        yield loader.next_batch()[0].to(device)


def eval_entry_modules(cfg: GolfConfig) -> tuple[str, ...]:
    """The modules whose sources count as code bytes: what scoring this run's artifact imports."""
    return (EVAL_ENTRY, "golf.eval.ttt") if cfg.eval.ttt else (EVAL_ENTRY,)


def calibration_inputs(model, cfg: GolfConfig, dataset: Dataset, device: torch.device, rank: int = 0,
                       world_size: int = 1):
    """This rank's token batches for the GPTQ Hessians: its share of the training batches, or of the model's
    own samples (quant.calib_source; rank r generates the sequences r, r + world_size, ... from its own seed)."""
    if cfg.quant.calib_source == "generated":
        mine = len(range(rank, cfg.quant.calib_batches, world_size))
        if mine == 0:
            raise ValueError(f"quant.calib_batches={cfg.quant.calib_batches} gives rank {rank} of {world_size} no "
                             f"generated sequence; use at least one per process")
        return generate_calibration(model, mine, cfg.train.seq_len, vocab_size=cfg.model.vocab_size,
                                    seed=cfg.seed + 1000 * rank, device=device)
    return calibration_batches(cfg, dataset, device, rank, world_size)


def calibrate(model, cfg: GolfConfig, dataset: Dataset, info: DistInfo, log) -> dict[str, torch.Tensor] | None:
    """The GPTQ Hessians of the model's float weights (None without GPTQ). Every rank calibrates on its own
    share of the batches and gets the same averaged Hessians, so under torchrun call it on every rank."""
    set_qat(model, False, cfg.quant)  # calibrate and export the float weights; export applies the same grid
    if not (cfg.quant.gptq and cfg.quant.calib_batches > 0):
        return None
    t0 = time.perf_counter()
    model.eval()
    with autocast_for(info.device):
        batches = calibration_inputs(model, cfg, dataset, info.device, info.rank, info.world_size)
        hessians = collect_hessians_over_ranks(model, batches, device=info.device)
    log(f"quantize: Hessians of {len(hessians)} matrices from {cfg.quant.calib_source} tokens on "
        f"{info.world_size} rank(s) in {time.perf_counter() - t0:.1f}s")
    return hessians


def quantize_to_artifact(model, cfg: GolfConfig, dataset: Dataset, device: torch.device, path: Path, log,
                         hessians: dict[str, torch.Tensor] | None = None,
                         code: Future[CodeSize] | None = None) -> dict:
    """GPTQ (or round-to-nearest) the model's weights, fit the byte budget (mixed bits / pruning when
    configured), write the compressed artifact and check the budget. `hessians`: from `calibrate` (run on
    every rank first under torchrun); None calibrates here, in this process. `code`: the code size from
    `measure_code_bytes`, started earlier; None measures it here."""
    times = [time.perf_counter()]
    if hessians is None:
        hessians = calibrate(model, cfg, dataset, DistInfo(0, 1, 0, device), log)
    times.append(time.perf_counter())
    code = code.result() if code is not None else code_bytes(entry_modules=eval_entry_modules(cfg))
    times.append(time.perf_counter())
    meta = {"config": cfg.to_dict(), "data_dir": str(dataset.dir)}
    state = {k: v.detach() for k, v in model.state_dict().items()}
    entries, plan = quantize_to_budget(state, hessians, cfg.quant, code_bytes=code.bytes, meta=meta)
    if plan.bits_plan:
        log(f"quantize: mixed precision {sorted(plan.bits_plan.items())}")
    if plan.pruned:
        log(f"quantize: pruned {plan.pruned:,} +-1 codes to fit {plan.target_bytes:,} bytes")
    times.append(time.perf_counter())
    art = write_artifact(path, entries, meta, compressor=cfg.quant.compressor)
    times.append(time.perf_counter())
    calibration_s, code_size_s, quantize_s, pack_s = (t1 - t0 for t0, t1 in zip(times, times[1:]))
    sizes = {"model_bytes": art.model_bytes, "code_bytes": code.bytes, "total_bytes": art.model_bytes + code.bytes,
             "budget_bytes": cfg.quant.budget_bytes, "compressor": cfg.quant.compressor,
             "calibration_seconds": calibration_s, "code_size_wait_seconds": code_size_s,
             "quantize_seconds": quantize_s, "pack_seconds": pack_s, "bits_plan": plan.bits_plan, "pruned": plan.pruned}
    log(f"artifact: {path} model {art.model_bytes:,} + code {code.bytes:,} = {sizes['total_bytes']:,} bytes "
        f"(budget {cfg.quant.budget_bytes:,}); quantize {quantize_s:.1f}s, "
        f"{cfg.quant.compressor} pack {pack_s:.1f}s")
    check_budget(art.model_bytes, code.bytes, cfg.quant.budget_bytes, allow_over=cfg.quant.allow_over_budget)
    return sizes


def measure_code_bytes(cfg: GolfConfig) -> Future[CodeSize]:
    """The code bytes of this run's artifact, measured in a background thread: `code_bytes` imports golf in a
    fresh interpreter (5-7 s), which the main job overlaps with training."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(code_bytes, eval_entry_modules(cfg))
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future


def evaluated_weights(swa_snapshots: int, has_ema: bool) -> str:
    """Which weights a run evaluates and quantizes: "swa", the SWA average, when it collected any snapshot (SWA
    wins over EMA: the records apply one or the other), else "ema" when kept, else "last" (the last step's)."""
    return "swa" if swa_snapshots else "ema" if has_ema else "last"


def trained_model(checkpoint_path: Path, cfg: GolfConfig, device: torch.device):
    """The GPT of a golf checkpoint with the weights its run evaluates (`evaluated_weights`, as `final_weights`),
    looping on for recurrence models as at the end of training."""
    state, _ = checkpoint.load(Path(checkpoint_path), with_optim=False)
    swa = None
    if cfg.optim.swa_every and state.get("swa"):
        swa = SWA(cfg.optim.swa_every, cfg.optim.swa_start_lr_scale)
        swa.load_state_dict(state["swa"])
    source = evaluated_weights(swa.count if swa is not None else 0, state.get("ema") is not None)
    model = GPT(cfg.model)
    weights = state["ema"] if source == "ema" else state["model"]
    keys = model.state_dict().keys()  # once: building the state dict per key was quadratic in the weights
    model.load_state_dict({k: v for k, v in weights.items() if k in keys})
    if source == "swa":
        swa.apply(model)  # over every weight (SWA checks that its keys are the model's)
    if cfg.model.num_loops:
        model.set_looping(True)
    return model.to(device)


def score_artifact(qmodel, cfg: GolfConfig, dataset: Dataset, info: DistInfo, log) -> dict:
    """Plain and sliding scores of the artifact's model, then legal TTT (which adapts that model) if enabled."""
    post = score(qmodel, cfg, dataset, info.device, info.rank, info.world_size)
    if cfg.eval.ttt:
        post["ttt"] = score_ttt(qmodel, cfg, dataset, info.device, info.rank, info.world_size, log=log)
    return post


def final_weights(trainer: Trainer, log) -> None:
    """Load the weights that get evaluated and quantized (`evaluated_weights`) into the trainer's model."""
    source = evaluated_weights(trainer.swa.count if trainer.swa is not None else 0, trainer.ema is not None)
    if source == "swa":
        n = trainer.swa.apply(trainer.model)
        log(f"loaded the SWA average of {n} snapshots" + (" (EMA not applied)" if trainer.ema else ""))
    elif source == "ema":
        if trainer.swa is not None:
            log("SWA collected no snapshot; using the EMA weights")
        trainer.ema.copy_to(trainer.model)
        log("loaded EMA weights for evaluation and quantization")


def run(cfg: GolfConfig, resume: str = "") -> dict:
    """The whole main job; returns the run summary (also written to RUN/run.json on rank 0)."""
    info = dist.init(cfg.train.device)
    golf.ops.set_kernels_enabled(cfg.train.kernels)
    out = run_dir(cfg)
    log = report.RunLog(out / "train.log", enabled=info.is_main)
    try:
        return _run(cfg, info, out, log, resume)
    finally:
        dist.shutdown()


def _run(cfg: GolfConfig, info: DistInfo, out: Path, log, resume: str) -> dict:
    env = report.environment()
    log(f"golf {env['golf']} ({env['git_commit']}) torch {env['torch']} device {info.device} "
        f"world_size {info.world_size} preset {cfg.preset} run {out}")
    log("config " + cfg.to_json().replace("\n", " "))
    dataset = resolve_dataset(cfg, info, log)
    trainer = Trainer(cfg, info, dataset, out, log)
    log(f"model: {trainer.model.num_params():,} parameters, attention {trainer.model.attention_backend}, "
        f"grad_accum {trainer.accum}, compile {trainer.compiled}")
    log(f"optimizer groups: {trainer.opt.summary()}")
    log(f"features: {', '.join(trainer.model.features()) or 'none'}")
    code = measure_code_bytes(cfg) if info.is_main else None  # runs while the model trains
    result = trainer.run(resume)
    summary: dict = {"config": cfg.to_dict(), "environment": env, "run_dir": str(out), "world_size": info.world_size,
                     "grad_accum": trainer.accum, "params": trainer.model.num_params(),
                     "attention_backend": trainer.model.attention_backend, "compiled": trainer.compiled,
                     "features": trainer.model.features(),
                     "steps": result.steps, "stopped_by": result.stopped_by, "train_seconds": result.train_seconds,
                     "ms_per_step": result.ms_per_step, "tokens_per_second": result.tokens_per_second,
                     "final_train_loss": result.history[-1][1] if result.history else None,
                     "peak_memory_bytes": torch.cuda.max_memory_allocated() if info.device.type == "cuda" else None}
    final_weights(trainer, log)
    summary["swa_snapshots"] = trainer.swa.count if trainer.swa is not None else 0
    if cfg.model.num_loops:
        trainer.model.set_looping(True)  # evaluate and calibrate as the model ends training
    pre = score(trainer.model, _pre_quant_cfg(cfg), dataset, info.device, info.rank, info.world_size,
                forward=trainer.eval_model)["plain"]
    log(f"pre-quant val_loss:{pre.val_loss:.6f} val_bpb:{pre.val_bpb:.6f}")
    summary["pre_quant"] = pre.to_dict()
    artifact = out / "artifact.golf"
    t_calib = time.perf_counter()
    hessians = calibrate(trainer.model, cfg, dataset, info, log)  # every rank calibrates on its share
    t_calib = time.perf_counter() - t_calib
    error = None
    if info.is_main:  # one rank packs; the others must learn if it failed (e.g. over budget) instead of hanging
        try:
            summary["artifact"] = quantize_to_artifact(trainer.model, cfg, dataset, info.device, artifact, log,
                                                       hessians=hessians, code=code)
            summary["artifact"]["calibration_seconds"] = t_calib
        except ValueError as e:
            error = str(e)
    error = dist.broadcast_object(error)
    if error is not None:
        raise ValueError(error)
    post = score_artifact(load_artifact_model(artifact, info.device)[0], cfg, dataset, info, log)
    for name, r in post.items():
        log(f"post-quant {name} val_loss:{r.val_loss:.8f} val_bpb:{r.val_bpb:.8f} ({r.tokens:,} tokens, {r.seconds:.1f}s)")
    summary["post_quant"] = {k: v.to_dict() for k, v in post.items()}
    summary["ops"] = golf.ops.implementations()
    if info.is_main:
        _write_reports(out, summary, result, log)
    return summary


def _pre_quant_cfg(cfg: GolfConfig) -> GolfConfig:
    """The pre-quantization diagnostic is the plain score only (as in the records' logs)."""
    pre = GolfConfig.from_dict(cfg.to_dict())
    pre.eval.stride = 0
    pre.eval.ttt = False  # adapting before quantization would not score the artifact
    return pre


def _write_reports(out: Path, summary: dict, result, log) -> None:
    report.write_json(out / "run.json", summary)
    report.plot_losses(out / "loss.png", result.history, [(s, v) for s, v, _ in result.val_history],
                       f"{summary['config']['preset']}: {summary['steps']} steps")
    post = summary["post_quant"]
    art = summary["artifact"]
    rows = [
        ("run", str(out)),
        ("steps", f"{summary['steps']} ({summary['stopped_by']})"),
        ("train time", f"{summary['train_seconds']:.1f} s, {summary['ms_per_step']:.1f} ms/step, "
                       f"{summary['tokens_per_second']:,.0f} tok/s"),
        ("val_bpb pre-quant", f"{summary['pre_quant']['val_bpb']:.4f}"),
        ("val_bpb artifact", f"{post['plain']['val_bpb']:.4f}"),
    ]
    if "sliding" in post:
        rows.append(("val_bpb artifact sliding", f"{post['sliding']['val_bpb']:.4f}"))
    if "ttt" in post:
        rows.append(("val_bpb artifact TTT", f"{post['ttt']['val_bpb']:.4f}"))
    rows.append(("artifact bytes", f"{art['total_bytes']:,} (model {art['model_bytes']:,} + code {art['code_bytes']:,})"))
    rows.append(("ops", ", ".join(f"{k}={v}" for k, v in summary["ops"].items())))
    log(report.summary_table(rows))
