"""Greedy decoding in batches, used by task evaluation, and the prompts it decodes.

Prompts are grouped by length so a batch needs no padding (and so no
attention mask): every row of a batch sees exactly what it would see alone
(:func:`length_batches`, the lab's one batching by length). The next-token
head (head 1) decodes; the other heads are not used here (see
``lab.speculative`` for decoding that uses them). :func:`task_prompts` turns
a task's test records into prompts and finds the token that ends an answer;
:func:`pick` spreads a subset over a test set.

Example:
    >>> import torch
    >>> from lab.config import ModelConfig
    >>> from lab.model import MTPModel
    >>> torch.manual_seed(0) and None
    >>> model = MTPModel(ModelConfig(size="custom", d_model=32, layers=2, n_heads=2, vocab_size=50).resolved())
    >>> outs = greedy_generate(model, [[1, 2, 3], [4, 5], [6, 7, 8]], max_new_tokens=4)
    >>> [len(o) for o in outs]
    [4, 4, 4]
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterator

import torch

from lab.errors import UserError


def length_batches(seqs: list[list[int]], batch_size: int,
                   device: torch.device | str = "cpu") -> Iterator[tuple[list[int], torch.Tensor]]:
    """Sequences of one length stacked into batches of at most ``batch_size`` rows: (indices, (B, T) tensor).

    The one batching by length of the lab (decoding, its benchmark, the
    agreement metric): no padding, so no attention mask, and every row sees
    exactly what it would see alone. Shortest first; input order within a
    length.

    Example:
        >>> [(ids, x.tolist()) for ids, x in length_batches([[1, 2], [3], [4, 5], [6, 7]], 2)]
        [([1], [[3]]), ([0, 2], [[1, 2], [4, 5]]), ([3], [[6, 7]])]
    """
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, seq in enumerate(seqs):
        by_len[len(seq)].append(i)
    for length in sorted(by_len):
        ids = by_len[length]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            yield chunk, torch.tensor([seqs[i] for i in chunk], dtype=torch.long, device=device)


def padded_batches(seqs: list[list[int]], batch_size: int, device: torch.device | str = "cpu",
                   pad: int = 0) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Sequences of any lengths in batches of ``batch_size`` rows, right-padded: (indices, (B, T), lengths (B,)).

    For decoders that keep a length per row (``lab.speculative``: each row's
    own cache positions and attention mask), so a batch need not share a
    length. Sorted by length (stable) first, so a batch pads little.

    Example:
        >>> [(ids, x.tolist(), n.tolist()) for ids, x, n in padded_batches([[1, 2], [3], [4, 5, 6]], 2)]
        [([1, 0], [[3, 0], [1, 2]], [1, 2]), ([2], [[4, 5, 6]], [3])]
    """
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(seqs[i]) for i in chunk)
        x = torch.tensor([seqs[i] + [pad] * (width - len(seqs[i])) for i in chunk], dtype=torch.long, device=device)
        yield chunk, x, torch.tensor([len(seqs[i]) for i in chunk], dtype=torch.long, device=device)


def run_batched(prompts: list[list[int]], generate, *, stop_token: int | None = None,
                batch_size: int = 256, device: torch.device | str = "cpu", padded: bool = False) -> list[list[int]]:
    """Group prompts by length, call ``generate(x)`` per batch, cut each row after the stop token.

    ``generate`` maps a (B, T) prompt tensor to (B, new) tokens; this is the
    batching that plain greedy and self-speculative decoding share. With
    ``padded`` prompts of different lengths share a batch (:func:`padded_batches`)
    and ``generate(x, lengths)`` gets their lengths too. Returns the new
    tokens of each prompt in the input order.

    Example:
        >>> echo = lambda x: x[:, -1:].repeat(1, 3)       # "decodes" the last token three times
        >>> run_batched([[1, 2], [3], [4, 5]], echo, stop_token=None)
        [[2, 2, 2], [3, 3, 3], [5, 5, 5]]
    """
    for i, p in enumerate(prompts):
        if not p:
            raise UserError(f"prompt {i + 1} is empty")
    out: list[list[int]] = [[] for _ in prompts]
    if padded:
        batches = ((ids, functools.partial(generate, lengths=n), x)
                   for ids, x, n in padded_batches(prompts, batch_size, device))
    else:
        batches = ((ids, generate, x) for ids, x in length_batches(prompts, batch_size, device))
    for ids, gen, x in batches:
        new = gen(x)
        for row, i in enumerate(ids):
            toks = new[row].tolist()
            if stop_token is not None and stop_token in toks:
                toks = toks[:toks.index(stop_token) + 1]
            out[i] = toks
    return out


