"""The per-pair timing columns of a register step (``timing.csv``), in one place.

Every method writes ``fixed``, ``moving`` and ``seconds`` (the pair's T_inf); the engine
adds its test-time search and the parts of its run time (what the cost model reads);
the register verb adds the job's peak memory.  The evaluation carries :data:`CARRIED`
into ``pairs.csv``.
"""

from __future__ import annotations

SECONDS = "seconds"
SEARCH = ("reg_fac", "reg_fac_status")
PHASES = ("net_seconds", "adam_seconds", "adam_step_seconds", "adam_iters", "search_rounds")
PEAKS = ("peak_rss_mb", "peak_cuda_allocated_mb", "peak_cuda_reserved_mb")
CARRIED = (*SEARCH, *PHASES, *PEAKS)


def pair_row(pair: dict, seconds: float) -> dict:
    return {"fixed": pair["fixed"], "moving": pair["moving"], SECONDS: seconds}


def engine_row(
    pair: dict,
    *,
    net: float,
    adam: float,
    steps: float,
    iters: int,
    rounds: int,
    reg_fac: float,
    status: str,
    sdlogj: float | None = None,
) -> dict:
    """A pair of the engine: network pass ``net`` and one Adam run ``adam`` (its loop alone:
    ``steps``) of ``iters`` steps, ``rounds`` runs of the reg_fac search ending at
    ``reg_fac`` (``status``: in_band | out_of_band | off; ``sdlogj``: the last round's)."""
    row = {**pair_row(pair, net + adam), "reg_fac": reg_fac}
    if sdlogj is not None:
        row["sdlogj_code_mean"] = sdlogj
    row["reg_fac_status"] = status
    return row | dict(zip(PHASES, (net, adam, steps, iters, rounds), strict=True))
