"""Train one probe point at one learning rate and step budget, deterministically on the CPU: one run of the
sweep that the runner turns into a record (docs/probe.md §3).

Determinism: the initialisation, every training batch, the validation set and the held-out test set come from
generators seeded by the point's seed alone; the thread count is fixed by the settings and torch's deterministic
algorithms are on. The same point, rate and steps on the same machine give the same accuracy, bit for bit.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from scipy import stats

from fastformer_bench.probe import tasks
from fastformer_bench.probe.model import ProbeModel, parameter_count
from fastformer_bench.probe.point import ProbePoint, ProbeSettings

#: seed offsets: the held-out test set (seed*EVAL_OFFSET + 1) and the validation set (seed*VAL_OFFSET) never
#: overlap each other or the training stream (seed*STREAM_OFFSET + 2 + step) for seeds below 40,000
EVAL_OFFSET, STREAM_OFFSET, VAL_OFFSET = 999_983, 1_000_003, 999_979
#: sequences the static-query analysis looks at, and the longest sequence whose weights a record keeps whole
AUC_EXAMPLES, EXAMPLE_MAX_LEN = 64, 256


def _examples(point: ProbePoint, n: int, seed: int, settings: ProbeSettings) -> tasks.Batch:
    return tasks.generate(point.task, n, point.seq_len, point.vocab, seed, pairs=point.pairs,
                          share=settings.topic_share)


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=tasks.IGNORE)


@torch.no_grad()
def _accuracy(model: ProbeModel, batch: tasks.Batch, chunk: int = 128) -> tuple[float, float]:
    """Held-out accuracy (over labelled positions) and loss."""
    right = total = 0
    loss_sum = 0.0
    for start in range(0, batch.tokens.shape[0], chunk):
        logits = model(batch.tokens[start:start + chunk])
        targets = batch.targets[start:start + chunk]
        labelled = targets != tasks.IGNORE
        right += int((logits.argmax(-1) == targets)[labelled].sum())
        count = int(labelled.sum())
        total += count
        loss_sum += float(_loss(logits, targets)) * count
    return right / total, loss_sum / total


def _schedule(step: int, steps: int) -> float:
    """Linear warm-up over the first 10 % of the steps, then a cosine decay to 10 % of the peak rate."""
    warm = max(1, steps // 10)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _auc(weights: np.ndarray, relevant: np.ndarray) -> float | None:
    """Mean over sequences of the ROC AUC of the weights for relevant tokens against the others."""
    found = []
    for w, r in zip(weights, relevant):
        positives, negatives = w[r], w[~r]
        if len(positives) and len(negatives):
            u = stats.mannwhitneyu(positives, negatives).statistic
            found.append(u / (len(positives) * len(negatives)))
    return float(np.mean(found)) if found else None


def static_query_analysis(model: ProbeModel, batch: tasks.Batch) -> dict:
    """How well each layer's and column's learned pooling weights single out the tokens that carry the answer.

    ``query_auc[l][c]``: ROC AUC of a_c (head-averaged) for relevant tokens (topic words, markers) vs the rest;
    0.5 is a query blind to them, 1.0 one that ranks every relevant token above every other. An example
    sequence keeps its tokens, which are relevant, and every layer's and column's weights.
    """
    if model.mixer != "additive" or batch.relevant is None:
        return {"query_auc": None, "query_auc_mean": None, "example": None}
    tokens, relevant = batch.tokens[:AUC_EXAMPLES], batch.relevant[:AUC_EXAMPLES]
    weights = model.pooling_weights(tokens).numpy()  # [layers, C-1, E, N]
    mask = relevant.numpy()
    auc = [[_auc(column, mask) for column in layer] for layer in weights]
    values = [a for layer in auc for a in layer if a is not None]
    example = None
    if tokens.shape[1] <= EXAMPLE_MAX_LEN:
        example = {"tokens": tokens[0].tolist(), "relevant": mask[0].tolist(),
                   "weights": np.round(weights[:, :, 0, :], 6).tolist()}
    return {"query_auc": auc, "query_auc_mean": float(np.mean(values)) if values else None, "example": example}


def validation_set(point: ProbePoint, settings: ProbeSettings) -> tasks.Batch:
    """The point's validation split: its own seed stream, never a training batch or the test set."""
    return _examples(point, settings.val_examples, point.seed * VAL_OFFSET, settings)


def train_point(point: ProbePoint, settings: ProbeSettings, lr: float | None = None,
                steps: int | None = None) -> dict:
    """Train and evaluate ``point`` at peak rate ``lr`` (default: the first of ``settings.lrs``) for ``steps``
    (default: its budget, the grid's or the settings'); the run's measured fields (the caller adds identity and
    status). ``steps_run`` is below ``steps`` where the early stop (``eval_every``) found 100 % on validation."""
    settings = point.budget(settings)
    lr = settings.lrs[0] if lr is None else lr
    steps = settings.steps if steps is None else steps
    shape = tasks.shape(point.task, point.seq_len, point.vocab)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(point.seed)
        model = ProbeModel(mixer=point.mixer, impl=point.implementation, vocab=shape.vocab, classes=shape.classes,
                           per_position=shape.per_position, seq_len=point.seq_len, width=point.width,
                           heads=point.heads, layers=point.layers, columns=point.columns)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, steps))
        held_out = _examples(point, settings.eval_examples, point.seed * EVAL_OFFSET + 1, settings)
        validation = validation_set(point, settings)
        started = time.perf_counter()
        model.train()
        done = 0
        for step in range(steps):
            batch = _examples(point, settings.batch_for(point.seq_len), point.seed * STREAM_OFFSET + step + 2, settings)
            loss = _loss(model(batch.tokens), batch.targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            done = step + 1
            if time.perf_counter() - started > settings.time_limit_s:
                raise TimeoutError(f"stopped after step {done} of {steps}: over the "
                                   f"{settings.time_limit_s:g} s limit")
            if settings.eval_every and done % settings.eval_every == 0 and done < steps:
                model.eval()
                solved = _accuracy(model, validation)[0] == 1.0  # mixer-blind: the same rule for every run
                model.train()
                if solved:
                    break
        model.eval()
        val_accuracy = _accuracy(model, validation)[0]
        train_s = time.perf_counter() - started
        accuracy, held_out_loss = _accuracy(model, held_out)
        return {"accuracy": accuracy, "val_accuracy": val_accuracy, "chance": shape.chance, "loss": held_out_loss,
                "train_loss": loss.item(), "train_s": train_s, "steps": steps, "steps_run": done, "lr": lr,
                "params": parameter_count(model), "task_kind": tasks.KINDS[point.task],
                **static_query_analysis(model, held_out)}
    finally:  # the caller's process as it was (a test session, a notebook)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
