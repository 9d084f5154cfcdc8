# Figures from the cache and the table: retrieval grids, feature maps, the summary plot, the
# part-vs-object contrast.
# Every figure is tagged for `snakemake --report results/report.html`.


rule retrieval_grid:
    input:
        images=demo_root,
        index="results/index/{dataset}/all.parquet",
        stores=lambda wc: [store_path(wc.dataset, m, "all") for m in CFG["models"]],
    output:
        report("results/figures/{dataset}/retrieval_grid.png", caption="../workflow/report/retrieval_grid.rst",
               category="Figures", subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "retrieval grid"}),
    params:
        spec=lambda wc: figure_spec(wc.dataset, GRID_KEYS),
        models=" ".join(CFG["models"]),
    log:
        "results/logs/figures/{dataset}/retrieval_grid.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware figure-grid --spec {params.spec:q} --dataset {wildcards.dataset} --index {input.index:q} "
        "--out {output:q} --models {params.models} -- {input.stores:q} > {log:q} 2>&1"


rule feature_maps:
    input:
        images=demo_root,
        stores=lambda wc: [store_path(wc.dataset, m, figure_split(wc.dataset)) for m in CFG["models"]],
    output:
        report("results/figures/{dataset}/feature_maps.png", caption="../workflow/report/feature_maps.rst",
               category="Figures", subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "feature maps"}),
    params:
        spec=lambda wc: figure_spec(wc.dataset, MAPS_KEYS),
        models=" ".join(CFG["models"]),
        split=lambda wc: figure_split(wc.dataset),
    log:
        "results/logs/figures/{dataset}/feature_maps.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware figure-maps --spec {params.spec:q} --dataset {wildcards.dataset} --split {params.split} "
        "--out {output:q} --models {params.models} -- {input.stores:q} > {log:q} 2>&1"


rule summary_plot:
    input:
        "results/table.csv",
    output:
        report("results/figures/summary.png", caption="../workflow/report/summary.rst",
               category="Results", labels={"figure": "summary"}),
    log:
        "results/logs/figures/summary.log",
    conda:
        "../envs/report.yaml"
    shell:
        "partaware figure-summary --table {input:q} --out {output:q} > {log:q} 2>&1"


rule contrast_plot:
    input:
        "results/table.csv",
    output:
        report("results/figures/contrast.png", caption="../workflow/report/contrast.rst",
               category="Results", labels={"figure": "part vs object"}),
    log:
        "results/logs/figures/contrast.log",
    conda:
        "../envs/report.yaml"
    shell:
        "partaware figure-contrast --table {input:q} --out {output:q} > {log:q} 2>&1"
