"""Run a `partaware` command in-process, as the console script would, for the tests."""
from partaware import cli


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, its one `partaware <command>: error:` line or '', stdout); never a traceback,
    and a failing command prints exactly one error line."""
    capsys.readouterr()
    try:
        cli.main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith(f"partaware {argv[0]}: error:")]
    assert code == 0 or len(lines) == 1, captured.err[-3000:]
    assert "Traceback" not in captured.err, captured.err[-3000:]
    return code, (lines[0] if lines else ""), captured.out
