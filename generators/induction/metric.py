"""The induction metric (Gloeckle et al. 2024, §4.1): can the model copy a name it has seen?

Positions. Every test name is exactly two tokens (t1, t2) at positions
(p, p + 1) of a story's token sequence. An occurrence is *scored* when the
same name already occurred earlier in the story *with the same first token*
(a name after a quote or at a paragraph start has a different first token,
"Kel" instead of " Kel", under a byte-level BPE; the first time each form
appears it is not scored). The test set is built so that t1 occurs nowhere
else in the story, so at a scored position "copy the token that followed the
previous occurrence of the current token" is always right.

Metrics, over all scored occurrences of all test stories (teacher forcing,
greedy top-1):

    induction_success           head 1 at position p predicts t2 (= x[p+1])
    name_first_token_accuracy   head 1 at position p - 1 predicts t1 (= x[p])
    induction_success/head=k    head k at position p + 1 - k predicts t2,
                                i.e. the same target t2 seen k tokens ahead
                                (head=1 is induction_success)
    scored_positions            number of scored occurrences

The position selection and the scoring are pure functions over token ids
(:func:`scored_occurrences`, :func:`score_predictions`), so they can be
tested with hand-written predictors; :func:`evaluate` runs a model and feeds
its argmax predictions to the same functions.

Example:
    >>> toks = [5, 7, 8, 1, 7, 8, 2, 7, 8]              # a name (7, 8) mentioned three times
    >>> occ = [{"positions": [[1, 2], [4, 5], [7, 8]]}]
    >>> scored_occurrences(toks, occ)
    [(4, 5), (7, 8)]
    >>> copy = copy_predictor(toks)                    # copy what followed the previous occurrence
    >>> score_predictions(toks, occ, [copy])["induction_success"]
    (2, 2)
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

# ---------------------------------------------------------------------------
# pure functions over token ids


def scored_occurrences(tokens: Sequence[int], names: Sequence[dict]) -> list[tuple[int, int]]:
    """Positions (p, p + 1) of the name occurrences that are scored, sorted.

    ``names[i]["positions"]`` lists, per occurrence, the token positions that
    make up the name; occurrences that are not exactly two consecutive tokens
    are ignored. An occurrence is scored if an earlier occurrence of the same
    name had the same first token.

    Example:
        >>> scored_occurrences([9, 3, 4, 9, 3, 4], [{"positions": [[1, 2], [4, 5]]}])
        [(4, 5)]
    """
    out = []
    for n in names:
        seen: set[int] = set()
        for pos in n["positions"]:
            if len(pos) != 2 or pos[1] != pos[0] + 1:
                continue
            first = tokens[pos[0]]
            if first in seen:
                out.append((pos[0], pos[1]))
            seen.add(first)
    return sorted(out)


def score_predictions(tokens: Sequence[int], names: Sequence[dict],
                      predictions: Sequence[Sequence[int]]) -> dict[str, tuple[int, int]]:
    """(correct, total) for each metric of one story.

    ``predictions[k][t]`` is head k+1's greedy prediction at position t, i.e.
    its guess for ``tokens[t + k + 1]``; ``predictions[0]`` is the ordinary
    next-token head. Keys: ``induction_success``,
    ``name_first_token_accuracy`` and ``induction_success/head=k`` for
    k = 1..len(predictions).

    Example:
        >>> toks = [1, 7, 8, 1, 7, 8]
        >>> never = [0] * len(toks)                      # never right
        >>> score_predictions(toks, [{"positions": [[1, 2], [4, 5]]}], [never])["induction_success"]
        (0, 1)
    """
    pairs = scored_occurrences(tokens, names)
    res = {"induction_success": [0, 0], "name_first_token_accuracy": [0, 0]}
    for k in range(1, len(predictions) + 1):
        res[f"induction_success/head={k}"] = [0, 0]
    head1 = predictions[0]
    for p1, p2 in pairs:
        res["induction_success"][0] += int(head1[p1] == tokens[p2])
        res["induction_success"][1] += 1
        if p1 >= 1:
            res["name_first_token_accuracy"][0] += int(head1[p1 - 1] == tokens[p1])
            res["name_first_token_accuracy"][1] += 1
        for k, pred in enumerate(predictions, start=1):
            t = p2 - k
            if t >= 0:
                key = f"induction_success/head={k}"
                res[key][0] += int(pred[t] == tokens[p2])
                res[key][1] += 1
    return {k: (v[0], v[1]) for k, v in res.items()}


def combine(per_story: Sequence[dict[str, tuple[int, int]]]) -> dict[str, float]:
    """Sum (correct, total) over stories -> accuracies in [0, 1] plus ``scored_positions``.

    Example:
        >>> combine([{"induction_success": (1, 2)}, {"induction_success": (1, 2)}])
        {'induction_success': 0.5, 'scored_positions': 4.0}
    """
    tot: dict[str, list[int]] = {}
    for d in per_story:
        for k, (c, n) in d.items():
            t = tot.setdefault(k, [0, 0])
            t[0] += c
            t[1] += n
    out = {k: (c / n if n else 0.0) for k, (c, n) in tot.items()}
    out["scored_positions"] = float(tot.get("induction_success", [0, 0])[1])
    return out


def copy_predictor(tokens: Sequence[int]) -> list[int]:
    """At each position, the token that followed the previous occurrence of the current token (else -1).

    The ideal induction head. Example:
        >>> copy_predictor([4, 5, 6, 4])
        [-1, -1, -1, 5]
    """
    last_next: dict[int, int] = {}
    out = []
    for t, tok in enumerate(tokens):
        out.append(last_next.get(tok, -1))
        if t + 1 < len(tokens):
            last_next[tok] = tokens[t + 1]
    return out


def score_predictor(examples: Sequence[dict], predict: Callable[[list[int]], Sequence[Sequence[int]]],
                    bos: int | None = None) -> dict[str, float]:
    """Score a plain-function predictor on annotated test records (see ``corpus.annotate``).

    ``predict(tokens)`` returns one prediction list per head over the whole
    sequence. With ``bos`` given, that token is prepended (as
    :func:`evaluate` does with end-of-text) and positions shift by one.

    Example:
        >>> ex = [{"tokens": [1, 7, 8, 1, 7, 8], "names": [{"positions": [[1, 2], [4, 5]]}]}]
        >>> score_predictor(ex, lambda toks: [copy_predictor(toks)])["induction_success"]
        1.0
    """
    results = []
    for ex in examples:
        tokens, names = list(ex["tokens"]), ex["names"]
        if bos is not None:
            tokens = [bos] + tokens
            names = _shift(names, 1)
        results.append(score_predictions(tokens, names, predict(tokens)))
    return combine(results)


def _shift(names: Sequence[dict], by: int) -> list[dict]:
    return [{**n, "positions": [[p + by for p in pos] for pos in n["positions"]]} for n in names]


# ---------------------------------------------------------------------------
# the model


@torch.no_grad()
def model_predictions(model, seqs: Sequence[Sequence[int]], device, max_batch_tokens: int = 0) -> list[list[list[int]]]:
    """Greedy predictions of every head at every position of each sequence (teacher forcing).

    Sequences are sorted by length and batched; each batch is padded on the
    right with token 0, which is safe because attention is causal (a
    position never sees the padding after it) and padded positions are
    dropped. Returns ``out[i][k]`` = head k+1's argmax at each position of
    sequence i. ``max_batch_tokens`` bounds batch size x length (0: chosen
    from the vocabulary size so that logits stay ~200 MB).

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=11).resolved())
        >>> out = model_predictions(m, [[1, 2, 3], [4, 5]], "cpu")
        >>> [len(o) for o in out], [len(h) for h in out[1]]
        ([2, 2], [2, 2])
    """
    cfg = model.config
    if not max_batch_tokens:
        max_batch_tokens = max(512, int(5e7 // max(cfg.vocab_size, 1)))
    was_training = model.training
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list = [None] * len(seqs)
    i = 0
    try:
        while i < len(order):
            # grow the batch while (batch size x longest length) fits; lengths are ascending
            j = i + 1
            while j < len(order) and (j - i + 1) * len(seqs[order[j]]) <= max_batch_tokens:
                j += 1
            batch = [seqs[k] for k in order[i:j]]
            T = max(len(s) for s in batch)
            x = torch.zeros(len(batch), T, dtype=torch.long)
            for r, s in enumerate(batch):
                x[r, :len(s)] = torch.as_tensor(s, dtype=torch.long)
            x = x.to(device)
            preds = [lg.argmax(-1).cpu() for lg in model(x)]  # n heads x (B, T)
            for r, k in enumerate(order[i:j]):
                L = len(seqs[k])
                out[k] = [p[r, :L].tolist() for p in preds]
            i = j
    finally:
        model.train(was_training)
    return out


def evaluate(model, examples: Sequence[dict], device, bos: int) -> dict[str, float]:
    """Induction metrics of ``model`` on annotated test records (see module docstring).

    Each story is fed as ``[bos] + tokens`` (``bos`` = the end-of-text token
    that separates training documents).

    Example:
        >>> from lab.config import ModelConfig
        >>> from lab.model import MTPModel
        >>> m = MTPModel(ModelConfig(size="custom", d_model=16, layers=3, n_heads=2, n=2, vocab_size=11).resolved())
        >>> ex = [{"tokens": [1, 7, 8, 1, 7, 8], "names": [{"positions": [[1, 2], [4, 5]]}]}]
        >>> sorted(evaluate(m, ex, "cpu", bos=10))
        ['induction_success', 'induction_success/head=1', 'induction_success/head=2', 'name_first_token_accuracy', 'scored_positions']
    """
    seqs = [[bos] + list(ex["tokens"]) for ex in examples]
    preds = model_predictions(model, seqs, device)
    results = [score_predictions(s, _shift(ex["names"], 1), p) for s, ex, p in zip(seqs, examples, preds)]
    return combine(results)
