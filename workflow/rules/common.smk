import os
import shlex
import shutil
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# --use-conda (or a profile's use-conda: true) on a machine without conda: one line saying
# what to do, before Snakemake stops on "Error running conda info".
_USE_CONDA = any(
    m.name == "CONDA" for m in workflow.deployment_settings.deployment_method
)
if _USE_CONDA and not shutil.which("conda"):
    raise WorkflowError(
        "--use-conda needs conda on PATH (install Miniforge or Mambaforge); without conda "
        "run Snakemake from the .venv that `make install` builds and leave out --use-conda "
        "(on SLURM: use-conda: false in the profile).  `corereg doctor` lists what else "
        "this machine lacks."
    )

ROOT = workflow.basedir  # the repository (the main Snakefile lives there)
SRC = os.path.join(ROOT, "src")
sys.path.insert(0, SRC)
# Jobs run `python -m corereg` from this checkout (no install needed in conda envs): every
# job's shell puts the workflow's own src/ first on its module path.
# (braces doubled: Snakemake formats the prefix like a shell command)
_SRC_Q = shlex.quote(SRC).replace("{", "{{").replace("}", "}}")
_KEEP = '"${{PYTHONPATH:+:$PYTHONPATH}}"'
# A training resumes its checkpoint only on the data it was written on; the workflow's
# jobs start over when the prepared dataset changed since (corereg train --help).
shell.prefix(
    f"export PYTHONPATH={_SRC_Q}{_KEEP}; export COREREG_OTHER_DATA_CHECKPOINT=restart; "
)

from corereg import config as corereg_config  # noqa: E402
from corereg.errors import CoreregError  # noqa: E402
from corereg.workflow.jobs import Plan, Run  # noqa: E402

SCHEMA = os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
try:  # one line naming the key and the file instead of the whole schema
    corereg_config.check(config, workflow.configfiles)
    validate(config, SCHEMA)  # fills in the schema's defaults
    plan = Plan(config)
except CoreregError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None
# Jobs inherit this environment (locally and through SLURM): one CPU instruction set
# for every torch step when config cpu_isa asks for it.
os.environ.update(corereg_config.cpu_isa_env(config.get("cpu_isa", "native")))
RESULTS = plan.results
DATA = plan.data_root
# Where a training's scans live (config training_data) reaches the train jobs through
# their environment, not their params: it changes no number, so it reruns nothing.
os.environ.update(corereg_config.training_data_env(plan.cfg))


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    method="[A-Za-z0-9_]+",
    variant="[A-Za-z0-9_]+",
    seed="[0-9]+",
    stage="download|convert|label",


def fields_output(path):
    """The register step's folder: removed once scored and copied for the figures, unless
    config fields.keep is all."""
    return directory(path) if plan.keep_all_fields() else temp(directory(path))


def run_of(w):
    return Run(w.dataset, w.method, w.variant, int(w.seed))


def res(rule_name, key):
    return plan.resources(rule_name)[key]


def job_res(rule_name, key):
    """A per-job resource: the declared value, or for auto the measured cost model's."""

    def get(w):
        run = run_of(w) if hasattr(w, "method") else Run(w.dataset, None, None, 0)
        return plan.job_resources(rule_name, run)[key]

    return get


def watched(stage):
    """The user's files a dataset's first data step reads in place (a folder source, a
    local Learn2Reg task), as inputs: the step runs again when one changes or appears.
    """

    def get(w):
        if (*plan.stages(w.dataset), "prepare")[0] != stage:
            return []
        return plan.source_kind(w.dataset).watched(plan.source(w.dataset))

    return get


def register_gpu(w):
    return min(int(plan.method(w.method).get("gpu", 0)), res("register", "gpu"))


def train_inputs(w):
    return {"data": plan.prepared(w.dataset)}


def register_inputs(w):
    inputs = {"data": plan.prepared(w.dataset)}
    if plan.trainable(w.method):
        inputs["model"] = plan.model(run_of(w))
    inputs.update(plan.assets(w.method))  # released weights, a compiled tool
    return inputs
