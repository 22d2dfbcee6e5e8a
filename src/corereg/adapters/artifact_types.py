"""The artifact types of this version: a paper table and the three kinds of figure
(docs/results.md).  An artifact of the configuration names its type; the type decides
which of its runs' files the job reads, what its spec holds and which files it writes."""

from __future__ import annotations

from corereg.adapters.base import ArtifactType, Run


def labelled(items) -> dict[str, list[str]]:
    """LABEL=PATH arguments -> {label: [paths]} (a label may repeat: one path per seed)."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        label, path = item.split("=", 1)
        out.setdefault(label, []).append(path)
    return out


class Table(ArtifactType):
    """Rows x datasets of per-pair scores: Dice, HD95, SDlogJ, T_inf, tests against the
    reference row (CSV, Markdown, LaTeX, and Dice per structure)."""

    name = "table"
    rule = "table"
    folder = "tables"
    extensions = ("csv", "md", "tex")

    def inputs(self, plan, artifact):
        inputs = super().inputs(plan, artifact)
        inputs["structures"] = [plan.structure_metrics(r) for r in plan.runs(artifact)]
        return inputs


class WeightCurve(ArtifactType):
    """Dice against each row's contrastive weight (the engine's ``cl_weight``)."""

    name = "weight_curve"
    X_KEY = "cl_weight"

    def row(self, plan, artifact, row):
        row["alpha"] = float(plan.method_params(row["method"], row["variant"])[self.X_KEY])
        return row

    def write(self, args, spec) -> None:
        from corereg.report import figures

        figures.fig4a(spec, args.metrics, args.out, dict(i.split("=", 1) for i in args.manifests))


class TrainingCurves(ArtifactType):
    """Validation Dice over training iterations of the trainable rows."""

    name = "training_curves"

    def inputs(self, plan, artifact):
        return {
            "logs": [plan.train_log(r) for r in plan.runs(artifact) if plan.trainable(r.method)]
        }

    def spec(self, plan, artifact, spec):
        eng = plan.cfg["engine"]
        spec["iterations"] = int(eng["stages"]) * int(eng["iters_per_stage"])
        spec["iters_per_stage"] = int(eng["iters_per_stage"])
        return spec

    def write(self, args, spec) -> None:
        from corereg.report import figures

        figures.fig4b(spec, labelled(args.logs), args.out)


class Qualitative(ArtifactType):
    """One test pair per dataset, warped by each row's method (the kept field)."""

    name = "qualitative"

    def inputs(self, plan, artifact):
        runs = plan.runs(artifact)
        return {
            "fields": [
                plan.figure_fields(r) for r in runs if r.seed == plan.seeds_for(r.method)[0]
            ],
            "data": [plan.prepared(d) for d in plan.cfg["artifacts"][artifact]["datasets"]],
        }

    def spec(self, plan, artifact, spec):
        art = plan.cfg["artifacts"][artifact]
        spec["panels"] = [
            {
                "display": d["display"],
                "data": plan.prepared(d["key"]),
                "pair_index": art["pair_index"],
                "window": plan.cfg["datasets"][d["key"]].get("window"),
                "methods": [
                    {
                        "label": r["label"],
                        "fields": plan.figure_fields(
                            Run(d["key"], r["method"], r["variant"], plan.seeds_for(r["method"])[0])
                        )
                        if plan.enabled(r["method"])
                        else None,
                    }
                    for r in spec["rows"]
                ],
            }
            for d in spec["datasets"]
        ]
        return spec

    def write(self, args, spec) -> None:
        from corereg.report.qualitative import fig3_from_spec

        fig3_from_spec(spec, args.out)
