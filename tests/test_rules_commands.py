"""The command Snakemake prints for a job is the whole job: copied from a dry run and run by hand
(no $PARTAWARE_RUNTIME, no Snakemake), it succeeds and writes what the rule promises."""
import os
import re
import shlex
import subprocess

import yaml

from workflow_runner import BIN, REPO, snakemake

CONFIG = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())


def printed_commands(workdir) -> dict[str, list[str]]:
    """rule name -> the shell commands of its jobs, as `snakemake -n -p` prints them."""
    out = snakemake(workdir, CONFIG, "-n", "-p", "--forceall", "results/table.csv").stdout
    commands, rule = {}, None
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif line.startswith("Shell command:") and rule:
            commands.setdefault(rule, []).append(line[len("Shell command:"):].strip())
        elif rule and line.strip().startswith("partaware ") and (i == 0 or not lines[i - 1].startswith("Shell")):
            commands.setdefault(rule, []).append(line.strip())
    return commands


def run_by_hand(command: str, workdir) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTAWARE")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    argv = shlex.split(command.split(" > ")[0])  # without the log redirection
    result = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_printed_commands_run_by_hand(tmp_path, one_torch_thread):
    commands = printed_commands(tmp_path)
    for rule in ("demo_data", "part_index", "extract", "evaluate", "segment"):
        assert rule in commands, f"no printed command for rule {rule}: {sorted(commands)}"
    for command in commands["demo_data"] + commands["part_index"]:
        run_by_hand(command, tmp_path)
    extract = next(c for c in commands["extract"] if "--split all" in c)
    run_by_hand(extract, tmp_path)
    evaluate = next(c for c in commands["evaluate"] if "--task retrieval" in c)
    run_by_hand(evaluate, tmp_path)
    out = shlex.split(evaluate.split(" > ")[0])
    csv = tmp_path / out[out.index("--out") + 1]
    assert csv.is_file() and "AP" in csv.read_text()
    segment = commands["segment"][0]  # the paper protocol: it reads the images themselves
    run_by_hand(segment, tmp_path)
    out = shlex.split(segment.split(" > ")[0])
    assert "mIoU" in (tmp_path / out[out.index("--out") + 1]).read_text()


def test_every_cli_argument_has_help():
    import argparse

    from partaware.cli import build_parser

    missing = []
    for name, sub in build_parser()._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing
