# Evaluations from the cache: retrieval, probes, segmentation. They never run an encoder.

# Each task's spec holds its config section and `stats`, the bootstrap's settings (its intervals
# and per-image sidecar `<task>_stats.npz`); see partaware.tasks and partaware.specs.


rule evaluate:
    input:
        eval_stores,
    output:
        "results/evals/{dataset}/{model}/{task}.csv",
    params:
        spec=lambda wc: task_spec(wc.dataset, wc.model, wc.task),
    log:
        "results/logs/evaluate/{dataset}/{model}/{task}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{model}/{task}.tsv"
    threads: 1  # small problems: more threads only oversubscribe the cores other jobs use
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware evaluate --spec {params.spec:q} --threads {threads} "
        "--task {wildcards.task} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--out {output:q} {input:q} > {log:q} 2>&1"


rule segment:
    """The paper's segmentation protocol: heads trained online on the frozen encoder from augmented
    views, slide inference at full resolution. Its training state (results/state/...) survives a
    kill and is resumed from on the rerun."""
    input:
        data=segment_inputs,
        checkpoint=checkpoint_input,
    output:
        csv="results/evals/{dataset}/{model}/segmentation_paper.csv",
        per_class="results/evals/{dataset}/{model}/segmentation_paper_per_class.csv",
    params:
        spec=lambda wc: task_spec(wc.dataset, wc.model, "segmentation"),
        checkpoint=checkpoint_arg,
        state="results/state/segment/{dataset}/{model}.pt",
    log:
        "results/logs/segment/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/segment/{dataset}/{model}.tsv"
    threads: GPU_THREADS
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=2880,
    conda:
        "../envs/torch.yaml"
    shell:
        "partaware segment --spec {params.spec:q} --threads {threads} --dataset {wildcards.dataset} "
        "--model {wildcards.model} {params.checkpoint} --state {params.state:q} --out {output.csv:q} > {log:q} 2>&1"
