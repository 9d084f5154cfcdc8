"""The README's `module` example (section "Use it from your own workflow"), pointed at this
checkout, so the tests run the very text a user copies."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER = "path/to/partaware/workflow/Snakefile"


def module_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Use it from your own workflow", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "module partaware:" in b)
    assert PLACEHOLDER in block, f"README's module example no longer names {PLACEHOLDER}"
    return block.replace(PLACEHOLDER, str(REPO / "workflow" / "Snakefile"))
