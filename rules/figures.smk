# Figures from the cache and the table: retrieval grids, feature maps, the summary plot, the
# part-vs-object contrast, keypoint correspondence.
# Every figure is tagged for `snakemake --report results/report.html`.


rule retrieval_grid:
    input:
        images=demo_root,
        index="results/index/{dataset}/all.parquet",
        stores=lambda wc: [store_path(wc.dataset, m, "all") for m in CFG["models"]],
    output:
        report("results/figures/{dataset}/retrieval_grid.png", caption="../workflow/report/retrieval_grid.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "retrieval grid", "dataset": "{dataset}"}),
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


rule patch_retrieval:
    """The paper's Figure 2: query patches of a patchgrid set and their nearest patches, one row per encoder."""
    input:
        images=demo_root,
        stores=lambda wc: [patch_store(wc.dataset, m) for m in CFG["models"]],
    output:
        report("results/figures/{dataset}/patch_retrieval.png", caption="../workflow/report/patch_retrieval.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "patch retrieval", "dataset": "{dataset}"}),
    params:
        spec=lambda wc: patch_figure_spec(wc.dataset),
        models=" ".join(CFG["models"]),
    log:
        "results/logs/figures/{dataset}/patch_retrieval.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware figure-patches --spec {params.spec:q} --dataset {wildcards.dataset} --out {output:q} "
        "--models {params.models} -- {input.stores:q} > {log:q} 2>&1"


rule patch_retrieval_projected:
    """The paper's Figure 4: one encoder's encoded (mean) vs projected (proj) patch neighbours."""
    input:
        images=demo_root,
        stores=projected_store,
    output:
        report("results/figures/{dataset}/patch_retrieval_projected.png",
               caption="../workflow/report/patch_retrieval_projected.rst", category="Figures",
               subcategory="{dataset}", labels={"figure": "patch retrieval, projected", "dataset": "{dataset}"}),
    params:
        spec=lambda wc: patch_figure_spec(wc.dataset),
        model=lambda wc: PROJECTED,
    log:
        "results/logs/figures/{dataset}/patch_retrieval_projected.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware figure-patches --projected --spec {params.spec:q} --dataset {wildcards.dataset} "
        "--out {output:q} --models {params.model} -- {input.stores:q} > {log:q} 2>&1"


rule correspondence_figure:
    """Source/target pairs with each encoder's predicted vs true keypoints (task correspondence)."""
    input:
        images=demo_root,
        pairs="results/index/{dataset}/pairs.parquet",
        stores=lambda wc: [dense_store(wc.dataset, m) for m in CFG["models"]],
    output:
        report("results/figures/{dataset}/correspondence.png", caption="../workflow/report/correspondence.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "correspondence", "dataset": "{dataset}"}),
    params:
        spec=lambda wc: spec(dataset=wc.dataset, sections=("correspondence",)),
        models=" ".join(CFG["models"]),
    log:
        "results/logs/figures/{dataset}/correspondence.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware figure-correspondence --spec {params.spec:q} --dataset {wildcards.dataset} --pairs {input.pairs:q} "
        "--out {output:q} --models {params.models} -- {input.stores:q} > {log:q} 2>&1"


rule feature_maps:
    input:
        images=demo_root,
        stores=lambda wc: [store_path(wc.dataset, m, figure_split(wc.dataset)) for m in CFG["models"]],
    output:
        report("results/figures/{dataset}/feature_maps.png", caption="../workflow/report/feature_maps.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "feature maps", "dataset": "{dataset}"}),
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


rule depth_plot:
    """Retrieval AP and logistic accuracy against block depth (`extract.blocks_summary`)."""
    input:
        "results/table.csv",
    output:
        report("results/figures/depth.png", caption="../workflow/report/depth.rst",
               category="Results", labels={"figure": "depth"}),
    log:
        "results/logs/figures/depth.log",
    conda:
        "../envs/report.yaml"
    shell:
        "partaware figure-depth --table {input:q} --out {output:q} > {log:q} 2>&1"


rule part_discovery_figure:
    """The same test images for every encoder, tokens coloured by their k-means cluster (task part_discovery)."""
    input:
        images=demo_root,
        stores=lambda wc: [p for m in CFG["models"] for p in crop_stores(wc.dataset, m)],
    output:
        report("results/figures/{dataset}/part_discovery.png", caption="../workflow/report/part_discovery.rst",
               category="Figures", subcategory="{dataset}",
               labels={"figure": "part discovery", "dataset": "{dataset}"}),
    params:
        spec=lambda wc: spec(dataset=wc.dataset, sections=("part_discovery",)),
        models=" ".join(CFG["models"]),
    log:
        "results/logs/figures/{dataset}/part_discovery.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware figure-part-discovery --spec {params.spec:q} --dataset {wildcards.dataset} "
        "--out {output:q} --models {params.models} -- {input.stores:q} > {log:q} 2>&1"
