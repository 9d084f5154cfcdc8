# Evaluations from the cache: retrieval, probes, segmentation. They never run an encoder.

TASK_SECTIONS = {"retrieval": ("retrieval",), "linear": ("linear",), "attentive": ("attentive",),
                 "logistic": ("logistic",), "segmentation": ("segmentation",)}


rule evaluate:
    input:
        eval_stores,
    output:
        "results/evals/{dataset}/{model}/{task}.csv",
    params:
        spec=lambda wc: spec(dataset=wc.dataset, model=wc.model, sections=TASK_SECTIONS[wc.task]),
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
