# Registration of every test pair of a dataset by one run, then its evaluation.


rule register:
    input:
        unpack(register_inputs),
    output:
        fields_output(
            f"{RESULTS}/fields/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}"
        ),
    log:
        f"{RESULTS}/logs/register/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/register/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        lambda w: os.path.join(ROOT, plan.conda_env(w.method))
    threads: res("register", "threads")
    resources:
        mem_mb=job_res("register", "mem_mb"),
        runtime=job_res("register", "runtime"),
        gpu=register_gpu,
    params:
        kind=lambda w: plan.method(w.method)["kind"],
        params=lambda w: plan.quote(plan.register_params(run_of(w))),
        checkpoint=lambda w, input: (
            f"--checkpoint {input.model}" if "model" in input.keys() else ""
        ),
        device=config["device"],
        if_missing=lambda w: plan.if_missing(w.method),
        storage=plan.field_storage(),
    shell:
        "python -m corereg register --method {params.kind} --params {params.params} --manifest {input.data}"
        " --out-dir {output} --seed {wildcards.seed} --device {params.device} --threads {threads}"
        " --if-missing {params.if_missing} --field-storage {params.storage} {params.checkpoint}"
        " > {log} 2>&1"


rule evaluate:
    input:
        data=lambda w: plan.prepared(w.dataset),
        fields=f"{RESULTS}/fields/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}",
    output:
        pairs=f"{RESULTS}/metrics/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}/pairs.csv",
        structures=f"{RESULTS}/metrics/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}/structures.csv",
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: res("evaluate", "threads")
    resources:
        mem_mb=job_res("evaluate", "mem_mb"),
        runtime=job_res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    params:
        spec=lambda w: plan.quote(plan.eval_spec(run_of(w))),
    shell:
        "python -m corereg evaluate --manifest {input.data} --fields {input.fields} --spec {params.spec}"
        " --out-structures {output.structures} --out-pairs {output.pairs} > {log} 2>&1"


# The field of the test pair Figure 3 shows, kept after the register step's folder is removed.
rule keep_field:
    input:
        data=lambda w: plan.prepared(w.dataset),
        fields=f"{RESULTS}/fields/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}",
    output:
        directory(
            f"{RESULTS}/figure_fields/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}"
        ),
    log:
        f"{RESULTS}/logs/keep_field/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/keep_field/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: 1
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    params:
        index=plan.figure_pair_index(),
    shell:
        "python -m corereg keep-field --fields {input.fields} --manifest {input.data}"
        " --pair-index {params.index} --out-dir {output} > {log} 2>&1"


# Learn2Reg submission: one run's test fields under the challenge's file names.
rule export_l2r:
    input:
        data=lambda w: plan.prepared(w.dataset),
        fields=f"{RESULTS}/fields/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}",
    output:
        directory(
            f"{RESULTS}/l2r_submission/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}"
        ),
    log:
        f"{RESULTS}/logs/export_l2r/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/export_l2r/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: 1
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    params:
        format=config["l2r_submission"]["format"],
    shell:
        "python -m corereg export-l2r --fields {input.fields} --manifest {input.data}"
        " --format {params.format} --out-dir {output} > {log} 2>&1"
