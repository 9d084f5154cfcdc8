# The explorer pages (partaware explore): results/explore/<dataset>.html, one per dataset with a
# dense store; self-contained HTML, shown in the report's "Explore" category.
from partaware.explore import plan as explore_plan


def explore_targets():
    return [str(explore_plan.page_path(d)) for d in explore_plan.planned(CFG)]


def explore_inputs(wildcards):
    """The dense stores of every model, the patch stores (part datasets) and the tables naming their images."""
    src = explore_plan.require(CFG, wildcards.dataset)  # a dataset without a dense store: one config error
    out = [store_path(src.dataset, m, src.dense) for m in CFG["models"]]
    if src.kind == "pairs":
        out.append(f"results/index/{src.dataset}/pairs.parquet")
    if src.parts:
        out += [store_path(src.dataset, m, src.parts) for m in CFG["models"]]
        out.append(f"results/index/{src.dataset}/{src.parts}.parquet")
    return out


def explore_spec(dataset):
    """The dataset's spec with every model, `explore` and `correspondence` (a change rebuilds the page)."""
    out = json.loads(spec(dataset=dataset, sections=("explore", "correspondence")))
    out["models"] = dict(CFG["models"])
    return json.dumps(out, sort_keys=True)


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
