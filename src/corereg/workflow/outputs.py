"""The plan's outputs: each artifact's files, inputs and job spec (through its type's
adapter), the claims page and the reproduction report.

:class:`OutputSpecs` is a part of :class:`corereg.workflow.jobs.Plan`; it reads the
plan's configuration, runs and paths.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from corereg.adapters import METHOD_KINDS
from corereg.config import ENGINE_BLOCK

# The artifacts the paper's claims are checked against (workflow/claims.yaml names them).
CLAIM_ARTIFACTS = ("table1", "table2", "table3", "fig4a", "fig4b")


class OutputSpecs:
    # ------------------------------------------------------------------ artifacts
    def artifact_outputs(self, artifact: str) -> list[str]:
        return self.artifact_type(artifact).outputs(self, artifact)

    def artifact_inputs(self, artifact: str) -> dict[str, list[str]]:
        return self.artifact_type(artifact).inputs(self, artifact)

    def all_targets(self) -> list[str]:
        return [
            *(p for a in self.artifacts_of("table") for p in self.artifact_outputs(a)),
            *(p for a in sorted(self.artifacts_of("figure")) for p in self.artifact_outputs(a)),
            *self.claims_outputs(),
            self.report_output(),
        ]

    def _datasets(self, artifact: str) -> list[dict]:
        out = []
        for key in self.cfg["artifacts"][artifact]["datasets"]:
            ds = self.cfg["datasets"][key]
            out.append(
                {
                    "key": key,
                    "display": ds["display"],
                    "paper_key": ds.get("paper_key"),
                    "synthetic": self.source_kind(key).synthetic,
                }
            )
        return out

    def artifact_spec(self, artifact: str) -> dict:
        art = self.cfg["artifacts"][artifact]
        spec = {
            "artifact": artifact,
            "title": art["title"],
            "rows": self.rows(artifact),
            "datasets": self._datasets(artifact),
            "sdlogj": self.cfg["sdlogj"],
            "dice_aggregate": self.cfg["dice_aggregate"],
            "hd95_lost": self.cfg["hd95_lost"],
            "seeds": list(self.cfg["seeds"]),
        }
        for name in METHOD_KINDS:  # settings a method kind's note states (CoRe's alpha, ...)
            spec.update(METHOD_KINDS[name].artifact_notes(self))
        for key in ("caption", "paper_source", "paper"):
            if art.get(key):
                spec[key] = art[key]
        if art.get("reference"):
            spec["reference"] = {"variant": "default", **art["reference"]}
        return self.artifact_type(artifact).spec(self, artifact, spec)

    def manifest_args(self, artifact: str) -> str:
        """``--manifests DATASET=PATH ...`` of an artifact's datasets (their test pairs)."""
        return self.manifest_args_for(
            [self.prepared(d) for d in self.cfg["artifacts"][artifact]["datasets"]]
        )

    def manifest_args_for(self, prepared: list[str]) -> str:
        items = [f"{Path(p).parent.name}={p}" for p in prepared]
        return "--manifests " + " ".join(shlex.quote(i) for i in items)

    def train_log_args(self, artifact: str) -> list[str]:
        """LABEL=path arguments of an artifact's trainable runs (``--logs``)."""
        out = []
        for row in self.rows(artifact):
            if not (self.enabled(row["method"]) and self.trainable(row["method"])):
                continue
            for ds in self.cfg["artifacts"][artifact]["datasets"]:
                for s in self.seeds_for(row["method"]):
                    path = self.train_log(self._run(ds, row, s))
                    out.append(shlex.quote(f"{row['label']}={path}"))
        return out

    def figure_logs(self, artifact: str) -> str:
        """The figure job's ``--logs`` option: for artifacts that read training logs."""
        if "logs" not in self.artifact_inputs(artifact):
            return ""
        return "--logs " + " ".join(self.train_log_args(artifact))

    @staticmethod
    def _run(dataset: str, row: dict, seed: int):
        from corereg.adapters.base import Run

        return Run(dataset, row["method"], row["variant"], seed)

    # ------------------------------------------------------------------ Learn2Reg
    def l2r_submissions(self) -> list[str]:
        """The submission folders of ``snakemake l2r_submission``: config l2r_submission's
        method and variant, first seed, on every Learn2Reg dataset an artifact uses."""
        sub = self.cfg["l2r_submission"]
        datasets = dict.fromkeys(r.dataset for r in self.all_runs())
        return [
            self.run_dir("l2r_submission", self._run(d, sub, self.seeds_for(sub["method"])[0]))
            for d in datasets
            if self.source_kind(d).l2r_layout
        ]

    # ------------------------------------------------------------------ claims
    def claims_outputs(self) -> list[str]:
        return [
            f"{self.results}/claims/{n}"
            for n in ("claims.md", "claims.csv", "per_structure.csv", "per_structure.png")
        ]

    def claims_inputs(self) -> dict[str, list[str]]:
        runs = list(dict.fromkeys(r for a in CLAIM_ARTIFACTS for r in self.runs(a)))
        ref, other = self._structure_rows()
        structure_runs = [
            r
            for r in self.runs("table1")
            if (r.method, r.variant)
            in {(ref["method"], ref["variant"]), (other["method"], other["variant"])}
        ]
        datasets = sorted(
            {d for a in CLAIM_ARTIFACTS for d in self.cfg["artifacts"][a]["datasets"]}
        )
        return {
            "metrics": [self.pair_metrics(r) for r in runs],
            "structures": [self.structure_metrics(r) for r in structure_runs],
            "logs": [self.train_log(r) for r in self.runs("fig4b") if self.trainable(r.method)],
            "data": [self.prepared(d) for d in datasets],
        }

    def _structure_rows(self) -> tuple[dict, dict]:
        """Per-structure change: Table 1's reference row against the first row of Table 2
        (CoRe against registration-only training)."""
        ref = {"variant": "default", **self.cfg["artifacts"]["table1"]["reference"]}
        other = self.rows("table2")[0]
        return ref, other

    def claims_spec(self, claims_file: str) -> dict:
        import yaml

        claims = yaml.safe_load(Path(claims_file).read_text())["claims"]
        artifacts = {a: self.artifact_spec(a) for a in CLAIM_ARTIFACTS}
        for r in artifacts["fig4a"]["rows"]:  # alpha rows share the method's label
            r["label"] = f"{r['label']} α={r['alpha']:g}"
        return {"claims": claims, "artifacts": artifacts, **self.claims_header()}

    def claims_header(self) -> dict:
        """What the claims page says besides its rows: the scale of this run and the two
        rows of the per-structure comparison (the claims step and the report use it)."""
        from corereg.report.wording import run_scale

        ref, other = self._structure_rows()
        eng = self.cfg[ENGINE_BLOCK]
        synthetic = any(d["synthetic"] for a in CLAIM_ARTIFACTS for d in self._datasets(a))
        return {
            "scale": run_scale(
                len(self.cfg["seeds"]), int(eng["stages"]) * int(eng["iters_per_stage"]), synthetic
            ),
            "per_structure": {
                "row": ref,
                "other": other,
                "row_label": self.method(ref["method"])["label"],
                "other_label": self.method(other["method"])["label"],
                "datasets": self._datasets("table1"),
            },
        }

    # ------------------------------------------------------------------ report
    def report_output(self) -> str:
        return f"{self.results}/report/index.html"

    def report_inputs(self) -> dict[str, list[str]]:
        tables, figures = sorted(self.artifacts_of("table")), sorted(self.artifacts_of("figure"))
        return {
            "tables": [f"{self.results}/tables/{t}.md" for t in tables],
            "figures": [f"{self.results}/figures/{f}.png" for f in figures],
            "claims": [self.claims_outputs()[1]],  # claims.csv (per_structure.csv beside it)
        }

    def paper_counts(self, paper_key: str | None) -> dict | None:
        """The paper's pair counts of a paper dataset: those of the configured real dataset
        that reproduces it (its source kind counts its split)."""
        for key, ds in self.cfg["datasets"].items():
            if (
                ds.get("paper_key") == paper_key
                and paper_key
                and not self.source_kind(key).synthetic
            ):
                c = self.counts(key)
                return {"train pairs": c.train_pairs, "test pairs": c.test_pairs}
        return None

    def paper_t_inf(self, paper_key: str) -> dict[str, float]:
        """The paper's T_inf per method kind (the first row of each kind that states one)."""
        out: dict[str, float] = {}
        for art in self.cfg["artifacts"].values():
            for row in art["rows"]:
                t = ((row.get("paper") or {}).get(paper_key) or {}).get("t_inf")
                kind = self.method(row["method"])["kind"]
                if t is not None and kind not in out:
                    out[kind] = float(t)
        return out

    def report_spec(self) -> dict:
        used = {ds for art in self.cfg["artifacts"].values() for ds in art["datasets"]}
        datasets = {}
        for key in sorted(used):
            ds = self.cfg["datasets"][key]
            datasets[key] = {
                "display": ds["display"],
                "source": ds["source"],
                "prepared": self.prepared(key),
                "paper_counts": self.paper_counts(ds.get("paper_key")),
            }
        methods = {
            name: {"params": m["params"], "variants": m["variants"]}
            for name, m in self.cfg["methods"].items()
            if m["enabled"]
        }
        return {
            "title": "CoRe reproduction report",
            "datasets": datasets,
            "seeds": list(self.cfg["seeds"]),
            ENGINE_BLOCK: self.cfg[ENGINE_BLOCK],
            "methods": methods,
            "gpu_rules": {r: int(self.resources(r)["gpu"]) for r in self.cfg["resources"]},
            "figure_titles": {
                f: self.cfg["artifacts"][f]["title"] for f in self.artifacts_of("figure")
            },
            "tables": {t: self.artifact_spec(t) for t in self.artifacts_of("table")},
            "claims": self.claims_header(),
        }
