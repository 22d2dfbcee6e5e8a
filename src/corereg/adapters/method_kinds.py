"""The method kinds of this version: one adapter class each (docs/methods.md)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from corereg.adapters.base import MethodKind, Verb, validations
from corereg.config import deep_merge, engine_overrides_node
from corereg.config import method_params as kind_params
from corereg.errors import CoreregError, ToolMissing
from corereg.voxels import ENGINE_SIZE_MULTIPLE

IF_MISSING = {
    "choices": ["report", "fail"],
    "default": "fail",
}


class InitialKind(MethodKind):
    """No registration (the zero field): the 'Initial' row."""

    name = "initial"
    method = "corereg.registration.methods:Initial"


class ConvexAdamKind(MethodKind):
    """ConvexAdam with MIND-SSC features (the convexadam package), no training."""

    name = "convexadam"
    method = "corereg.registration.methods:ConvexAdam"


class SAMConvexKind(MethodKind):
    """SAMConvex: no adapter in this version (its rows read "not run" with the reason)."""

    name = "samconvex"
    missing = "SAMConvex has no adapter; its rows read 'not run' with the reason"


# ----------------------------------------------------------------------------- NiftyReg
class NiftyRegKind(MethodKind):
    """NiftyReg's reg_f3d free-form deformation (the registration_tools environment)."""

    name = "niftyreg"
    method = "corereg.baselines.niftyreg:NiftyReg"
    DEFAULT_ITERATIONS: ClassVar[int] = 150  # reg_f3d's own -maxit when the config gives none

    def measure_register(self, pairs, params, add) -> None:
        super().measure_register(pairs, params, add)
        add("niftyreg_iterations", params.get("max_iterations", self.DEFAULT_ITERATIONS))

    def register_seconds(self, params, entry, voxels, factor, pairs):
        per_pair = (entry.get("register_pair_s") or {}).get(self.name)
        if per_pair is None:
            return None
        measured = entry.get("niftyreg_iterations") or self.DEFAULT_ITERATIONS
        per_pair *= params.get("max_iterations", self.DEFAULT_ITERATIONS) / measured
        return pairs * per_pair * voxels * factor


# ----------------------------------------------------------------------------- DEEDs
def _build_deedsbcv(a) -> None:
    """Compile deedsBCV and linearBCV from a user's checkout (DEEDs, implementation deedsbcv)."""
    from corereg.baselines import deedsbcv

    try:
        deedsbcv.build(a.source, a.out)
    except ToolMissing as exc:  # no compiler or zlib here: the DEEDs rows say so
        if a.if_missing != "report":
            raise
        deedsbcv.write_not_run(a.out, exc.reason)


def _build_options(s) -> None:
    s.add_argument("--source", required=True, help="a checkout of github.com/mattiaspaul/deedsBCV")
    s.add_argument("--out", required=True, help="folder for the binaries and build.json")
    s.add_argument(
        "--if-missing",
        **IF_MISSING,
        help="no compiler or zlib: fail, or write a 'not run' record the tables report",
    )


BUILD_DEEDSBCV = Verb(
    "build-deedsbcv",
    "compile deedsBCV and linearBCV from a source checkout",
    _build_options,
    _build_deedsbcv,
)


