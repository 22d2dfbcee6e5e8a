# Paper artifacts: Tables 1-3 (CSV, Markdown, LaTeX) and Figures 3, 4a, 4b (PNG, PDF).


rule table:
    input:
        unpack(lambda w: plan.artifact_inputs(w.table)),
    output:
        csv=report(
            f"{RESULTS}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"artifact": "{table}", "format": "CSV (every statistic)"},
        ),
        md=f"{RESULTS}/tables/{{table}}.md",
        tex=f"{RESULTS}/tables/{{table}}.tex",
        structures=f"{RESULTS}/tables/{{table}}_structures.csv",
    log:
        f"{RESULTS}/logs/report/{{table}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/{{table}}.tsv"
    wildcard_constraints:
        table="|".join(plan.artifacts_of("table")) or "^$",
    conda:
        "../../envs/corereg.yaml"
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    params:
        spec=lambda w: plan.quote(plan.artifact_spec(w.table)),
        prefix=lambda w: f"{RESULTS}/tables/{w.table}",
        manifests=lambda w: plan.manifest_args(w.table),
    shell:
        "python -m corereg table --spec {params.spec} --metrics {input.metrics} {params.manifests}"
        " --structures {input.structures} --out {params.prefix} > {log} 2>&1"


rule figure:
    input:
        unpack(lambda w: plan.artifact_inputs(w.figure)),
    output:
        png=report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"artifact": "{figure}"},
        ),
        pdf=f"{RESULTS}/figures/{{figure}}.pdf",
    log:
        f"{RESULTS}/logs/report/{{figure}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/{{figure}}.tsv"
    wildcard_constraints:
        figure="|".join(plan.artifacts_of("figure")) or "^$",
    conda:
        "../../envs/corereg.yaml"
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    params:
        spec=lambda w: plan.quote(plan.artifact_spec(w.figure)),
        prefix=lambda w: f"{RESULTS}/figures/{w.figure}",
        metrics=lambda w, input: (
            f"--metrics {' '.join(input.metrics)} {plan.manifest_args(w.figure)}"
            if "metrics" in input.keys()
            else ""
        ),
        logs=lambda w: plan.figure_logs(w.figure),
        type=lambda w: plan.artifact_type(w.figure).name,
    shell:
        "python -m corereg figure {params.type} --spec {params.spec} {params.metrics} {params.logs}"
        " --out {params.prefix} > {log} 2>&1"


rule table1:
    input:
        plan.artifact_outputs("table1"),


rule table2:
    input:
        plan.artifact_outputs("table2"),


rule table3:
    input:
        plan.artifact_outputs("table3"),


rule l2r_submission:
    input:
        plan.l2r_submissions(),


rule fig3:
    input:
        plan.artifact_outputs("fig3"),


rule fig4a:
    input:
        plan.artifact_outputs("fig4a"),


rule fig4b:
    input:
        plan.artifact_outputs("fig4b"),


# The paper's claims, one by one, with evidence and verdicts (workflow/claims.yaml).
rule claims:
    input:
        unpack(lambda w: plan.claims_inputs()),
        claims="workflow/claims.yaml",
    output:
        md=report(
            f"{RESULTS}/claims/claims.md",
            caption="../report/claims.rst",
            category="Claims",
        ),
        csv=f"{RESULTS}/claims/claims.csv",
        structures=f"{RESULTS}/claims/per_structure.csv",
        png=report(
            f"{RESULTS}/claims/per_structure.png",
            caption="../report/claims.rst",
            category="Claims",
        ),
    log:
        f"{RESULTS}/logs/report/claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/claims.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    params:
        spec=lambda w, input: plan.quote(plan.claims_spec(input.claims)),
        logs=lambda w: " ".join(plan.train_log_args("fig4b")),
        manifests=lambda w: plan.manifest_args_for(plan.claims_inputs()["data"]),
        out=lambda w, output: os.path.dirname(output.md),
    shell:
        "python -m corereg claims --spec {params.spec} --metrics {input.metrics}"
        " --structures {input.structures} --logs {params.logs} {params.manifests}"
        " --out-dir {params.out} > {log} 2>&1"


# The reproduction report (paper vs ours, one page); `snakemake --report report.html` is
# Snakemake's own report of the same run (every table and figure with its caption).
rule report_html:
    input:
        **plan.report_inputs(),
    output:
        plan.report_output(),
    log:
        f"{RESULTS}/logs/report/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/report.tsv"
    conda:
        "../../envs/corereg.yaml"
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=0,
    params:
        spec=lambda w: plan.quote(plan.report_spec()),
        results=lambda w, output: os.path.dirname(os.path.dirname(output[0])),
    shell:
        "python -m corereg report --spec {params.spec} --tables {input.tables} --figures {input.figures}"
        " --claims {input.claims}"
        " --results {params.results} --out {output} > {log} 2>&1"


rule reproduction_report:
    input:
        plan.report_output(),
