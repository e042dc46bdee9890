# Label smoothing & logit squeezing (Shafahi et al., 2019): every table and figure.
#   snakemake --cores all                                   the paper preset
#   snakemake --cores all --configfile params/demo.yaml     the offline demo
# Rules only call the package CLI; the science lives in src/lsqueeze.
from snakemake.utils import min_version

min_version("9.0")  # the metadata format and the `localrule:` keyword the rules use

# The paper preset unless a preset is given: `--configfile` must replace it, not merge into it.
# A preset file that holds no keys (`{}`) is refused, not read as "no preset given".
if not config and workflow.configfiles:
    raise WorkflowError(
        f"{', '.join(map(str, workflow.configfiles))}: the preset is empty: it needs preset, "
        "results and tables (e.g. params/demo.yaml)"
    )
if not config:

    configfile: f"{workflow.basedir}/params/paper.yaml"


report: "workflow/report/workflow.rst"  # the description on the report's front page


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/claims.smk"


rule all:
    default_target: True
    input:
        TABLES,
        FIGURES,
        CLAIMS,
