# The table of every measurement.


rule table:
    input:
        evals=eval_targets(),
        stores=store_targets(),
    output:
        csv=report("results/table.csv", caption="../workflow/report/table.rst", category="Results",
                   labels={"figure": "table (tidy CSV)"}),
        md=report("results/table.md", caption="../workflow/report/table_md.rst", category="Results",
                  labels={"figure": "table"}),
        skipped="results/skipped_images.csv",
    params:
        spec=spec(sections=("report",)),
    log:
        "results/logs/table.log",
    conda:
        "../envs/report.yaml"
    shell:
        "partaware table --spec {params.spec:q} --csv {output.csv:q} --md {output.md:q} --skipped {output.skipped:q} "
        "--stores {input.stores:q} -- {input.evals:q} > {log:q} 2>&1"
