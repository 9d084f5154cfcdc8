"""A toy evaluation task, registered from outside the package ($PARTAWARE_TASKS=toy_task): the
whole of what adding a task takes (tests/test_tasks_registry.py)."""
from partaware.results import result_row
from partaware.tasks import Task, register


@register
class RowCount(Task):
    name = "toy_rows"
    section = "toy_rows"
    role = "gallery"
    protocol = "exact"
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"scale": {"type": "number", "default": 1.0},
                             "verbose": {"type": "boolean", "default": False}}}
    runtime_keys = ("verbose",)

    def rows(self, cfg, ctx, stores):
        (store,) = stores
        n = int(store.read("valid").astype(bool).sum())
        return [result_row(ctx, self.name, "cls", "valid_rows", n * cfg[self.section]["scale"], n,
                           protocol=self.protocol, notes="valid rows of the gallery store")], []