class DeedsKind(MethodKind):
    """DEEDs: the TMI-2013 algorithm, or deedsBCV compiled by the workflow (its asset
    ``tool``)."""

    name = "deeds"
    method = "corereg.baselines.deeds:Deeds"

    def _deedsbcv(self, plan, key: str) -> dict | None:
        params = kind_params(self.name, plan.method(key)["params"])
        return params["deedsbcv"] if params["implementation"] == "deedsbcv" else None

    def check(self, plan, key: str) -> None:
        super().check(plan, key)
        bcv = self._deedsbcv(plan, key)
        if bcv is not None and plan.enabled(key) and not (bcv["source"] or bcv["bin_dir"]):
            raise CoreregError(
                f"config: methods.{key}.params.implementation is deedsbcv: set params.deedsbcv.source "
                "(a checkout of github.com/mattiaspaul/deedsBCV, built by the pipeline) or "
                "params.deedsbcv.bin_dir (a folder with deedsBCV and linearBCV built)"
            )

    def _build_dir(self, plan, key: str) -> str | None:
        bcv = self._deedsbcv(plan, key)
        if bcv is None or bcv["bin_dir"] or not bcv["source"]:
            return None
        return f"{plan.data_root}/tools/{key}/deedsbcv"

    def assets(self, plan, key: str) -> dict[str, str]:
        built = self._build_dir(plan, key)
        return {"tool": built} if built else {}

    def asset_spec(self, plan, key: str, asset: str) -> dict:
        """The deedsBCV checkout (absolute) and the source files the build reads
        (Snakemake rebuilds when they change)."""
        from corereg.baselines.deedsbcv import SOURCES

        if asset != "tool":
            return super().asset_spec(plan, key, asset)
        source = str(Path(self._deedsbcv(plan, key)["source"]).expanduser().resolve())
        return {"source": source, "sources": [str(Path(source) / r) for r in SOURCES.values()]}

    def register_params(self, plan, key, run, params):
        built = self._build_dir(plan, key)
        if built:
            params["deedsbcv"] = {**params["deedsbcv"], "bin_dir": built}
        return params

    def verbs(self):
        return (BUILD_DEEDSBCV,)


# ----------------------------------------------------------------------------- uniGradICON
def _fetch_weights(a) -> None:
    """Download a method's released weights (size and md5 recorded beside them on first use)."""
    from corereg import not_run
    from corereg.data.sources import ChecksumLock, download

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = ChecksumLock(out.parent / "checksums.json")
    try:
        download(a.url, out, md5=None if a.md5 == "none" else a.md5, lock=lock)
    except CoreregError as exc:
        if a.if_missing != "report":
            raise
        # offline machine: a small record in place of the weights; the method's rows then read
        # "not run: <reason>" instead of the whole table failing
        not_run.write_record(
            out,
            f"its weights could not be downloaded ({exc}); delete {out} to retry, "
            "or set params.weights to a local copy",
        )


def _fetch_options(s) -> None:
    s.add_argument("--url", required=True, help="where the weights are published")
    s.add_argument(
        "--md5",
        default="none",
        help="expected MD5, or none (size and MD5 are recorded on the first download)",
    )
    s.add_argument("--out", required=True, help="the weights file to write")
    s.add_argument(
        "--if-missing",
        **IF_MISSING,
        help="download fails: fail, or write a 'not run' record the tables report",
    )


FETCH_WEIGHTS = Verb(
    "fetch-weights",
    "download a pretrained method's released weights",
    _fetch_options,
    _fetch_weights,
)


class UniGradICONKind(MethodKind):
    """The released uniGradICON model; its weights are an asset the workflow downloads
    (params.weights null and a params.weights_url)."""

    name = "unigradicon"
    method = "corereg.baselines.unigradicon:UniGradICON"

    def _weights(self, plan, key: str) -> str | None:
        params = kind_params(self.name, plan.method(key)["params"])
        if params["weights"] or not params["weights_url"]:
            return None
        return f"{plan.data_root}/weights/{key}/{params['weights_url'].rsplit('/', 1)[-1]}"

    def assets(self, plan, key: str) -> dict[str, str]:
        weights = self._weights(plan, key)
        return {"weights": weights} if weights else {}

    def asset_spec(self, plan, key: str, asset: str) -> dict:
        """The url and md5 (or 'none') of the released weights the weights rule downloads."""
        if asset != "weights":
            return super().asset_spec(plan, key, asset)
        params = plan.method(key)["params"]
        return {"url": params["weights_url"], "md5": params.get("weights_md5") or "none"}

    def register_params(self, plan, key, run, params):
        weights = self._weights(plan, key)
        if weights:
            params["weights"] = weights
        return params

    # uniGradICON's README lists the Learn2Reg abdomen CT scans (L2R-Abdomen) among the
    # data its released model was trained on
    TRAINED_ON: ClassVar[dict] = {"abdomen": "the Learn2Reg abdomen CT scans (L2R-Abdomen)"}

    def artifact_notes(self, plan) -> dict:
        """Datasets (real, not phantoms) whose test scans the released model saw in its
        training: the tables say so beside its row."""
        keys = [k for k, m in plan.cfg["methods"].items() if m["kind"] == self.name]
        overlap = {
            d: self.TRAINED_ON[ds.get("paper_key")]
            for d, ds in plan.cfg["datasets"].items()
            if ds.get("paper_key") in self.TRAINED_ON and not plan.source_kind(d).synthetic
        }
        if not keys or not overlap:
            return {}
        return {"training_overlap": {"methods": keys, "datasets": overlap}}

    def verbs(self):
        return (FETCH_WEIGHTS,)


