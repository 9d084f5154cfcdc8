# Feature extraction: one store per (dataset, model, split), optionally split into shard jobs.


rule extract:
    input:
        index=extract_index,
        checkpoint=checkpoint_input,
    output:
        directory("results/features/{dataset}/{model}/{split}.zarr") if EXT == ".zarr"
        else "results/features/{dataset}/{model}/{split}.h5",
    params:
        spec=lambda wc: spec(dataset=wc.dataset, model=wc.model),
        index=index_arg,
        checkpoint=checkpoint_arg,
    log:
        "results/logs/extract/{dataset}/{model}/{split}.log",
    benchmark:
        "results/benchmarks/extract/{dataset}/{model}/{split}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/partaware.yaml"
    shell:
        "partaware extract --spec {params.spec:q} --threads {threads} "
        "--dataset {wildcards.dataset} --model {wildcards.model} --split {wildcards.split} "
        "{params.index} {params.checkpoint} --out {output:q} > {log:q} 2>&1"


rule extract_shard:
    input:
        index=extract_index,
        checkpoint=checkpoint_input,
    output:
        directory("results/features/{dataset}/{model}/{split}.shard{shard}of{n}.zarr") if EXT == ".zarr"
        else "results/features/{dataset}/{model}/{split}.shard{shard}of{n}.h5",
    params:
        spec=lambda wc: spec(dataset=wc.dataset, model=wc.model),
        index=index_arg,
        checkpoint=checkpoint_arg,
    log:
        "results/logs/extract/{dataset}/{model}/{split}.shard{shard}of{n}.log",
    benchmark:
        "results/benchmarks/extract/{dataset}/{model}/{split}.shard{shard}of{n}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/partaware.yaml"
    shell:
        "partaware extract --spec {params.spec:q} --threads {threads} "
        "--dataset {wildcards.dataset} --model {wildcards.model} --split {wildcards.split} "
        "--shard {wildcards.shard} {params.index} {params.checkpoint} --out {output:q} > {log:q} 2>&1"


rule gather_shards:
    input:
        lambda wc: [shard_path(wc.dataset, wc.model, wc.split, k) for k in range(SHARDS)],
    output:
        "results/features/{dataset}/{model}/{split}.shards.json",
    log:
        "results/logs/gather_shards/{dataset}/{model}/{split}.log",
    conda:
        "../envs/partaware.yaml"
    shell:
        "partaware gather-shards --out {output:q} {input:q} > {log:q} 2>&1"
