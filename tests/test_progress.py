"""Progress lines: no rate or ETA before anything is done (never `ETA 178000000000 s`), then both."""
import logging

from partaware.progress import Progress, progress_line


def test_progress_line_before_and_after_work():
    assert progress_line(0, 178, 2.0, "rows") == "0/178 rows"
    assert progress_line(89, 178, 10.0, "rows") == "89/178 rows, 8.9 rows/s, ETA 10 s"


def test_progress_logs_at_its_pace_and_at_the_end(caplog):
    log = logging.getLogger("partaware.test")
    progress = Progress(log, total=3, unit="epochs", every=3600)
    with caplog.at_level(logging.INFO, logger="partaware.test"):
        assert not progress.due(1)
        progress.update(1, "loss 1.0")  # not due: nothing logged
        progress.update(3, "loss 0.5")  # the last step always logs
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["3/3 epochs"]
    assert caplog.records[0].getMessage().endswith("loss 0.5")
