# Data: download -> convert -> label (RAD-ChestCT) -> prepare.  Synthetic datasets
# are produced by `prepare` alone.  Each stage writes one folder, atomically.


rule download:
    input:
        watched=watched("download"),
    output:
        directory(f"{DATA}/{{dataset}}/raw"),
    log:
        f"{RESULTS}/logs/download/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: res("download", "threads")
    resources:
        mem_mb=res("download", "mem_mb"),
        runtime=res("download", "runtime"),
        gpu=res("download", "gpu"),
    params:
        spec=lambda w: plan.quote(plan.stage_spec(w.dataset, "download")),
    shell:
        "python -m corereg download --dataset {wildcards.dataset} --spec {params.spec} --out {output} > {log} 2>&1"


rule convert:
    input:
        lambda w: plan.stage_input(w.dataset, "convert"),
    output:
        directory(f"{DATA}/{{dataset}}/convert"),
    log:
        f"{RESULTS}/logs/convert/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert/{{dataset}}.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: res("convert", "threads")
    resources:
        mem_mb=res("convert", "mem_mb"),
        runtime=res("convert", "runtime"),
        gpu=res("convert", "gpu"),
    params:
        spec=lambda w: plan.quote(plan.stage_spec(w.dataset, "convert")),
    shell:
        "python -m corereg convert --dataset {wildcards.dataset} --spec {params.spec} --input {input} --out {output} > {log} 2>&1"


rule label:
    input:
        lambda w: plan.stage_input(w.dataset, "label"),
    output:
        directory(f"{DATA}/{{dataset}}/label"),
    log:
        f"{RESULTS}/logs/label/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/label/{{dataset}}.tsv"
    conda:
        lambda w: os.path.join(ROOT, plan.stage_env(w.dataset, "label"))
    threads: res("label", "threads")
    resources:
        mem_mb=res("label", "mem_mb"),
        runtime=res("label", "runtime"),
        gpu=res("label", "gpu"),
    params:
        spec=lambda w: plan.quote(plan.stage_spec(w.dataset, "label")),
    shell:
        "python -m corereg label --dataset {wildcards.dataset} --spec {params.spec} --input {input} --out {output} > {log} 2>&1"


rule prepare:
    input:
        upstream=lambda w: plan.stage_input(w.dataset, "prepare"),
        watched=watched("prepare"),
    output:
        directory(f"{DATA}/{{dataset}}/prepared"),
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: res("prepare", "threads")
    resources:
        mem_mb=job_res("prepare", "mem_mb"),
        runtime=job_res("prepare", "runtime"),
        gpu=res("prepare", "gpu"),
    params:
        spec=lambda w: plan.quote(plan.dataset_spec(w.dataset)),
        raw=lambda w, input: f"--raw {input.upstream}" if input.upstream else "",
    shell:
        "python -m corereg prepare --dataset {wildcards.dataset} --spec {params.spec} {params.raw} --out {output} > {log} 2>&1"


# Released weights of a pretrained comparison method (uniGradICON), fetched once.
rule weights:
    output:
        f"{DATA}/weights/{{method}}/{{name}}",
    log:
        f"{RESULTS}/logs/weights/{{method}}/{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/weights/{{method}}/{{name}}.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: res("weights", "threads")
    resources:
        mem_mb=res("weights", "mem_mb"),
        runtime=res("weights", "runtime"),
        gpu=res("weights", "gpu"),
    params:
        url=lambda w: plan.asset_spec(w.method, "weights")["url"],
        md5=lambda w: plan.asset_spec(w.method, "weights")["md5"],
        if_missing=lambda w: plan.if_missing(w.method),
    shell:
        "python -m corereg fetch-weights --url {params.url} --md5 {params.md5} --out {output}"
        " --if-missing {params.if_missing} > {log} 2>&1"


# deedsBCV compiled from the user's checkout (DEEDs with params.implementation: deedsbcv).
rule build_deedsbcv:
    input:
        lambda w: plan.asset_spec(w.method, "tool")["sources"],
    output:
        directory(f"{DATA}/tools/{{method}}/deedsbcv"),
    log:
        f"{RESULTS}/logs/build/{{method}}/deedsbcv.log",
    benchmark:
        f"{RESULTS}/benchmarks/build/{{method}}/deedsbcv.tsv"
    conda:
        "../../envs/registration_tools.yaml"
    threads: res("build", "threads")
    resources:
        mem_mb=res("build", "mem_mb"),
        runtime=res("build", "runtime"),
        gpu=res("build", "gpu"),
    params:
        source=lambda w: plan.asset_spec(w.method, "tool")["source"],
        if_missing=lambda w: plan.if_missing(w.method),
    shell:
        "python -m corereg build-deedsbcv --source {params.source:q} --out {output}"
        " --if-missing {params.if_missing} > {log} 2>&1"
