"""Synthetic tasks of the capability probe, generated in-process from a seed (no downloads).

Two global tasks, which a pooled summary of the sequence can solve (``topic``, ``count``), and pairwise ones,
which need tokens compared with tokens (``mqar``, ``recall``; ``membership`` and ``duplicate``, which the softmax
control does not learn at the probe's scale, stay generatable but are in no preset: docs/probe.md §2). Every
example set comes from a ``torch.Generator``: the same seed gives the same tokens on every machine.

A task returns a :class:`Batch`: ``tokens`` [E, N] (int64); ``targets`` [E] for sequence labels or [E, N] with
``IGNORE`` where a position has no label; ``relevant`` [E, N] bool, the tokens that carry the answer (topic words,
markers), which the static-query analysis ranks the learned pooling weights against (None where no single token
carries it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: positions without a label (cross_entropy's ignore_index)
IGNORE = -100
TOPIC_CLASSES = 4


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor
    targets: torch.Tensor
    relevant: torch.Tensor | None


@dataclass(frozen=True)
class TaskShape:
    """What the model must be built for: vocabulary, output classes, one label per sequence or per position."""

    vocab: int
    classes: int
    per_position: bool
    chance: float


# -- topic (global) -----------------------------------------------------------------------------------------------
def _topic_words(vocab: int) -> int:
    """Topic words per class: half the vocabulary is topic words, split evenly between the classes."""
    return vocab // (2 * TOPIC_CLASSES)


def topic(n: int, seq_len: int, vocab: int, g: torch.Generator, share: float, **_) -> Batch:
    """Each token is, with probability ``share``, one of its class's topic words, else a shared noise word."""
    per_class = _topic_words(vocab)
    labels = torch.randint(TOPIC_CLASSES, (n,), generator=g)
    is_topic = torch.rand(n, seq_len, generator=g) < share
    topic_tokens = labels[:, None] * per_class + torch.randint(per_class, (n, seq_len), generator=g)
    first_noise = TOPIC_CLASSES * per_class
    noise_tokens = first_noise + torch.randint(vocab - first_noise, (n, seq_len), generator=g)
    return Batch(torch.where(is_topic, topic_tokens, noise_tokens), labels, is_topic)


