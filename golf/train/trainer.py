"""The training loop: micro-batches with gradient accumulation, Muon + Adam with the schedule, EMA,
compile priming, periodic validation, a wall-clock cap, atomic checkpoints, resume and NaN stops
(techniques.md §3.7–§3.10, §6.1–§6.2)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import golf.ops
from golf.config import GolfConfig
from golf.data.dataset import Dataset
from golf.data.loader import TokenLoader
from golf.eval.bpb import build_byte_luts
from golf.eval.evaluate import autocast_for, eval_plain
from golf.model import GPT
from golf.optim import EMA, build_optimizers, exclude_from_ddp
from golf.optim.schedule import lr_scale, muon_momentum
from golf.optim.swa import SWA
from golf.quant.qat import qat_should_enable, set_qat
from golf.train import checkpoint, dist
from golf.train.dist import DistInfo


class TrainingDiverged(ValueError):
    pass


def grad_accum_steps(batch_tokens: int, seq_len: int, world_size: int, max_micro_tokens: int) -> int:
    """Fewest micro-batches per rank such that each holds whole sequences and at most max_micro_tokens."""
    if batch_tokens % (world_size * seq_len):
        raise ValueError(
            f"train.batch_tokens={batch_tokens} must be a multiple of world_size*seq_len={world_size * seq_len}"
        )
    per_rank = batch_tokens // world_size
    for k in range(1, per_rank // seq_len + 1):
        if per_rank % k == 0 and (per_rank // k) % seq_len == 0 and per_rank // k <= max_micro_tokens:
            return k
    raise ValueError(
        f"train.max_micro_batch_tokens={max_micro_tokens} is smaller than one sequence (train.seq_len={seq_len})"
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_compile(cfg: GolfConfig, device: torch.device) -> bool:
    return cfg.train.compile == "on" or (cfg.train.compile == "auto" and device.type == "cuda")


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    stopped_by: str  # "iterations" | "wallclock"
    tokens: int
    history: list[tuple[int, float]] = field(default_factory=list)
    val_history: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def ms_per_step(self) -> float:
        return 1000 * self.train_seconds / max(self.steps, 1)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.train_seconds, 1e-9)


class Trainer:
    def __init__(self, cfg: GolfConfig, info: DistInfo, dataset: Dataset, out_dir: Path, log):
        self.cfg, self.info, self.dataset, self.out_dir, self.log = cfg, info, dataset, out_dir, log
        self.device = info.device
        t = cfg.train
        self.accum = grad_accum_steps(t.batch_tokens, t.seq_len, info.world_size, t.max_micro_batch_tokens)
        seed_everything(cfg.seed)
        self.model = GPT(cfg.model).to(self.device)
        self.compiled = use_compile(cfg, self.device)
        fwd = torch.compile(self.model, dynamic=False, fullgraph=True) if self.compiled else self.model
        self.eval_model = fwd
        self.opt = build_optimizers(self.model, cfg.optim)  # before DDP: sharded Muon broadcasts its params
        if info.distributed:
            torch._dynamo.config.optimize_ddp = False
            ids = [self.device.index] if self.device.type == "cuda" else None
            if self.opt.muon is not None and self.opt.muon.distributed == "sharded":
                exclude_from_ddp(fwd, self.opt.muon)  # Muon reduce-scatters its own gradients
            fwd = DDP(fwd, device_ids=ids, broadcast_buffers=False)
        self.fwd = fwd
        self.ema = EMA(self.model, cfg.optim.ema_decay) if cfg.optim.ema_decay > 0 else None
        o = cfg.optim
        self.swa = SWA(o.swa_every, o.swa_start_lr_scale) if o.swa_every > 0 else None
        self.qat_on = False
        self.loader = self.new_loader()
        self.lut = build_byte_luts(dataset.processor(), cfg.model.vocab_size)
        self.val_tokens = dataset.val_tokens(t.val_tokens) if t.val_every else None
        self.ckpt_path = out_dir / "checkpoint.pt"

    def new_loader(self) -> TokenLoader:
        t = self.cfg.train
        return TokenLoader(self.dataset.train_files, batch_tokens=t.batch_tokens, seq_len=t.seq_len,
                           grad_accum=self.accum, rank=self.info.rank, world_size=self.info.world_size,
                           seed=self.cfg.seed, vocab_size=self.dataset.vocab_size)

    # -- one optimizer step -------------------------------------------------------------------------------
    def step(self, lr: float, momentum: float) -> torch.Tensor:
        """Forward/backward over `accum` micro-batches, clip, optimizer step, EMA. Returns the mean loss."""
        total = torch.zeros((), device=self.device)
        for i in range(self.accum):
            x, y = self.loader.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = i == self.accum - 1
            sync = contextlib.nullcontext() if (last or not isinstance(self.fwd, DDP)) else self.fwd.no_sync()
            with sync:
                with autocast_for(self.device):
                    loss = self.fwd(x, y)
                (loss / self.accum).backward()
            total += loss.detach()
        if self.cfg.optim.grad_clip > 0:
            self.opt.clip_grad_norm(self.cfg.optim.grad_clip)
        self.opt.set_lr_scale(lr)
        self.opt.set_muon_momentum(momentum)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        return total / self.accum

    def schedule(self, step: int, train_seconds: float) -> tuple[float, float]:
        o, t = self.cfg.optim, self.cfg.train
        lr = lr_scale(step, iterations=t.iterations, elapsed_s=train_seconds, max_seconds=self.time_cap(),
                      warmdown_iters=o.warmdown_iters, warmdown_frac=o.warmdown_frac, min_lr=o.min_lr)
        mom = muon_momentum(step, start=o.muon_momentum_start, end=o.muon_momentum,
                            warmup_steps=o.muon_momentum_warmup_steps)
        return lr, mom

    def set_graph(self, looping: bool, qat: bool) -> None:
        """Switch depth recurrence and QAT (both real inputs of the compiled graph)."""
        if self.cfg.model.num_loops:
            self.model.set_looping(looping)
        if self.cfg.quant.qat:
            set_qat(self.model, qat, self.cfg.quant)
            self.qat_on = qat

    def update_qat(self, step: int, lr: float) -> None:
        """Late QAT: fake-quantize the matrices from the first step whose LR scale is below the threshold."""
        if self.cfg.quant.qat and not self.qat_on and qat_should_enable(lr, self.cfg.quant):
            self.set_graph(self.model.looping if self.cfg.model.num_loops else False, True)
            self.log(f"step:{step} QAT on (lr scale {lr:.3f})")

    def update_looping(self, step: int, train_seconds: float) -> None:
        """Switch depth recurrence on once the training fraction reaches model.loop_enable_at (§2.15): the
        fraction of the wall-clock cap when there is one, else of the iterations."""
        m = self.cfg.model
        if not m.num_loops or self.model.looping:
            return
        cap = self.time_cap()
        frac = train_seconds / cap if cap else step / self.cfg.train.iterations
        if frac >= m.loop_enable_at:
            self.model.set_looping(True)
            self.log(f"step:{step} depth recurrence on (training fraction {frac:.3f})")

    def time_cap(self) -> float:
        t = self.cfg.train
        return max(t.max_wallclock_seconds - t.quant_reserve_seconds, 0.0) if t.max_wallclock_seconds > 0 else 0.0

    # -- compile priming ----------------------------------------------------------------------------------
    def prime(self) -> None:
        """Run warmup_steps real steps so compilation and autotuning happen before the timer, then restore
        the initial weights, optimizer state and data position (techniques.md §3.7a)."""
        n = self.cfg.train.warmup_steps
        if n <= 0:
            return
        t0 = time.perf_counter()
        model_state = copy.deepcopy(self.model.state_dict())
        opt_state = copy.deepcopy(self.opt.state_dict())
        # Depth recurrence and QAT change the graph when they switch on: compile every variant here, untimed.
        variants = [(False, False)]
        if self.cfg.model.num_loops:
            variants.append((True, False))
        if self.cfg.quant.qat:
            variants.append((bool(self.cfg.model.num_loops), True))
        for looping, qat in variants:
            self.set_graph(looping, qat)
            for _ in range(n):
                self.step(*self.schedule(0, 0.0))
        self.set_graph(False, False)
        self.sync()
        self.model.load_state_dict(model_state)
        self.opt.load_state_dict(opt_state)
        self.loader = self.new_loader()
        if self.ema is not None:
            self.ema = EMA(self.model, self.cfg.optim.ema_decay)
        self.log(f"priming: {n} warmup steps in {time.perf_counter() - t0:.1f}s (state restored; not timed)")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- checkpoints --------------------------------------------------------------------------------------
    def save(self, step: int, train_seconds: float, result: TrainResult) -> None:
        state = {
            "config": self.cfg.to_json(),
            "step": step,
            "train_seconds": train_seconds,
            "tokens": result.tokens,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "loader": self.loader.state_dict(),
            "history": [list(h) for h in result.history],
            "val_history": [list(v) for v in result.val_history],
        }
        checkpoint.save(self.ckpt_path, state, self.opt.state_dict(), self.info.rank)

    def restore(self, path: str) -> tuple[int, float, TrainResult]:
        state, opt_state = checkpoint.load(Path(path), self.info.rank)
        saved = GolfConfig.from_dict(json.loads(state["config"]))
        if saved.model != self.cfg.model:
            raise ValueError(f"--resume {path}: its model config differs from this run's; resume with the same preset")
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(opt_state)
        if self.swa is not None and state.get("swa") is not None:
            self.swa.load_state_dict(state["swa"])
        self.loader.load_state_dict(state["loader"])
        result = TrainResult(state["step"], state["train_seconds"], "iterations", state["tokens"],
                             [tuple(h) for h in state["history"]], [tuple(v) for v in state["val_history"]])
        self.log(f"resumed from {path} at step {state['step']}")
        return state["step"], state["train_seconds"], result

    # -- the loop -----------------------------------------------------------------------------------------
    def validate(self, step: int, result: TrainResult) -> None:
        r = eval_plain(self.eval_model, self.val_tokens, self.lut, seq_len=self.cfg.train.seq_len,
                       batch_seqs=self.cfg.eval.batch_seqs, device=self.device, rank=self.info.rank,
                       world_size=self.info.world_size)
        result.val_history.append((step, r.val_loss, r.val_bpb))
        self.log(f"step:{step} val_loss:{r.val_loss:.4f} val_bpb:{r.val_bpb:.4f} ({r.tokens} tokens)")

    def run(self, resume: str = "") -> TrainResult:
        t = self.cfg.train
        self.prime()
        step, train_seconds, result = 0, 0.0, TrainResult(0, 0.0, "iterations", 0)
        if resume:
            step, train_seconds, result = self.restore(resume)
        cap = self.time_cap()
        tokens_per_step = t.batch_tokens
        # A live bar only on an interactive terminal: in a log file it is one huge line (train.log has the steps).
        bar = tqdm(total=t.iterations, initial=step, disable=not (self.info.is_main and sys.stderr.isatty()),
                   unit="step", dynamic_ncols=True)
        self.model.train()
        while step < t.iterations:
            self.update_looping(step, train_seconds)
            lr, mom = self.schedule(step, train_seconds)
            self.update_qat(step, lr)
            t0 = time.perf_counter()
            loss = self.step(lr, mom)
            loss = dist.all_reduce(loss.detach().clone(), "avg").item()  # also the per-step sync for timing
            dt = time.perf_counter() - t0
            golf.ops.flush_warnings()
            if not math.isfinite(loss):
                kept = f"the last good checkpoint is {self.ckpt_path}" if self.ckpt_path.exists() else "no checkpoint was written yet"
                raise TrainingDiverged(
                    f"train loss is {loss} at step {step + 1}; stopped ({kept}). Lower optim.matrix_lr/embed_lr, "
                    "set optim.grad_clip, or check the data"
                )
            step += 1
            train_seconds += dt
            result.tokens += tokens_per_step
            if self.swa is not None and self.swa.maybe_update(self.model, step, lr) and self.swa.count == 1:
                self.log(f"step:{step} SWA collecting every {self.cfg.optim.swa_every} steps")
            result.history.append((step, loss))
            ms = 1000 * train_seconds / step
            bar.set_postfix(loss=f"{loss:.4f}", ms=f"{1000 * dt:.0f}", tok_s=f"{tokens_per_step / dt:,.0f}")
            bar.update(1)
            if step <= 5 or step % t.log_every == 0 or step == t.iterations:
                self.log(f"step:{step}/{t.iterations} train_loss:{loss:.4f} train_time:{1000 * train_seconds:.0f}ms "
                         f"step_avg:{ms:.1f}ms tok/s:{tokens_per_step / dt:,.0f}")
            if t.val_every and step % t.val_every == 0 and step < t.iterations:
                self.validate(step, result)
            if t.checkpoint_every and step % t.checkpoint_every == 0:
                self.save(step, train_seconds, result)
            if cap:
                over = dist.all_reduce(torch.tensor(float(train_seconds >= cap), device=self.device), "max").item()
                if over:
                    result.stopped_by = "wallclock"
                    self.log(f"stopping_early: wallclock_cap train_time:{1000 * train_seconds:.0f}ms step:{step}")
                    break
        bar.close()
        result.steps, result.train_seconds = step, train_seconds
        if self.val_tokens is not None:
            self.validate(step, result)
        self.save(step, train_seconds, result)
        return result