# ----------------------------------------------------------------------------- learned
class LearnedKind(MethodKind):
    """VoxelMorph and LapIRN: trained by corereg.baselines.learned, one forward pass."""

    trainer = "corereg.baselines.learned:train"

    def iterations(self, params: dict) -> int:
        raise NotImplementedError

    def train_seconds(self, plan, run, params, entry, voxels, factor):
        it_s = (entry.get("train_iteration_s") or {}).get(self.name)
        if it_s is None:
            return None
        iters = self.iterations(params)
        val = (entry.get("validation_pair_s") or {}).get(self.name) or 0.0
        n_val = validations(iters, int(params.get("val_every", 500)))
        return (iters * it_s + n_val * val) * voxels * factor

    def gpu_ratio(self, cpu, t_inf):
        if self.name in t_inf:  # the paper timed this kind itself
            return self.own_ratio(cpu, t_inf)
        return super().gpu_ratio(cpu, t_inf)


class VoxelMorphKind(LearnedKind):
    """VoxelMorph (diffeomorphic), trained unsupervised on the training pairs."""

    name = "voxelmorph"
    method = "corereg.baselines.learned:VoxelMorph"

    def iterations(self, params):
        return int(params["iterations"])


class LapIRNKind(LearnedKind):
    """LapIRN (displacement, three levels), trained unsupervised on the training pairs."""

    name = "lapirn"
    method = "corereg.baselines.learned:LapIRNMethod"

    def iterations(self, params):
        return sum(int(n) for n in params["level_iterations"])


# ----------------------------------------------------------------------------- engine
# The settings of the contrastive term that Table notes state (engine key cl_<name>).
CL_NOTE_KEYS = ("weight_schedule", "weight", "views", "view_b_grad", "normalize", "negatives")
CL_NOTE_KEYS += ("reduction",)
# A dataset's settings that the engine's register job reads at test time.
TEST_TIME_SETTINGS = ("clamp_eval", "sdlogj_band")


