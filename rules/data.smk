# Datasets: generate the demo data, build part indexes and pair tables, fetch checkpoints.


rule demo_data:
    output:
        directory("results/demo/{dataset}"),
    params:
        spec=lambda wc: narrow_spec(dataset=wc.dataset, keys=DATA_KEYS),
    log:
        "results/logs/demo_data/{dataset}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "partaware demo-data --spec {params.spec:q} --dataset {wildcards.dataset} --out {output:q} > {log:q} 2>&1"


rule part_index:
    input:
        dataset_inputs,
    output:
        "results/index/{dataset}/all.parquet",
        "results/index/{dataset}/train.parquet",
        "results/index/{dataset}/test.parquet",
    params:
        spec=lambda wc: narrow_spec(dataset=wc.dataset, keys=INDEX_KEYS, sections=("data",)),
    log:
        "results/logs/part_index/{dataset}.log",
    benchmark:
        "results/benchmarks/part_index/{dataset}.tsv"
    conda:
        "../envs/report.yaml"
    shell:
        "partaware index --spec {params.spec:q} --dataset {wildcards.dataset} "
        "--outdir results/index/{wildcards.dataset} > {log:q} 2>&1"


rule pair_table:
    """The keypoint pairs of a dataset with them (task correspondence): drawn (CUB) or listed (SPair)."""
    input:
        pair_inputs,
    output:
        pairs="results/index/{dataset}/pairs.parquet",
        details="results/index/{dataset}/pair_details.parquet",  # what the reporting splits read
    params:
        spec=lambda wc: pairs_spec(wc.dataset),
    log:
        "results/logs/pair_table/{dataset}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "partaware pairs --spec {params.spec:q} --dataset {wildcards.dataset} --out {output.pairs:q} > {log:q} 2>&1"


rule fetch_checkpoint:
    output:
        "resources/checkpoints/{model}.pth",
    params:
        spec=lambda wc: checkpoint_spec(wc.model),
    log:
        "results/logs/fetch_checkpoint/{model}.log",
    resources:
        runtime=240,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware fetch --spec {params.spec:q} --model {wildcards.model} --out {output:q} > {log:q} 2>&1"
