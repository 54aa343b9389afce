"""A complete third-party task for mtplab: copy a random string.

The prompt is a random lowercase string followed by ``|``; the answer repeats
the string. Difficulty is the length. Training lengths are 2..8 (in-domain);
the test set also has lengths 9..12 (out-of-domain extrapolation).

Use it without installing anything::

    MTPLAB_TASKS=docs/examples/copy_task.py mtplab tasks
    MTPLAB_TASKS=docs/examples/copy_task.py mtplab train --task copy --size 1M --n 2 --out runs/copy

or ship it in a package that declares the entry point::

    [project.entry-points."mtplab.tasks"]
    copy = "copy_task:CopyTask"

Example:
    >>> task = CopyTask(CopyConfig(test_per_length=1))
    >>> rec = task.build("test", 0)[0]
    >>> rec["prompt"].endswith("|") and rec["answer"] == rec["prompt"][:-1]
    True
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from generators.registry import Task, register
from lab.decode import greedy_generate


@dataclass(frozen=True)
class CopyConfig:
    train_examples: int = 20_000  # training strings
    train_max_len: int = 8  # lengths 2..train_max_len are in-domain
    test_max_len: int = 12  # lengths above train_max_len are out-of-domain
    test_per_length: int = 100  # test strings per length


@register
class CopyTask(Task):
    name = "copy"
    Config = CopyConfig
    objective = "accuracy/in_domain"
    direction = "maximize"
    description = "copy a random string after '|' (length = difficulty)"
    title, difficulty = "Copy", "string length"  # the analysis figures' title and x axis
    default_context = 64  # train.context when left at 0: a few whole documents per window

    def __init__(self, config: CopyConfig):
        super().__init__(config)
        # The slices evaluate() reports, in-domain and out-of-domain for this config: the figures shade the second.
        self.in_domain = tuple(f"accuracy/length={n}" for n in range(2, config.train_max_len + 1))
        self.ood = tuple(f"accuracy/length={n}" for n in range(config.train_max_len + 1, config.test_max_len + 1))

    def _example(self, split: str, seed: int, index: int, length: int) -> dict:
        # One RNG per example, seeded by its identity: deterministic in (config, seed, index).
        rng = random.Random(f"copy/{split}/{seed}/{index}/{length}")
        text = "".join(rng.choice(string.ascii_lowercase) for _ in range(length))
        return {"prompt": text + "|", "answer": text, "length": length}

    def build(self, split: str, seed: int) -> list[dict]:
        c = self.config
        if split == "test":
            return [self._example("test", seed, i, n) for n in range(2, c.test_max_len + 1)
                    for i in range(c.test_per_length)]
        # Exclusion: a training string that is also a test string is dropped.
        test = {r["prompt"] for r in self.build("test", seed)}
        out = []
        for i in range(c.train_examples):
            rec = self._example("train", seed, i, 2 + i % (c.train_max_len - 1))
            if rec["prompt"] not in test:
                out.append(rec)
        return out

    def document(self, record: dict) -> str:
        return record["prompt"] + record["answer"] + "\n"

    def context(self, record: dict) -> str:
        # The prompt is random letters: no head can predict it, so its loss is noise. Train on the answer only.
        return record["prompt"]

    def evaluate(self, model, test, enc, device, *, limit=None) -> dict[str, float]:
        by_len: dict[int, list[dict]] = {}
        for rec in test:
            rows = by_len.setdefault(rec["length"], [])
            if limit is None or len(rows) < limit:
                rows.append(rec)
        records = [r for rows in by_len.values() for r in rows]
        prompts = [[enc.eot_token] + enc.encode(r["prompt"]) for r in records]
        newline = enc.encode("\n")[0]
        outs = greedy_generate(model, prompts, max_new_tokens=self.config.test_max_len + 1,
                               stop_token=newline, device=device)
        correct: dict[int, list[bool]] = {}
        for rec, out in zip(records, outs):
            correct.setdefault(rec["length"], []).append(enc.decode(out).split("\n")[0] == rec["answer"])
        metrics = {f"accuracy/length={n}": sum(v) / len(v) for n, v in sorted(correct.items())}
        ind = [x for n, v in correct.items() if n <= self.config.train_max_len for x in v]
        ood = [x for n, v in correct.items() if n > self.config.train_max_len for x in v]
        metrics["accuracy/in_domain"] = sum(ind) / len(ind)
        if ood:
            metrics["accuracy/ood"] = sum(ood) / len(ood)
        return metrics