class EngineKind(MethodKind):
    """The CoRe / Bigalke et al. engine (docs/method.md): trained by self-training,
    registered with the paper's test-time protocol."""

    name = "engine"
    method = "corereg.registration.engine_method:Engine"
    trainer = "corereg.training.selftrain:train"
    shape_multiple = ENGINE_SIZE_MULTIPLE  # the network halves its input three times

    def schema_node(self) -> dict:
        return engine_overrides_node()

    def base_params(self, cfg, method):
        return deep_merge(cfg["engine"], method["params"])

    def register_params(self, plan, key, run, params):
        # the register job's JSON carries the dataset's test-time settings beside the engine
        # constants; make() takes them apart again into DatasetSettings
        ds = plan.cfg["datasets"][run.dataset]
        params.update({k: ds.get(k) for k in TEST_TIME_SETTINGS})
        return params

    def make(self, params, device, checkpoint=None, seed=0, dataset=None):
        from corereg.params import DatasetSettings

        given = dict(params or {})
        settings = {k: given.pop(k) for k in TEST_TIME_SETTINGS if k in given}
        if dataset is None:
            dataset = DatasetSettings.from_mapping(settings)
        cls = self.method_class()
        self.check_checkpoint(cls, checkpoint)
        return cls(given, device, checkpoint, seed, dataset=dataset)

    def artifact_notes(self, plan) -> dict:
        """The contrastive settings of the first contrastive engine method (CoRe), for
        the tables' note, whatever the method is called."""
        for key, m in plan.cfg["methods"].items():
            if m["kind"] != self.name:
                continue
            p = plan.method_params(key)
            if not p["contrastive"]:
                continue
            cl = {k: p[f"cl_{k}"] for k in CL_NOTE_KEYS}
            cl["iterations"] = int(p["stages"]) * int(p["iters_per_stage"])
            return {"cl": cl}
        return {}

    # -- the cost model ---------------------------------------------------------------
    @staticmethod
    def form(params: dict) -> str:
        """The training step's form: registration only, or CoRe's contrastive views."""
        if not params.get("contrastive") or params.get("contrastive_mode", "joint") != "joint":
            return "registration"
        return params.get("cl_views", "separate")

    def train_form(self, record):
        return record.get("form", self.name)

    def planned_form(self, params):
        return self.form(params)

    def train_peak_name(self, form):
        return f"train.{self.name}.{form}"

    def measure_train(self, phases, params, add) -> None:
        if "pseudo_labels" in phases:
            add("pseudo_label_pair_s", phases["pseudo_labels"]["per_unit_s"])
            add("label_adam_iters", int(params.get("adam_iters", 50)))

    def measure_register(self, pairs, params, add) -> None:
        if "net_seconds" not in pairs or not pairs["adam_iters"].max() > 0:
            return
        add("net_pair_s", pairs["net_seconds"].mean())
        add("search_rounds", pairs["search_rounds"].mean())
        if "adam_step_seconds" in pairs:  # the loop apart from its set-up
            steps = pairs["adam_step_seconds"]
            add("adam_step_s", (steps / pairs["adam_iters"]).mean())
            add("adam_setup_s", (pairs["adam_seconds"] - steps).mean())

    def train_seconds(self, plan, run, params, entry, voxels, factor):
        iters = int(params["stages"]) * int(params["iters_per_stage"])
        mode = params.get("contrastive_mode", "joint")
        it_s = (entry.get("train_iteration_s") or {}).get(self.form(params))
        if it_s is None and iters:
            return None
        adam = int(params.get("adam_iters", 50))
        step = entry.get("adam_step_s") or 0.0
        label_iters = entry.get("label_adam_iters") or adam
        pl = (entry.get("pseudo_label_pair_s") or 0.0) + (adam - label_iters) * step
        val = (entry.get("validation_pair_s") or {}).get(self.name) or 0.0
        val += (adam - label_iters) * step
        train_pairs = plan.counts(run.dataset).train_pairs
        refreshes = int(params["stages"]) if iters else 0
        n_val = validations(iters, int(params.get("val_every", 100)))
        secs = (it_s or 0.0) * iters
        secs += refreshes * train_pairs * pl
        secs += n_val * int(params.get("val_pairs", 4)) * val
        if params.get("contrastive") and mode == "pretrain_frozen":
            pre = entry.get("pretrain_iteration_s")
            if pre is None:
                return None
            secs += int(params.get("cl_pretrain_iters", 8000)) * pre
        return secs * voxels * factor

    def register_seconds(self, params, entry, voxels, factor, pairs):
        if entry.get("net_pair_s") is None:
            return None
        adam = int(params.get("adam_iters", 50)) if params.get("test_adam", True) else 0
        rounds = entry.get("search_rounds") or 1.0
        if not params.get("reg_fac_search", True):
            rounds = 1.0
        setup = (entry.get("adam_setup_s") or 0.0) if adam else 0.0
        per_pair = entry["net_pair_s"] + rounds * (setup + adam * (entry.get("adam_step_s") or 0.0))
        return pairs * per_pair * voxels * factor

    def cpu_pair_seconds(self, cpu):
        """The network pass and one 50-step Adam run (the paper's T_inf protocol)."""
        if not (cpu.get("net_pair_s") and cpu.get("adam_step_s")):
            return None
        return cpu["net_pair_s"] + (cpu.get("adam_setup_s") or 0.0) + 50 * cpu["adam_step_s"]

    def gpu_ratio(self, cpu, t_inf):
        return self.own_ratio(cpu, t_inf)
