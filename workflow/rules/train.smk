# Training of learning-based methods: one job per (dataset, method, variant, seed).
# Stage checkpoints live beside final.pt, so a resubmitted job resumes.


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{RESULTS}/models/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}/final.pt",
        log=f"{RESULTS}/models/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}/train_log.csv",
        costs=f"{RESULTS}/models/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}/costs.json",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        lambda w: os.path.join(ROOT, plan.conda_env(w.method))
    threads: res("train", "threads")
    resources:
        mem_mb=job_res("train", "mem_mb"),
        runtime=job_res("train", "runtime"),
        gpu=res("train", "gpu"),
    params:
        spec=lambda w: plan.quote(plan.train_spec(run_of(w))),
        outdir=lambda w, output: os.path.dirname(output.model),
        device=config["device"],
        if_missing=lambda w: plan.if_missing(w.method),
    shell:
        "python -m corereg train --data {input.data} --method {wildcards.method} --variant {wildcards.variant}"
        " --seed {wildcards.seed} --spec {params.spec} --device {params.device} --threads {threads}"
        " --out {params.outdir} --if-missing {params.if_missing}"
        " > {log} 2>&1"
