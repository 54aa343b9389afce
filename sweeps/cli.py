"""Placeholder until the sweeps subcommands land (wired through the mtplab.commands entry point)."""


def add_parser(sub, bench_sub) -> None:
    return None
