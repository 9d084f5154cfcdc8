"""The before/after table comparison (tests/table_compare.py) flags any change of meaning."""
import pandas as pd

from table_compare import differences, legacy_split

ROW = {"dataset": "d", "task": "linear", "model": "m", "feature": "cls", "label_set": "part",
       "metric": "top1_best_epoch", "seed": 0, "value": 50.0}


def test_the_old_free_text_splits_into_protocol_and_notes():
    assert legacy_split("paper (best test epoch); BN over groups of 128") == \
        ("paper", "best test epoch; BN over groups of 128")
    assert legacy_split("cached: one fixed view per image; 1x1 conv head") == ("cached", "one fixed view per image; 1x1 conv head")
    assert legacy_split("query excluded") == ("variant", "query excluded")


def test_a_changed_value_or_protocol_is_a_difference():
    before = pd.DataFrame([{**ROW, "protocol": "paper (best test epoch)"}])
    after = pd.DataFrame([{**ROW, "protocol": "paper", "notes": "best test epoch"}])
    assert differences(before, after) == []
    assert differences(before, after.assign(value=50.1)) != []
    assert differences(before, after.assign(protocol="variant")) != []
