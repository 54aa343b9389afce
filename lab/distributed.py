"""One run on several processes: torchrun's environment, the process group, and the collectives training needs.

Under ``torchrun --nproc_per_node N -m lab train ...`` (and, for several hosts,
torchrun's ``--nnodes``/``--rdzv-endpoint``) every process builds the same
model and trains it on its own rows of every global micro-batch::

    global micro-batch (train.micro_batch sequences, or the whole step's)   read by every rank, same position
      rows [r * m/W, (r+1) * m/W)  -> rank r: forward + sequential backward, loss divided by the
                                      *global* micro-batch's target count (so the ranks' losses add up
                                      to the one-process loss)
    all_reduce(SUM) of the gradients, once per optimizer step   -> identical gradients on every rank
    clip, AdamW                                                   -> identical weights on every rank

so the global batch, the data order and the result are those of one process
(up to the order of float additions). The data position is global, so a
checkpoint resumes onto any number of processes that divides the batch.

Why not ``DistributedDataParallel`` itself: the lab's memory-efficient
sequential backward (``lab.loss``) runs one backward per head and one for the
trunk per micro-batch, and DDP's reducer allows each parameter's gradient to
be ready once per forward ("Expected to mark a variable ready only once").
So the lab does DDP's two jobs itself: the same start on every rank
(:func:`broadcast_module`, as DDP's constructor) and one bucketed all-reduce
of the accumulated gradients per step (:func:`all_reduce_gradients`, DDP's
reducer without the overlap with the backward: for gradient accumulation
over k micro-batches that overlap would apply to 1/k of the backward anyway).

Example:
    >>> ranks = Ranks.from_env({})          # not under torchrun: one process
    >>> ranks.world, ranks.main
    (1, True)
    >>> Ranks.from_env({"RANK": "0", "WORLD_SIZE": "2"})
    Traceback (most recent call last):
    ...
    lab.errors.UserError: torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, but LOCAL_RANK, MASTER_ADDR, MASTER_PORT are missing; start a multi-process run with torchrun (torchrun --nproc_per_node N -m lab train ...)
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from lab.errors import UserError

# What torchrun sets in every process it starts (and what init_process_group's env:// reads).
ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# Collectives wait this long for the slowest rank: rank 0's evals (the others wait for its result) can
# take minutes at large sizes. A rank that dies is noticed sooner: torchrun stops the whole job.
TIMEOUT = datetime.timedelta(hours=2)

# Gradients are all-reduced in buckets of about this size (DDP's default is 25 MiB).
BUCKET_BYTES = 25 * 2**20


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job: global rank, number of processes, rank on its host."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and evaluates."""
        return self.rank == 0

    @classmethod
    def from_env(cls, env=None) -> "Ranks":
        """The ranks torchrun gave this process; one process when none of its variables is set.

        A UserError (one line) when some are set and others missing, or when
        they do not make sense.

        Example:
            >>> Ranks.from_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost",
            ...                 "MASTER_PORT": "29500"})
            Ranks(rank=1, world=2, local_rank=1)
        """
        env = os.environ if env is None else env
        if not any(k in env for k in ENV):
            return cls()
        missing = [k for k in ENV if not env.get(k)]
        if missing:
            raise UserError(f"torchrun sets {', '.join(ENV[:-1])} and {ENV[-1]}, but {', '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} missing; start a multi-process run with "
                            f"torchrun (torchrun --nproc_per_node N -m lab train ...)")
        try:
            rank, local, world = (int(env[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
        except ValueError:
            raise UserError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers (as torchrun sets them), got "
                            f"{env['RANK']!r}, {env['LOCAL_RANK']!r}, {env['WORLD_SIZE']!r}") from None
        if not (world >= 1 and 0 <= rank < world and 0 <= local <= rank):
            raise UserError(f"RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world} do not fit together "
                            f"(need 0 <= LOCAL_RANK <= RANK < WORLD_SIZE)")
        return cls(rank=rank, world=world, local_rank=local)


def check_batch(train, world: int) -> None:
    """A UserError unless every global micro-batch of ``train`` splits evenly across ``world`` processes.

    ``train.micro_batch`` counts the sequences of one forward/backward of
    the whole job (each process runs micro_batch / world of them), so that
    the result does not depend on the number of processes.

    Example:
        >>> from lab.config import TrainConfig
        >>> check_batch(TrainConfig(batch_tokens=512, context=64, micro_batch=4), 2)
        >>> check_batch(TrainConfig(batch_tokens=384, context=64), 4)
        Traceback (most recent call last):
        ...
        lab.errors.UserError: a global batch of 6 sequences (train.batch_tokens 384 / train.context 64) does not split across 4 processes; make it a multiple of 4
    """
    if world == 1:
        return
    seqs = train.seqs_per_step
    if seqs % world:
        raise UserError(f"a global batch of {seqs} sequences (train.batch_tokens {train.batch_tokens} / train.context "
                        f"{train.context}) does not split across {world} processes; make it a multiple of {world}")
    if train.micro_batch and min(train.micro_batch, seqs) % world:
        raise UserError(f"train.micro_batch {train.micro_batch} (sequences per forward/backward, summed over the "
                        f"processes) does not split across {world} processes; make it a multiple of {world}")


def place(device: torch.device, ranks: Ranks) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun, else ``device`` unchanged.

    Example:
        >>> place(torch.device("cpu"), Ranks(rank=1, world=2, local_rank=1))
        device(type='cpu')
    """
    if ranks.world == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise UserError(f"under torchrun each process uses cuda:LOCAL_RANK; set the device to auto or cuda, not {device}")
    if ranks.local_rank >= torch.cuda.device_count():
        raise UserError(f"LOCAL_RANK {ranks.local_rank} but this host has {torch.cuda.device_count()} CUDA devices; "
                        f"start at most that many processes per host (--nproc_per_node)")
    device = torch.device("cuda", ranks.local_rank)
    torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(ranks: Ranks, device: torch.device):
    """Join the job's process group (nccl on CUDA, gloo on CPU) for the block; leave it at the end.

    Nothing happens for one process, or when the caller already started a
    group (it is then used, and left to the caller to destroy).

    Example:
        >>> with process_group(Ranks(), torch.device("cpu")):
        ...     dist.is_initialized()
        False
    """
    if ranks.world == 1 or dist.is_initialized():
        yield
        return
    cuda = device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", rank=ranks.rank, world_size=ranks.world, timeout=TIMEOUT,
                            device_id=device if cuda else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait for every process (nothing for one process).

    Example:
        >>> barrier(Ranks())
    """
    if ranks.world > 1:
        dist.barrier()


@contextlib.contextmanager
def host_leader_first(ranks: Ranks):
    """Run the block on local rank 0 of each host first, then on the others (e.g. building a dataset cache).

    Example:
        >>> with host_leader_first(Ranks()):
        ...     pass
    """
    if ranks.local_rank != 0:
        barrier(ranks)
    yield
    if ranks.local_rank == 0:
        barrier(ranks)


def shard(count: int, ranks: Ranks) -> slice:
    """This rank's rows of a global micro-batch of ``count`` sequences (contiguous, equal shares).

    Example:
        >>> shard(8, Ranks(rank=1, world=4, local_rank=1))
        slice(2, 4, None)
    """
    per = count // ranks.world
    return slice(ranks.rank * per, (ranks.rank + 1) * per)


def target_counts(mask: np.ndarray | None, rows: int, span: int, n: int) -> list[int]:
    """Scored targets of each head in a micro-batch of ``rows`` windows of ``span`` = T + n tokens.

    Head i's targets are window[:, i : T + i] (``lab.loss``); where the mask
    is False a token is context, not a target. Every rank computes this for
    the whole global micro-batch and divides its share of the loss by it.

    Example:
        >>> target_counts(None, rows=2, span=6, n=2)
        [8, 8]
        >>> target_counts(np.array([[0, 0, 1, 1, 1]], dtype=bool), rows=1, span=5, n=2)
        [2, 3]
    """
    T = span - n
    if mask is None:
        return [rows * T] * n
    return [int(mask[:, i + 1:i + 1 + T].sum()) for i in range(n)]


def broadcast_module(module: torch.nn.Module, ranks: Ranks) -> None:
    """Copy rank 0's parameters and buffers to every rank (what DDP's constructor does).

    Example:
        >>> broadcast_module(torch.nn.Linear(2, 2), Ranks())
    """
    if ranks.world == 1:
        return
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            dist.broadcast(t.data, src=0)


def all_reduce_gradients(params, ranks: Ranks, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum every parameter's ``.grad`` over the ranks, in place, in buckets of about ``bucket_bytes``.

    A sum, not a mean: each rank's loss is already its share of the global
    micro-batch's loss. Parameters without a gradient (frozen, or the trunk
    during a head warmup) are skipped; they are the same on every rank.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.full((2,), 3.0)
        >>> all_reduce_gradients([p], Ranks()); p.grad.tolist()
        [3.0, 3.0]
    """
    if ranks.world == 1:
        return
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}  # (dtype, device) -> buckets of gradients
    filled: dict[tuple, int] = {}  # bytes in each key's last bucket
    for p in params:
        if p.grad is None:
            continue
        key = (p.grad.dtype, p.grad.device)
        groups = buckets.setdefault(key, [[]])
        if filled.get(key, 0) >= bucket_bytes:
            groups.append([])
            filled[key] = 0
        groups[-1].append(p.grad)
        filled[key] = filled.get(key, 0) + p.grad.numel() * p.grad.element_size()
    for groups in buckets.values():
        for grads in groups:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()


def all_reduce_sum(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """``tensor`` summed over the ranks (in place; returned for chaining).

    Example:
        >>> all_reduce_sum(torch.ones(2), Ranks()).tolist()
        [1.0, 1.0]
    """
    if ranks.world > 1:
        dist.all_reduce(tensor)
    return tensor


def from_main(obj, ranks: Ranks):
    """Rank 0's ``obj`` on every rank (a picklable object, e.g. an eval's metrics); the others pass None.

    Example:
        >>> from_main({"step": 3}, Ranks())
        {'step': 3}
    """
    if ranks.world == 1:
        return obj
    box = [obj if ranks.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
