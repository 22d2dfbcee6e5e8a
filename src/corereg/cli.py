"""corereg VERB: the one entry point of every Snakemake rule (see DESCRIPTION).

The parser is a loop over verbs: those every run has (:mod:`corereg.commands`) and
those the registered method kinds declare for their assets (:mod:`corereg.adapters`).
"""

from __future__ import annotations

import argparse
import sys
import time

from corereg import __version__
from corereg.errors import CoreregError

DESCRIPTION = """\
corereg: the steps of the CoRe reproduction workflow, one verb per step.

Snakemake calls these verbs with explicit paths and the step's settings as JSON
(--spec, resolved from config.yaml and its presets).  Every verb also runs on its
own; the verbs a user runs by hand (plan, label --check, download, register of one
pair, example) read config.yaml or take plain options.  A problem with the input is
one line "error: <file>: <problem>" and exit status 1.
"""


def all_verbs():
    """Every verb once, in the order ``corereg --help`` lists them."""
    from corereg.adapters import METHOD_KINDS
    from corereg.commands import data, outputs, planning, runs

    found = [*data.verbs(), *(v for k in METHOD_KINDS for v in METHOD_KINDS[k].verbs())]
    found += [*runs.verbs(), *outputs.verbs(), *planning.verbs()]
    return list({v.name: v for v in found}.values())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="corereg",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"corereg {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in all_verbs():
        s = sub.add_parser(verb.name, help=verb.help, description=verb.help)
        verb.options(s)
        s.set_defaults(func=verb.run)
    return p


def _context(verb: str) -> str:
    """Where this step runs: host, scheduler job and the GPUs the scheduler granted."""
    import os
    import socket

    env = os.environ
    job = ""
    if env.get("SLURM_JOB_ID"):
        job = (
            f", SLURM job {env['SLURM_JOB_ID']} in partition {env.get('SLURM_JOB_PARTITION', '?')}"
        )
    gpus = env.get("CUDA_VISIBLE_DEVICES", "<unset>")
    return f"[corereg {verb}] corereg {__version__} on {socket.gethostname()}{job}, CUDA_VISIBLE_DEVICES={gpus}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    if (
        args.verb != "plan"
    ):  # rule entry points: where the step ran (stdout; stderr keeps the one-line errors)
        print(_context(args.verb), flush=True)
    try:
        args.func(args)
    except CoreregError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"[corereg {args.verb}] done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
