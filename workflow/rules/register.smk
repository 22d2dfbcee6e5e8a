# Registration of every test pair of a dataset by one run, then its evaluation.


rule register:
    input:
        unpack(register_inputs),
    output:
        directory(f"{RESULTS}/fields/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}"),
    log:
        f"{RESULTS}/logs/register/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/register/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        lambda w: os.path.join(ROOT, plan.conda_env(w.method))
    threads: res("register", "threads")
    resources:
        mem_mb=res("register", "mem_mb"),
        runtime=res("register", "runtime"),
        gpu=register_gpu,
    params:
        kind=lambda w: plan.method(w.method)["kind"],
        params=lambda w: plan.quote(plan.register_params(run_of(w))),
        checkpoint=lambda w, input: (
            f"--checkpoint {input.model}" if "model" in input.keys() else ""
        ),
        device=config["device"],
        if_missing=lambda w: plan.if_missing(w.method),
    shell:
        "python -m corereg register --method {params.kind} --params {params.params} --manifest {input.data}"
        " --out-dir {output} --seed {wildcards.seed} --device {params.device} --threads {threads}"
        " --if-missing {params.if_missing} {params.checkpoint} > {log} 2>&1"


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
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=res("evaluate", "gpu"),
    params:
        spec=lambda w: plan.quote(plan.eval_spec(run_of(w))),
    shell:
        "python -m corereg evaluate --manifest {input.data} --fields {input.fields} --spec {params.spec}"
        " --out-structures {output.structures} --out-pairs {output.pairs} > {log} 2>&1"
