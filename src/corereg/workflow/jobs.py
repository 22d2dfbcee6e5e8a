"""The experiment plan: config.yaml resolved into runs, paths and per-job specs.

The Snakefile holds no logic of its own: every input function, path and job
spec comes from :class:`Plan`, which tests exercise without Snakemake.  What is
particular to a method kind, a dataset source kind or an artifact type comes from its
adapter (:mod:`corereg.adapters`): the plan is a loop over them.

A *run* is (dataset, method, variant, seed).  The runs of an artifact are its
rows x datasets x seeds (the first seed only for non-trainable methods), for
enabled methods.  Rows of disabled methods read "not run" in the outputs.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from corereg.adapters import ARTIFACT_TYPES, METHOD_KINDS, SOURCE_KINDS
from corereg.adapters.base import ArtifactType, Counts, MethodKind, Run, SourceKind
from corereg.config import deep_merge, with_defaults
from corereg.data.settings import SourceSettings
from corereg.errors import CoreregError
from corereg.voxels import check_size_multiple
from corereg.workflow.checks import check_output_root, check_unique
from corereg.workflow.outputs import OutputSpecs

NETWORK_KEYS = ("timeout", "retries", "backoff")  # download settings of a dataset source


class Plan(OutputSpecs):
    def __init__(self, config: dict):
        # the schema's defaults filled in (as Snakemake's validate does): absent optional
        # keys read as their documented default everywhere below
        self.cfg = with_defaults(config)
        self.results = config["results"].rstrip("/")
        self.data_root = config["data_root"].rstrip("/")
        self._costs: dict | None = None
        self._check()

    # ------------------------------------------------------------------ adapters
    def kind(self, method: str) -> MethodKind:
        return METHOD_KINDS[self.method(method)["kind"]]

    def source_kind(self, dataset: str) -> SourceKind:
        return SOURCE_KINDS[self.cfg["datasets"][dataset]["source"]["kind"]]

    def artifact_type(self, artifact: str) -> ArtifactType:
        return ARTIFACT_TYPES[self.cfg["artifacts"][artifact]["type"]]

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        for key in ("results", "data_root"):
            check_output_root(key, self.cfg[key])
            for parent in [Path(self.cfg[key]), *Path(self.cfg[key]).parents]:
                if parent.exists() and not parent.is_dir():
                    raise CoreregError(
                        f"config: {key} '{self.cfg[key]}' lies below {parent}, which is a file"
                    )
        registries = (
            ("datasets", lambda d: d["source"]["kind"], "source.kind", SOURCE_KINDS),
            ("methods", lambda m: m["kind"], "kind", METHOD_KINDS),
            ("artifacts", lambda a: a["type"], "type", ARTIFACT_TYPES),
        )
        for section, name_of, where, registry in registries:
            for key, entry in self.cfg[section].items():
                if name_of(entry) not in registry:
                    raise CoreregError(
                        f"config: {section}.{key}.{where}: unknown {registry.what} "
                        f"'{name_of(entry)}'; known: {', '.join(registry)}"
                    )
        for name, art in self.cfg["artifacts"].items():
            check_unique(f"artifacts.{name}.datasets", art["datasets"])
            rows = [*art["rows"], *art["extra_rows"]]
            check_unique(f"artifacts.{name}.rows", [(r["method"], r["variant"]) for r in rows])
            for ds in art["datasets"]:
                if ds not in self.cfg["datasets"]:
                    raise CoreregError(
                        f"config: artifacts.{name}.datasets names the unknown dataset '{ds}'"
                    )
            for row in [*rows, *([art["reference"]] if "reference" in art else [])]:
                m, v = row["method"], row["variant"]
                if m not in self.cfg["methods"]:
                    raise CoreregError(f"config: artifacts.{name} names the unknown method '{m}'")
                if v != "default" and v not in self.cfg["methods"][m]["variants"]:
                    raise CoreregError(
                        f"config: artifacts.{name}: method '{m}' has no variant '{v}'"
                    )
            if self.artifact_type(name).rule == "table":  # a table's rows are its labels
                labels = [r["label"] for r in self.rows(name)]
                check_unique(f"artifacts.{name}.rows (labels)", labels)
        for name in self.cfg["methods"]:
            self.kind(name).check(self, name)
        for key in self.cfg["datasets"]:
            self.source_kind(key).check(self, key)
        for run in self.all_runs():  # the image sizes a method's network needs
            multiple = self.kind(run.method).shape_multiple
            check_size_multiple(
                self.cfg["datasets"][run.dataset]["shape"],
                multiple,
                f"config: datasets.{run.dataset}.shape",
                f"method '{run.method}' (kind {self.method(run.method)['kind']})",
            )

    def source(self, dataset: str) -> SourceSettings:
        """A dataset's ``source``, typed."""
        return SourceSettings.of(
            self.cfg["datasets"][dataset]["source"], f"datasets.{dataset}.source"
        )

    def counts(self, dataset: str) -> Counts:
        """Scans, training and test pairs of a dataset, from its source."""
        return self.source_kind(dataset).counts(self.source(dataset))

    # ------------------------------------------------------------------ methods
    def method(self, name: str) -> dict:
        return self.cfg["methods"][name]

    def enabled(self, name: str) -> bool:
        return bool(self.method(name)["enabled"])

    def trainable(self, name: str) -> bool:
        return bool(self.method(name)["trainable"])

    def conda_env(self, name: str) -> str:
        """envs/<name>.yaml of a method's tool family (corereg unless the method names one)."""
        return f"envs/{self.method(name)['env']}.yaml"

    def if_missing(self, name: str) -> str:
        return self.method(name)["if_missing"]

    def seeds_for(self, name: str) -> list[int]:
        seeds = list(self.cfg["seeds"])
        return seeds if self.trainable(name) else seeds[:1]

    def method_params(self, name: str, variant: str = "default") -> dict:
        params = self.kind(name).base_params(self.cfg, self.method(name))
        if variant != "default":
            params = deep_merge(params, self.method(name)["variants"][variant])
        return params

    def assets(self, name: str) -> dict[str, str]:
        """Files the workflow makes before a method registers (input name -> path)."""
        return self.kind(name).assets(self, name)

    def asset_spec(self, name: str, asset: str) -> dict:
        """What the rule that makes a method's ``asset`` needs (its kind says)."""
        return self.kind(name).asset_spec(self, name, asset)

    def register_params(self, run: Run) -> dict:
        """Method parameters of a run, as its register job receives them."""
        params = self.method_params(run.method, run.variant)
        return self.kind(run.method).register_params(self, run.method, run, params)

    # ------------------------------------------------------------------ artifacts
    def rows(self, artifact: str) -> list[dict]:
        out = []
        kind = self.artifact_type(artifact)
        art = self.cfg["artifacts"][artifact]
        for row in [*art["rows"], *art["extra_rows"]]:
            r = dict(row)
            r.setdefault("variant", "default")
            r.setdefault("label", self.method(r["method"])["label"])
            if not self.enabled(r["method"]):  # a disabled method's row always says why
                r["reason"] = self.method(r["method"]).get("reason") or (
                    f"disabled in this configuration (methods.{r['method']}.enabled: false)"
                )
            out.append(kind.row(self, artifact, r))
        return out

    def runs(self, artifact: str) -> list[Run]:
        art = self.cfg["artifacts"][artifact]
        runs = []
        for row in self.rows(artifact):
            if not self.enabled(row["method"]):
                continue
            for ds in art["datasets"]:
                runs += [
                    Run(ds, row["method"], row["variant"], s) for s in self.seeds_for(row["method"])
                ]
        return list(dict.fromkeys(runs))

    def all_runs(self) -> list[Run]:
        return list(dict.fromkeys(r for a in self.cfg["artifacts"] for r in self.runs(a)))

    def artifacts_of(self, rule: str) -> list[str]:
        """The artifacts the ``table`` or the ``figure`` rule writes."""
        return [a for a in self.cfg["artifacts"] if self.artifact_type(a).rule == rule]

    # ------------------------------------------------------------------ paths
    def prepared(self, dataset: str) -> str:
        return f"{self.data_root}/{dataset}/prepared"

    def stage_dir(self, dataset: str, stage: str) -> str:
        return f"{self.data_root}/{dataset}/{stage}"

    def run_dir(self, kind: str, run: Run) -> str:
        return f"{self.results}/{kind}/{run.dataset}/{run.method}/{run.variant}/seed{run.seed}"

    def fields(self, run: Run) -> str:
        return self.run_dir("fields", run)

    def figure_fields(self, run: Run) -> str:
        """The folder holding the one field of ``run`` that a qualitative figure shows
        (kept when the register step's folder is temporary, config ``fields.keep``)."""
        return self.run_dir("figure_fields", run)

    def figure_pair_index(self) -> int:
        """Which test pair the qualitative figure shows (its position in the test pairs)."""
        shown = [a for a in self.cfg["artifacts"] if "fields" in self.artifact_inputs(a)]
        return int(self.cfg["artifacts"][shown[0]]["pair_index"]) if shown else 0

    def keep_all_fields(self) -> bool:
        """Config ``fields.keep``: ``all`` keeps every registered field after it is scored;
        ``figures`` (default) keeps only the figure's pair."""
        return self.cfg["fields"]["keep"] == "all"

    def field_storage(self) -> str:
        return self.cfg["fields"]["storage"]

    def pair_metrics(self, run: Run) -> str:
        return self.run_dir("metrics", run) + "/pairs.csv"

    def structure_metrics(self, run: Run) -> str:
        return f"{self.run_dir('metrics', run)}/structures.csv"

    def model(self, run: Run) -> str:
        return self.run_dir("models", run) + "/final.pt"

    def train_log(self, run: Run) -> str:
        return self.run_dir("models", run) + "/train_log.csv"

    # ------------------------------------------------------------------ data stages
    def stages(self, dataset: str) -> tuple[str, ...]:
        return self.source_kind(dataset).stages

    def stage_env(self, dataset: str, stage: str) -> str:
        return self.source_kind(dataset).stage_env(stage, self.source(dataset))

    def stage_input(self, dataset: str, stage: str) -> list[str]:
        """The upstream folder of a data stage ('prepare' included), or nothing."""
        chain = (*self.stages(dataset), "prepare")
        i = chain.index(stage) if stage in chain else -1
        if i <= 0:
            if stage != "prepare" and stage not in chain:
                raise CoreregError(
                    f"dataset '{dataset}' ({self.source_kind(dataset).name}) has no '{stage}' step"
                )
            return []
        return [self.stage_dir(dataset, "raw" if chain[i - 1] == "download" else chain[i - 1])]

    # ------------------------------------------------------------------ job specs
    @staticmethod
    def quote(obj) -> str:
        return shlex.quote(json.dumps(obj, sort_keys=True, separators=(",", ":")))

    def dataset_spec(self, dataset: str) -> dict:
        """A dataset's settings as the steps after the download see them (the network
        settings of the download steps are left out: changing them reruns nothing else)."""
        ds = dict(self.cfg["datasets"][dataset])
        ds["source"] = {k: v for k, v in ds["source"].items() if k not in NETWORK_KEYS}
        return ds

    def stage_spec(self, dataset: str, stage: str) -> dict:
        """What a data stage depends on (so that, e.g., a new labelling setting does not
        re-download): download the source, convert the source and the grid, label the
        TotalSegmentator settings."""
        ds = self.cfg["datasets"][dataset]
        source = {k: v for k, v in ds["source"].items() if k != "totalsegmentator"}
        if stage == "download":
            return {"source": source}
        source = {k: v for k, v in source.items() if k not in NETWORK_KEYS}
        if stage == "convert":
            return {"source": source, "shape": ds["shape"], "spacing": ds["spacing"]}
        return {
            "source": {
                "kind": source["kind"],
                "totalsegmentator": ds["source"].get("totalsegmentator", {}),
            }
        }

    def eval_spec(self, run: Run) -> dict:
        return {
            "dataset": run.dataset,
            "method": run.method,
            "variant": run.variant,
            "seed": run.seed,
            "labels": self.cfg["datasets"][run.dataset]["eval_labels"],
        }

    def train_spec(self, run: Run) -> dict:
        return {
            "kind": self.method(run.method)["kind"],
            "params": self.method_params(run.method, run.variant),
            "dataset": self.dataset_spec(run.dataset),
            "seed": run.seed,
        }

    # ------------------------------------------------------------------ resources
    def resources(self, rule: str) -> dict:
        """A rule's declared resources (threads, mem_mb, runtime, gpu, from_costs), each
        the schema's default where the configuration leaves it out."""
        return dict(self.cfg["resources"][rule])

    def job_device(self, rule: str, run: Run) -> str:
        """The device kind (cpu | cuda) a job of ``rule`` runs on: TotalSegmentator's
        labelling and the GPU rules of methods that use a GPU (with a GPU resource),
        unless the configuration's device is the CPU."""
        if self.cfg["device"] == "cpu" or rule not in ("train", "register", "label"):
            return "cpu"
        gpu = int(self.resources(rule)["gpu"])
        if gpu and (rule == "label" or (run.method and int(self.method(run.method)["gpu"]))):
            return "cuda"
        return "cpu"

    def cost_model(self) -> dict:
        if self._costs is None:
            from corereg.workflow import costs

            self._costs = costs.load(self.cfg.get("costs_file"))
        return self._costs

    def estimate(self, rule: str, run: Run):
        """Predicted seconds and peak memory of one job (:func:`corereg.workflow.costs.predict`)."""
        from corereg.workflow import costs

        return costs.predict(self, rule, run, self.cost_model(), self.job_device(rule, run))

    def job_resources(self, rule: str, run: Run) -> dict:
        """Resources of one job: the declared ones; with ``from_costs`` the runtime and
        mem_mb computed from the measured costs (:func:`corereg.workflow.costs.request`) where the
        job's steps were measured, the declared numbers where not."""
        from corereg.workflow import costs

        r = {k: v for k, v in self.resources(rule).items() if k != "from_costs"}
        if not self.resources(rule)["from_costs"] or run is None:
            return r
        minutes, mem = costs.request(self.estimate(rule, run))
        return {
            **r,
            "runtime": minutes if minutes is not None else r["runtime"],
            "mem_mb": mem if mem is not None else r["mem_mb"],
        }


__all__ = ["Plan", "Run"]