# -- count (global) -----------------------------------------------------------------------------------------------
def count(n: int, seq_len: int, vocab: int, g: torch.Generator, **_) -> Batch:
    """Marker 0 and marker 1 occur 1..N/8 times each, never equally often; label: does marker 1 occur more?"""
    most = max(2, seq_len // 8)
    first = torch.randint(1, most + 1, (n,), generator=g)
    # The other count differs by 1..most-1 (wrapping within 1..most): never a tie.
    second = (first - 1 + torch.randint(1, most, (n,), generator=g)) % most + 1
    tokens = 2 + torch.randint(vocab - 2, (n, seq_len), generator=g)
    order = torch.rand(n, seq_len, generator=g).argsort(dim=1)  # a random placement per sequence
    rank = order.argsort(dim=1)
    tokens = torch.where(rank < first[:, None], 0, tokens)
    tokens = torch.where((rank >= first[:, None]) & (rank < (first + second)[:, None]), 1, tokens)
    return Batch(tokens, (second > first).long(), tokens < 2)


# -- mqar (pairwise) ----------------------------------------------------------------------------------------------
def _mqar_split(vocab: int) -> int:
    """Token 0 fills; keys are 1..K and values K+1..vocab-1."""
    return (vocab - 1) // 2


def mqar(n: int, seq_len: int, vocab: int, g: torch.Generator, pairs: int, **_) -> Batch:
    """Zoology's multi-query associative recall for an encoder: ``pairs`` key-value pairs, then every key once more
    as a query at a random later position; the label at a query is its key's value."""
    keys_n = _mqar_split(vocab)
    values_n = vocab - 1 - keys_n
    keys = torch.rand(n, keys_n, generator=g).argsort(dim=1)[:, :pairs] + 1  # distinct keys per sequence
    values = 1 + keys_n + torch.randint(values_n, (n, pairs), generator=g)
    tokens = torch.zeros(n, seq_len, dtype=torch.long)
    tokens[:, 0:2 * pairs:2], tokens[:, 1:2 * pairs:2] = keys, values
    # Query slots: `pairs` distinct positions after the pairs, in random order.
    slots = torch.rand(n, seq_len - 2 * pairs, generator=g).argsort(dim=1)[:, :pairs] + 2 * pairs
    which = torch.rand(n, pairs, generator=g).argsort(dim=1)  # which pair each slot asks for
    targets = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    tokens.scatter_(1, slots, keys.gather(1, which))
    targets.scatter_(1, slots, values.gather(1, which))
    return Batch(tokens, targets, None)


# -- duplicate (pairwise) -----------------------------------------------------------------------------------------
def duplicate_vocab(vocab: int, seq_len: int) -> int:
    """Distinct tokens need a vocabulary of at least 2N (so a sequence without a repeat exists and is typical)."""
    return max(vocab, 2 * seq_len)


def duplicate(n: int, seq_len: int, vocab: int, g: torch.Generator, **_) -> Batch:
    """N distinct tokens; in half the sequences one of them is copied over another position. Label: a repeat?"""
    size = duplicate_vocab(vocab, seq_len)
    tokens = torch.rand(n, size, generator=g).argsort(dim=1)[:, :seq_len].clone()
    labels = torch.randint(2, (n,), generator=g)
    source = torch.randint(seq_len, (n,), generator=g)
    target = (source + torch.randint(1, seq_len, (n,), generator=g)) % seq_len  # another position
    rows = torch.arange(n)
    copied = tokens[rows, source]
    tokens[rows, target] = torch.where(labels.bool(), copied, tokens[rows, target])
    return Batch(tokens, labels, None)


# -- membership (pairwise) ----------------------------------------------------------------------------------------
def membership_queries(seq_len: int) -> int:
    """Queries per sequence: N/16 (at least one), so every N gives as many labels per training batch."""
    return max(1, seq_len // 16)


def membership(n: int, seq_len: int, vocab: int, g: torch.Generator, **_) -> Batch:
    """A context of N - 2Q tokens drawn from a random half of the content words (1..vocab-1), then Q pairs of the
    marker (token 0) and a query word. Label at each query: does it occur in the context? Half the queries (a fair
    coin each) are a word of the context, the others a content word the context lacks."""
    queries = membership_queries(seq_len)
    length, content = seq_len - 2 * queries, vocab - 1
    subset = torch.rand(n, content, generator=g).argsort(dim=1)[:, :content // 2] + 1  # the words a context uses
    context = subset.gather(1, torch.randint(content // 2, (n, length), generator=g))
    present = torch.zeros(n, vocab, dtype=torch.bool)
    present.scatter_(1, context, True)
    labels = torch.randint(2, (n, queries), generator=g)
    inside = context.gather(1, torch.randint(length, (n, queries), generator=g))  # a word of the context
    # A word the context lacks: the highest of random scores over the absent content words.
    scores = torch.rand(n, queries, vocab, generator=g).masked_fill(present[:, None, :], -1.0)
    scores[:, :, 0] = -1.0  # the marker is no content word
    outside = scores.argmax(-1)
    asked = torch.where(labels.bool(), inside, outside)
    tokens = torch.cat([context, torch.stack([torch.zeros_like(asked), asked], -1).reshape(n, 2 * queries)], 1)
    targets = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    targets[:, length + 1::2] = labels
    return Batch(tokens, targets, None)


# -- recall (pairwise) --------------------------------------------------------------------------------------------
def _recall_split(vocab: int) -> int:
    """Token 0 marks a query; keys are 1..K, values K+1..2K and noise words 2K+1..vocab-1 (K = (vocab-1)//3)."""
    return (vocab - 1) // 3


def recall(n: int, seq_len: int, vocab: int, g: torch.Generator, pairs: int, **_) -> Batch:
    """Noisy recall: ``pairs`` key-value bigrams at random places in a context of noise words (N - 2*pairs
    tokens), then a query for each key in random order: the marker (token 0) and the key. The label at a query's
    key is its value."""
    k = _recall_split(vocab)
    length = seq_len - 2 * pairs
    keys = torch.rand(n, k, generator=g).argsort(dim=1)[:, :pairs] + 1  # distinct keys per sequence
    values = 1 + k + torch.randint(k, (n, pairs), generator=g)
    tokens = 1 + 2 * k + torch.randint(vocab - 1 - 2 * k, (n, length), generator=g)
    starts = 2 * torch.rand(n, length // 2, generator=g).argsort(dim=1)[:, :pairs]  # distinct bigram slots
    tokens.scatter_(1, starts, keys)
    tokens.scatter_(1, starts + 1, values)
    which = torch.rand(n, pairs, generator=g).argsort(dim=1)  # which pair each query asks for
    queries = torch.stack([torch.zeros_like(keys), keys.gather(1, which)], -1).reshape(n, 2 * pairs)
    targets = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    targets[:, length + 1::2] = values.gather(1, which)
    return Batch(torch.cat([tokens, queries], 1), targets, None)


GENERATORS = {"topic": topic, "count": count, "mqar": mqar, "recall": recall, "membership": membership,
              "duplicate": duplicate}
#: what a task needs, for the report: global tasks a pooled summary can solve; pairwise ones compare tokens
KINDS = {"topic": "global", "count": "global", "mqar": "pairwise", "recall": "pairwise", "membership": "pairwise",
         "duplicate": "pairwise"}
NAMES = tuple(GENERATORS)


def check(task: str, seq_len: int, vocab: int, pairs: int) -> None:
    """ValueError with one sentence for a task that cannot be generated at this size."""
    if task not in GENERATORS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(NAMES)}.")
    if task == "topic" and _topic_words(vocab) < 1:
        raise ValueError(f"topic needs a vocabulary of at least {2 * TOPIC_CLASSES}, got {vocab}.")
    if task == "count" and (vocab < 3 or seq_len < 16):
        raise ValueError(f"count needs a vocabulary of at least 3 and seq_len >= 16, got {vocab} and {seq_len}.")
    if task == "mqar":
        if 3 * pairs > seq_len:
            raise ValueError(f"mqar with {pairs} pairs needs seq_len >= {3 * pairs} (pairs, then one query each), "
                             f"got {seq_len}.")
        if pairs > _mqar_split(vocab) or vocab - 1 - _mqar_split(vocab) < 2:
            raise ValueError(f"mqar with {pairs} pairs needs a vocabulary of at least {2 * pairs + 1}, got {vocab}.")
    if task == "recall":
        if 4 * pairs > seq_len:
            raise ValueError(f"recall with {pairs} pairs needs seq_len >= {4 * pairs} (the pairs among noise, then "
                             f"a marked query each), got {seq_len}.")
        if pairs > _recall_split(vocab) or vocab - 1 - 2 * _recall_split(vocab) < 1:
            raise ValueError(f"recall with {pairs} pairs needs a vocabulary of at least {3 * max(pairs, 1) + 1}, "
                             f"got {vocab}.")
    if task == "membership" and (vocab < 5 or seq_len < 4):
        raise ValueError(f"membership needs a vocabulary of at least 5 and seq_len >= 4, got {vocab} and {seq_len}.")
    if task == "duplicate" and seq_len < 2:
        raise ValueError(f"duplicate needs seq_len >= 2, got {seq_len}.")


def shape(task: str, seq_len: int, vocab: int) -> TaskShape:
    """The model's vocabulary and outputs for this task, and the accuracy of guessing."""
    if task == "topic":
        return TaskShape(vocab, TOPIC_CLASSES, False, 1 / TOPIC_CLASSES)
    if task == "mqar":
        return TaskShape(vocab, vocab, True, 1 / (vocab - 1 - _mqar_split(vocab)))
    if task == "duplicate":
        return TaskShape(duplicate_vocab(vocab, seq_len), 2, False, 0.5)
    if task == "membership":
        return TaskShape(vocab, 2, True, 0.5)
    if task == "recall":
        return TaskShape(vocab, vocab, True, 1 / _recall_split(vocab))
    return TaskShape(vocab, 2, False, 0.5)


def generate(task: str, n: int, seq_len: int, vocab: int, seed: int, *, pairs: int = 8,
             share: float = 0.25) -> Batch:
    """``n`` examples of ``task`` from ``seed`` alone."""
    check(task, seq_len, vocab, pairs)
    g = torch.Generator().manual_seed(seed)
    return GENERATORS[task](n, seq_len, vocab, g, pairs=pairs, share=share)
