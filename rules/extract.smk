# Feature extraction: one store per (dataset, model, split), or per shard of it when
# `extract.shards` > 1 (`{shard}` is then `.shard<k>of<n>`, else empty).


rule extract:
    input:
        data=extract_inputs,
        checkpoint=checkpoint_input,
    output:
        directory("results/features/{dataset}/{model}/{split}{shard}.zarr") if EXT == ".zarr"
        else "results/features/{dataset}/{model}/{split}{shard}.h5",
    params:
        spec=lambda wc: extract_spec(wc.dataset, wc.model, wc.split),
        index=index_arg,
        checkpoint=checkpoint_arg,
        shard=shard_number,
    log:
        "results/logs/extract/{dataset}/{model}/{split}{shard}.log",
    benchmark:
        "results/benchmarks/extract/{dataset}/{model}/{split}{shard}.tsv"
    threads: GPU_THREADS
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware extract --spec {params.spec:q} --threads {threads} "
        "--dataset {wildcards.dataset} --model {wildcards.model} --split {wildcards.split} "
        "--shard {params.shard} {params.index} {params.checkpoint} --out {output:q} > {log:q} 2>&1"


rule gather_shards:
    input:
        lambda wc: [shard_path(wc.dataset, wc.model, wc.split, k) for k in range(SHARDS)],
    output:
        "results/features/{dataset}/{model}/{split}.shards.json",
    log:
        "results/logs/gather_shards/{dataset}/{model}/{split}.log",
    conda:
        "../envs/report.yaml"
    shell:
        "partaware gather-shards --out {output:q} {input:q} > {log:q} 2>&1"
