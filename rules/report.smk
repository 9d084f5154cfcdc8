# The table of every measurement.


rule table:
    input:
        eval_targets(),
    output:
        csv="results/table.csv",
        md="results/table.md",
    log:
        "results/logs/table.log",
    shell:
        "partaware table --csv {output.csv:q} --md {output.md:q} {input:q} > {log:q} 2>&1"
