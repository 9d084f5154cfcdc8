# partaware: part-level probing of frozen vision encoders, as one cached, incremental workflow.
#   snakemake --cores 8 results/table.csv                       (embedded demo config)
#   snakemake --cores 8 --configfile configs/paper.yaml         (the paper's study)
# See README.md and docs/design.md.
from snakemake.utils import min_version

min_version("9.16.3")  # as pyproject.toml: older 9.x fail in rules/common.smk


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/extract.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/figures.smk"
include: "rules/explore.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,
    demo_data,
    part_index,
    pair_table,
    gather_shards,
    table,
    summary_plot,
    contrast_plot,
    depth_plot,


rule all:
    input:
        "results/table.csv",
        "results/table.md",
        figure_targets(),
        explore_targets(),
    default_target: True
