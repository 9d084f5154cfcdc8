# The explorer pages (partaware explore): results/explore/<dataset>.html, one per dataset with a
# dense store; self-contained HTML, shown in the report's "Explore" category.
rule explore:
    input:
        images=demo_root,
        stores=explore_inputs,
    output:
        report("results/explore/{dataset}.html", caption="../workflow/report/explore.rst", category="Explore",
               labels={"dataset": "{dataset}"}),
    params:
        spec=lambda wc: explore_spec(wc.dataset),
    log:
        "results/logs/explore/{dataset}.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware explore --spec {params.spec:q} --dataset {wildcards.dataset} --out {output:q} > {log:q} 2>&1"
