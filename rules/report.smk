# The table of every measurement.


rule table:
    input:
        eval_targets(),
    output:
        csv=report("results/table.csv", caption="../workflow/report/table.rst", category="Results",
                   labels={"figure": "table (tidy CSV)"}),
        md=report("results/table.md", caption="../workflow/report/table.rst", category="Results",
                  labels={"figure": "table"}),
    log:
        "results/logs/table.log",
    conda:
        "../envs/partaware.yaml"
    shell:
        "partaware table --csv {output.csv:q} --md {output.md:q} {input:q} > {log:q} 2>&1"
