"""Every workflow job is a fresh `partaware` process, so what it imports is paid once per job.
Jobs that read stores (evaluate, table, figures) need torch but not the image stack: torchvision
(which pulls in torch._dynamo) and timm cost seconds per job, about a third of a short evaluate
job. Only the jobs that build an encoder or a transform import them."""
import subprocess
import sys

BLOCK = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
         "  if n.split('.')[0] in ('torchvision', 'timm'): raise ModuleNotFoundError(n)\n"
         "sys.meta_path.insert(0, B())\n")


def test_the_cli_kinds_and_tasks_load_without_torchvision_or_timm():
    code = BLOCK + ("from partaware import cli, kinds, tasks\ncli.build_parser()\n"
                    "assert len(kinds.names()) >= 6 and len(tasks.names()) >= 8  # every module imported\n"
                    "import partaware.tasks.common, partaware.store, partaware.intervals, partaware.results\n"
                    "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-3000:]


def test_building_a_transform_still_imports_torchvision():
    code = ("import sys\nfrom partaware.data.images import patch_transform\nassert 'torchvision' not in sys.modules\n"
            "t = patch_transform('eval', size=32)\nprint('torchvision' in sys.modules, type(t).__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "torchvision.transforms.transforms"], out.stderr[-3000:]