@torch.inference_mode()
def greedy_generate(model, prompts: list[list[int]], max_new_tokens: int, *, stop_token: int | None = None,
                    batch_size: int = 256, device: torch.device | str | None = None) -> list[list[int]]:
    """Greedy continuation of each prompt with the next-token head (KV cache).

    Returns the new tokens of each prompt (in the input order), cut after
    ``stop_token`` (which is kept) or after ``max_new_tokens``.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return run_batched(prompts, lambda x: model.generate(x, max_new_tokens, stop_token=stop_token),
                           stop_token=stop_token, batch_size=batch_size, device=device)
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------
# Which prompts: a task's test records as prompts, a spread-out subset
# ---------------------------------------------------------------------------

def task_prompts(task, records: list[dict], enc) -> tuple[list[list[int]], int | None, int]:
    """Evaluation prompts of test records, the stop token and the answer length in tokens.

    A prompt is the end-of-text token then the encoded ``prompt`` (the example
    boundary seen in training, as the tasks' ``evaluate`` does; a task may
    override with a ``prompt_tokens(record, enc)`` method). The stop token is
    the first token of what the training document puts after the answer
    (``"\\n"`` for polyarith), else None; the length is the longest answer
    plus that stop token.

    Example:
        >>> from generators import registry
        >>> from lab.tokenizers import byte_encoding
        >>> task = registry.create("polyarith", {"test_per_op": 1})
        >>> prompts, stop, length = task_prompts(task, task.build("test", 0)[:2], byte_encoding())
        >>> stop, length, prompts[0][0]
        (10, 6, 256)
    """
    custom = getattr(task, "prompt_tokens", None)
    prompts, stop, longest = [], None, 1
    for rec in records:
        if not custom and "prompt" not in rec:
            raise UserError(f"the {getattr(task, 'name', 'task')} task's test records have no prompt and answer "
                            f"(its texts are continued instead); use --mode continue")
        prompts.append(custom(rec, enc) if custom else [enc.eot_token] + enc.encode_ordinary(rec["prompt"]))
        answer = rec.get("answer", "")
        doc = task.document(rec)
        tail = doc[len(rec["prompt"]) + len(answer):] if doc.startswith(rec["prompt"] + answer) else ""
        if tail and stop is None:
            stop = enc.encode_ordinary(tail)[0]
        longest = max(longest, len(enc.encode_ordinary(answer)) + (1 if tail else 0))
    return prompts, stop, longest


DECODE_MODES = ("answers", "continue")  # bench decode's workloads; a task picks its own with ``decode_mode``


def default_workload(task, context: int) -> tuple[str, int, int]:
    """(mode, prompt tokens, new tokens): the long-generation workload a task's decoding is benchmarked on.

    A task's ``decode_mode`` attribute (default ``"answers"``) names its
    natural workload: its test prompts and their answers (short for
    polyarith), or ``"continue"``: the opening of each held-out text and a
    long continuation, where drafting can pay. The continuation fits the
    model's context, since positions past it were never trained:
    ``min(128, context // 4)`` prompt tokens and ``min(256, context -
    prompt)`` new ones (32 + 96 at a context of 128, 128 + 256 at 512).

    Example:
        >>> class Stories: decode_mode = "continue"
        >>> default_workload(Stories(), 128), default_workload(object(), 512)
        (('continue', 32, 96), ('answers', 0, 0))
    """
    mode = getattr(task, "decode_mode", "answers")
    if mode != "continue":
        return "answers", 0, 0
    prompt = min(128, context // 4)
    return "continue", prompt, min(256, context - prompt)


def continuation_prompts(task, records: list[dict], enc, prompt_tokens: int) -> list[list[int]]:
    """The first ``prompt_tokens`` tokens of each held-out text (end-of-text token, then its document).

    Texts shorter than that are left out; a UserError when every one is.

    Example:
        >>> from generators import registry
        >>> from lab.tokenizers import byte_encoding
        >>> task = registry.create("polyarith", {"test_per_op": 1})
        >>> [len(p) for p in continuation_prompts(task, task.build("test", 0)[:2], byte_encoding(), 4)]
        [4, 4]
    """
    if prompt_tokens < 1:
        raise UserError(f"--prompt-tokens must be at least 1, got {prompt_tokens}")
    docs = [[enc.eot_token] + enc.encode_ordinary(task.document(rec)) for rec in records]
    prompts = [d[:prompt_tokens] for d in docs if len(d) >= prompt_tokens]
    if not prompts:
        raise UserError(f"--prompt-tokens {prompt_tokens} is longer than every held-out text (the longest is "
                        f"{max(map(len, docs), default=0)} tokens); give a smaller --prompt-tokens")
    return prompts


def pick(records: list, limit: int) -> list:
    """``limit`` records spread evenly over the list (all of them if limit is 0 or larger).

    Test sets are often sorted by difficulty: the first ``limit`` would be the easiest.

    Example:
        >>> pick(list(range(10)), 3)
        [0, 3, 6]
    """
    if not limit or limit >= len(records):
        return list(records)
    step = len(records) / limit
    return [records[int(i * step)] for i in range(limit)]
