"""The experiment plan: config.yaml resolved into runs, paths and per-job specs.

The Snakefile holds no logic of its own: every input function, path and job
spec comes from :class:`Plan`, which tests exercise without Snakemake.

A *run* is (dataset, method, variant, seed).  The runs of an artifact are its
rows x datasets x seeds (the first seed only for non-trainable methods), for
enabled methods.  Rows of disabled methods read "not run" in the outputs.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from corereg.config import check_method_params, deep_merge, with_defaults
from corereg.config import method_params as kind_params
from corereg.data.settings import SourceSettings
from corereg.errors import CoreregError

TABLES = ("table1", "table2", "table3")
NETWORK_KEYS = ("timeout", "retries", "backoff")  # download settings of a dataset source
FIGURES = ("fig3", "fig4a", "fig4b")
REAL_SOURCES = {"abdomenctct": ("download",), "radchestct": ("download", "convert", "label")}
# Pair counts of the paper (its Section 2.6), shown beside ours in the report.
PAPER_COUNTS = {
    "abdomen": {"train pairs": 190, "test pairs": 45},
    "radchest": {"train pairs": 300, "test pairs": 71},
}


@dataclass(frozen=True)
class Run:
    dataset: str
    method: str
    variant: str
    seed: int


class Plan:
    def __init__(self, config: dict):
        # the schema's defaults filled in (as Snakemake's validate does): absent optional
        # keys read as their documented default everywhere below
        self.cfg = with_defaults(config)
        self.results = config["results"].rstrip("/")
        self.data_root = config["data_root"].rstrip("/")
        self._costs: dict | None = None
        self._check()
        self._check_engine_shapes()

    # ------------------------------------------------------------------ checks
    def _check_engine_shapes(self) -> None:
        """The engine halves its images three times: sizes must be multiples of 8."""
        for run in self.all_runs():
            if self.method(run.method)["kind"] != "engine":
                continue
            shape = self.cfg["datasets"][run.dataset]["shape"]
            if any(int(n) % 8 for n in shape):
                raise CoreregError(
                    f"config: datasets.{run.dataset}.shape {list(shape)}: method '{run.method}' "
                    "(CoRe / Bigalke et al. engine) needs image sizes divisible by 8"
                )

    def _check(self) -> None:
        for key in ("results", "data_root"):
            for parent in [Path(self.cfg[key]), *Path(self.cfg[key]).parents]:
                if parent.exists() and not parent.is_dir():
                    raise CoreregError(
                        f"config: {key} '{self.cfg[key]}' lies below {parent}, which is a file"
                    )
        for name, art in self.cfg["artifacts"].items():
            for ds in art["datasets"]:
                if ds not in self.cfg["datasets"]:
                    raise CoreregError(
                        f"config: artifacts.{name}.datasets names the unknown dataset '{ds}'"
                    )
            refs = [*art["rows"], *([art["reference"]] if "reference" in art else [])]
            for row in refs:
                m = row["method"]
                if m not in self.cfg["methods"]:
                    raise CoreregError(f"config: artifacts.{name} names the unknown method '{m}'")
                v = row["variant"]
                if v != "default" and v not in self.cfg["methods"][m]["variants"]:
                    raise CoreregError(
                        f"config: artifacts.{name}: method '{m}' has no variant '{v}'"
                    )
        for name, m in self.cfg["methods"].items():
            for where, over in [
                ("params", m["params"]),
                *((f"variants.{v}", o) for v, o in m["variants"].items()),
            ]:
                # params and each variant's overrides obey the kind's schema (the engine's block)
                check_method_params(m["kind"], over, f"config: methods.{name}.{where}")
        for name, m in self.cfg["methods"].items():
            bcv = self._deedsbcv(name)
            if bcv is not None and m["enabled"]:
                if not (bcv["source"] or bcv["bin_dir"]):
                    raise CoreregError(
                        f"config: methods.{name}.params.implementation is deedsbcv: set params.deedsbcv.source "
                        "(a checkout of github.com/mattiaspaul/deedsBCV, built by the pipeline) or "
                        "params.deedsbcv.bin_dir (a folder with deedsBCV and linearBCV built)"
                    )
        for key, ds in self.cfg["datasets"].items():
            if ds["source"]["kind"] not in (*REAL_SOURCES, "synthetic_abdomen", "synthetic_chest"):
                raise CoreregError(f"config: datasets.{key}.source.kind is unknown")

    def source(self, dataset: str) -> SourceSettings:
        """A dataset's ``source``, typed."""
        return SourceSettings.of(
            self.cfg["datasets"][dataset]["source"], f"datasets.{dataset}.source"
        )

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

    def label_env(self, dataset: str) -> str:
        version = self.source(dataset).totalsegmentator.version
        return "envs/totalseg_v1.yaml" if version.startswith("1.") else "envs/totalseg_v2.yaml"

    def seeds_for(self, name: str) -> list[int]:
        seeds = list(self.cfg["seeds"])
        return seeds if self.trainable(name) else seeds[:1]

    def method_params(self, name: str, variant: str = "default") -> dict:
        m = self.method(name)
        params = (
            deep_merge(self.cfg["engine"], m["params"])
            if m["kind"] == "engine"
            else dict(m["params"])
        )
        if variant != "default":
            params = deep_merge(params, m["variants"][variant])
        return params

    def weights(self, name: str) -> str | None:
        """Released weights the workflow downloads for a method (params.weights null and a
        params.weights_url), else None."""
        m = self.method(name)
        if m["kind"] != "unigradicon":
            return None
        params = kind_params(m["kind"], m["params"])
        if params["weights"] or not params["weights_url"]:
            return None
        return f"{self.data_root}/weights/{name}/{params['weights_url'].rsplit('/', 1)[-1]}"

    def _deedsbcv(self, name: str) -> dict | None:
        """params.deedsbcv of a DEEDs method run as deedsBCV (implementation deedsbcv), else None."""
        m = self.method(name)
        if m["kind"] != "deeds":
            return None
        params = kind_params(m["kind"], m["params"])
        return params["deedsbcv"] if params["implementation"] == "deedsbcv" else None

    def tool_build(self, name: str) -> str | None:
        """The folder the build_deedsbcv rule compiles a method's deedsBCV into (a source and
        no bin_dir given), else None."""
        bcv = self._deedsbcv(name)
        if bcv is None or bcv["bin_dir"] or not bcv["source"]:
            return None
        return f"{self.data_root}/tools/{name}/deedsbcv"

    def tool_source(self, name: str) -> str:
        """The deedsBCV checkout of a method, as an absolute path."""
        return str(Path(self._deedsbcv(name)["source"]).expanduser().resolve())

    def tool_sources(self, name: str) -> list[str]:
        """The source files a deedsBCV build reads (Snakemake rebuilds when they change)."""
        from corereg.baselines.deedsbcv import SOURCES

        return [str(Path(self.tool_source(name)) / rel) for rel in SOURCES.values()]

    def register_params(self, run: Run) -> dict:
        """Method parameters of a run; the engine also gets its dataset's test-time settings."""
        params = self.method_params(run.method, run.variant)
        weights = self.weights(run.method)
        if weights:
            params["weights"] = weights
        built = self.tool_build(run.method)
        if built:
            params["deedsbcv"] = {**params["deedsbcv"], "bin_dir": built}
        if self.method(run.method)["kind"] == "engine":
            ds = self.cfg["datasets"][run.dataset]
            params.update(
                {"clamp_eval": ds.get("clamp_eval"), "sdlogj_band": ds.get("sdlogj_band")}
            )
        return params

    # ------------------------------------------------------------------ artifacts
    def rows(self, artifact: str) -> list[dict]:
        out = []
        for row in self.cfg["artifacts"][artifact]["rows"]:
            r = dict(row)
            r.setdefault("variant", "default")
            r.setdefault("label", self.method(r["method"])["label"])
            if not self.enabled(r["method"]) and self.method(r["method"]).get("reason"):
                r["reason"] = self.method(r["method"])["reason"]
            if artifact == "fig4a":  # the x value is the variant's own contrastive weight
                r["alpha"] = float(self.method_params(r["method"], r["variant"])["cl_weight"])
            out.append(r)
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
        """The folder holding the one field of ``run`` that Figure 3 shows (kept when the
        register step's folder is temporary, config ``fields.keep``)."""
        return self.run_dir("figure_fields", run)

    def dataset_counts(self, dataset: str, train: bool = False):
        """(scans, test pairs) of a dataset, or with ``train`` its number of training
        pairs: from its source description (phantoms) or the paper's counts."""
        ds = self.cfg["datasets"][dataset]
        src = ds["source"]
        paper = PAPER_COUNTS.get(ds.get("paper_key"), {})
        if src["kind"] == "synthetic_abdomen":
            n_train, n_test = int(src["n_train"]), int(src["n_test"])
            if train:
                return n_train * (n_train - 1) // 2
            return n_train + n_test, n_test * (n_test - 1) // 2
        if src["kind"] == "synthetic_chest":
            if train:
                return int(src["n_train_pairs"])
            return 2 * (int(src["n_train_pairs"]) + int(src["n_test_pairs"])), int(
                src["n_test_pairs"]
            )
        test = int(paper.get("test pairs", 0))
        if train:
            return int(paper.get("train pairs", 0))
        if src["kind"] == "abdomenctct":
            return 30, test
        n_pairs = self.source(dataset).n_pairs
        return 2 * (n_pairs or test + int(paper.get("train pairs", 0))), test

    def train_scans(self, dataset: str) -> int:
        """How many scans a training job holds in memory (every training scan)."""
        src = self.cfg["datasets"][dataset]["source"]
        if src["kind"] == "synthetic_abdomen":
            return int(src["n_train"])
        if src["kind"] == "abdomenctct":
            return len(self.source(dataset).train) or 20
        return 2 * int(self.dataset_counts(dataset, train=True))  # two scans per patient

    def figure_pair_index(self) -> int:
        """Which test pair Figure 3 shows (its position in the manifest's test pairs)."""
        return (
            int(self.cfg["artifacts"]["fig3"]["pair_index"])
            if "fig3" in self.cfg["artifacts"]
            else 0
        )

    def keep_all_fields(self) -> bool:
        """Config ``fields.keep``: ``all`` keeps every registered field after it is scored;
        ``figures`` (default) keeps only the figure's pair."""
        return self.cfg["fields"]["keep"] == "all"

    def field_storage(self) -> str:
        return self.cfg["fields"]["storage"]

    def pair_metrics(self, run: Run) -> str:
        return self.run_dir("metrics", run) + "/pairs.csv"

    def model(self, run: Run) -> str:
        return self.run_dir("models", run) + "/final.pt"

    def train_log(self, run: Run) -> str:
        return self.run_dir("models", run) + "/train_log.csv"

    def artifact_outputs(self, artifact: str) -> list[str]:
        if artifact in TABLES:
            return [f"{self.results}/tables/{artifact}.{ext}" for ext in ("csv", "md", "tex")]
        return [f"{self.results}/figures/{artifact}.{ext}" for ext in ("png", "pdf")]

    def all_targets(self) -> list[str]:
        return [
            *(p for a in (*TABLES, *FIGURES) for p in self.artifact_outputs(a)),
            *self.claims_outputs(),
            self.report_output(),
        ]

    # ------------------------------------------------------------------ claims
    CLAIM_ARTIFACTS = ("table1", "table2", "table3", "fig4a", "fig4b")

    def claims_outputs(self) -> list[str]:
        return [
            f"{self.results}/claims/{n}"
            for n in ("claims.md", "claims.csv", "per_structure.csv", "per_structure.png")
        ]

    def claims_inputs(self) -> dict[str, list[str]]:
        runs = list(dict.fromkeys(r for a in self.CLAIM_ARTIFACTS for r in self.runs(a)))
        ref, other = self._structure_rows()
        structure_runs = [
            r
            for r in self.runs("table1")
            if (r.method, r.variant)
            in {(ref["method"], ref["variant"]), (other["method"], other["variant"])}
        ]
        datasets = sorted(
            {d for a in self.CLAIM_ARTIFACTS for d in self.cfg["artifacts"][a]["datasets"]}
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
        artifacts = {a: self.artifact_spec(a) for a in self.CLAIM_ARTIFACTS}
        for r in artifacts["fig4a"]["rows"]:  # alpha rows share the method's label
            r["label"] = f"{r['label']} α={r['alpha']:g}"
        return {"claims": claims, "artifacts": artifacts, **self.claims_header()}

    def claims_header(self) -> dict:
        """What the claims page says besides its rows: the scale of this run and the two
        rows of the per-structure comparison (the claims step and the report use it)."""
        ref, other = self._structure_rows()
        eng = self.cfg["engine"]
        iters = int(eng["stages"]) * int(eng["iters_per_stage"])
        synthetic = any(d["synthetic"] for a in self.CLAIM_ARTIFACTS for d in self._datasets(a))
        scale = (
            f"This run: {len(self.cfg['seeds'])} seed(s), {iters} training iterations of the "
            "engine (the paper: 8000)"
            + (
                ", synthetic phantoms instead of CT: verdicts say what "
                "the pipeline's numbers show at this scale, not whether the paper's CT result holds"
                if synthetic
                else ""
            )
            + "."
        )
        return {
            "scale": scale,
            "per_structure": {
                "row": ref,
                "other": other,
                "row_label": self.method(ref["method"])["label"],
                "other_label": self.method(other["method"])["label"],
                "datasets": self._datasets("table1"),
            },
        }

    def structure_metrics(self, run: Run) -> str:
        return f"{self.run_dir('metrics', run)}/structures.csv"

    def report_output(self) -> str:
        return f"{self.results}/report/index.html"

    def report_inputs(self) -> dict[str, list[str]]:
        return {
            "tables": [f"{self.results}/tables/{t}.md" for t in TABLES],
            "figures": [f"{self.results}/figures/{f}.png" for f in FIGURES],
            "claims": [self.claims_outputs()[1]],  # claims.csv (per_structure.csv beside it)
        }

    def report_spec(self) -> dict:
        used = {ds for art in self.cfg["artifacts"].values() for ds in art["datasets"]}
        datasets = {}
        for key in sorted(used):
            ds = self.cfg["datasets"][key]
            datasets[key] = {
                "display": ds["display"],
                "source": ds["source"],
                "prepared": self.prepared(key),
                "paper_counts": PAPER_COUNTS.get(ds.get("paper_key")),
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
            "engine": self.cfg["engine"],
            "methods": methods,
            "gpu_rules": {r: int(self.resources(r)["gpu"]) for r in self.cfg["resources"]},
            "figure_titles": {f: self.cfg["artifacts"][f]["title"] for f in FIGURES},
            "tables": {t: self.artifact_spec(t) for t in TABLES},
            "claims": self.claims_header(),
        }

    # ------------------------------------------------------------------ data stages
    def source_kind(self, dataset: str) -> str:
        return self.cfg["datasets"][dataset]["source"]["kind"]

    def stages(self, dataset: str) -> tuple[str, ...]:
        return REAL_SOURCES.get(self.source_kind(dataset), ())

    def stage_input(self, dataset: str, stage: str) -> list[str]:
        """The upstream folder of a data stage ('prepare' included), or nothing."""
        chain = (*self.stages(dataset), "prepare")
        i = chain.index(stage) if stage in chain else -1
        if i <= 0:
            if stage != "prepare" and stage not in chain:
                raise CoreregError(
                    f"dataset '{dataset}' ({self.source_kind(dataset)}) has no '{stage}' step"
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

    def resources(self, rule: str) -> dict:
        """A rule's declared resources (threads, mem_mb, runtime, gpu, from_costs), each
        the schema's default where the configuration leaves it out."""
        return dict(self.cfg["resources"][rule])

    def job_device(self, rule: str, run: Run) -> str:
        """The device kind (cpu | cuda) a job of ``rule`` runs on: GPU rules of methods
        that use a GPU, unless the configuration's device is the CPU."""
        if self.cfg["device"] == "cpu" or rule not in ("train", "register"):
            return "cpu"
        gpu = int(self.resources(rule)["gpu"])
        if run.method and int(self.method(run.method)["gpu"]) and gpu:
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

    def _datasets(self, artifact: str) -> list[dict]:
        out = []
        for key in self.cfg["artifacts"][artifact]["datasets"]:
            ds = self.cfg["datasets"][key]
            out.append(
                {
                    "key": key,
                    "display": ds["display"],
                    "paper_key": ds.get("paper_key"),
                    "synthetic": ds["source"]["kind"].startswith("synthetic"),
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
        }
        spec["seeds"] = list(self.cfg["seeds"])
        if "core" in self.cfg["methods"]:
            cp = self.method_params("core")
            spec["cl"] = {
                k: cp[f"cl_{k}"]
                for k in (
                    "weight_schedule",
                    "weight",
                    "views",
                    "view_b_grad",
                    "normalize",
                    "negatives",
                    "reduction",
                )
            }
            spec["cl"]["iterations"] = int(cp["stages"]) * int(cp["iters_per_stage"])
        for key in ("caption", "paper_source", "paper"):
            if art.get(key):
                spec[key] = art[key]
        if art.get("reference"):
            spec["reference"] = {"variant": "default", **art["reference"]}
        if artifact == "fig4b":
            eng = self.cfg["engine"]
            spec["iterations"] = int(eng["stages"]) * int(eng["iters_per_stage"])
            spec["iters_per_stage"] = int(eng["iters_per_stage"])
        if artifact == "fig3":
            spec["panels"] = [
                {
                    "display": d["display"],
                    "data": self.prepared(d["key"]),
                    "pair_index": art["pair_index"],
                    "window": self.cfg["datasets"][d["key"]].get("window"),
                    "methods": [
                        {
                            "label": r["label"],
                            "fields": self.figure_fields(
                                Run(
                                    d["key"],
                                    r["method"],
                                    r["variant"],
                                    self.seeds_for(r["method"])[0],
                                )
                            )
                            if self.enabled(r["method"])
                            else None,
                        }
                        for r in spec["rows"]
                    ],
                }
                for d in spec["datasets"]
            ]
        return spec

    def artifact_inputs(self, artifact: str) -> dict[str, list[str]]:
        runs = self.runs(artifact)
        if artifact == "fig4b":
            return {"logs": [self.train_log(r) for r in runs if self.trainable(r.method)]}
        if artifact == "fig3":
            datasets = self.cfg["artifacts"][artifact]["datasets"]
            return {
                "fields": [
                    self.figure_fields(r) for r in runs if r.seed == self.seeds_for(r.method)[0]
                ],
                "data": [self.prepared(d) for d in datasets],
            }
        datasets = self.cfg["artifacts"][artifact]["datasets"]
        inputs = {
            "metrics": [self.pair_metrics(r) for r in runs],
            "data": [self.prepared(d) for d in datasets],
        }
        if artifact in TABLES:
            inputs["structures"] = [self.structure_metrics(r) for r in runs]
        return inputs

    def manifest_args(self, artifact: str) -> str:
        """``--manifests DATASET=PATH ...`` of an artifact's datasets (their test pairs)."""
        return self.manifest_args_for(
            [self.prepared(d) for d in self.cfg["artifacts"][artifact]["datasets"]]
        )

    def manifest_args_for(self, prepared: list[str]) -> str:
        items = [f"{Path(p).parent.name}={p}" for p in prepared]
        return "--manifests " + " ".join(shlex.quote(i) for i in items)

    def fig4b_logs(self, artifact: str = "fig4b") -> list[str]:
        """LABEL=path arguments for ``corereg figure fig4b``."""
        out = []
        for row in self.rows(artifact):
            if not (self.enabled(row["method"]) and self.trainable(row["method"])):
                continue
            for ds in self.cfg["artifacts"][artifact]["datasets"]:
                for s in self.seeds_for(row["method"]):
                    path = self.train_log(Run(ds, row["method"], row["variant"], s))
                    out.append(shlex.quote(f"{row['label']}={path}"))
        return out
