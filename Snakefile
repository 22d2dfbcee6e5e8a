# corereg: the CoRe reproduction workflow.  All logic lives in src/corereg;
# the rules only declare inputs, outputs, resources and one corereg call each.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        plan.all_targets(),
