"""The retrieval task under `data.domains`: the kept training targets follow the mixture exactly."""
import numpy as np
import pytest

from configs import mixture_synthetic
from recjax import tasks


@pytest.mark.slow   # ~15 s on the loaded 2-core machine (a generated world); the pieces are in tests/data/test_domains.py
def test_retrieval_task_keeps_exactly_the_mixture_of_targets(tmp_path):
  c = mixture_synthetic.get_config("quick")
  c.data.world.update(dict(num_users=150, num_items=40, num_topics=4, mean_seq_len=12.0, max_seq_len=40))
  c.data.max_len = 8
  c.model.max_len = 8
  c.data.domains.update(dict(weights=(0.1, 0.2, 0.3, 0.4), targets=200))
  task = tasks.make_task(c, str(tmp_path))
  labels = task.train_ex.labels
  assert int((labels != 0).sum()) == 200
  mix = task.dataset_stats()["domain_mixture"]
  assert mix["targets"] == [20, 40, 60, 80] and mix["field"] == "tab"
  # the kept labels' tabs, recomputed from the events, are the counts the stats report
  from recjax.data import splits
  ev = splits.train_label_events(task.seqs, 8, "last_item")
  tab = task.seqs.extras["tab"][ev[labels != 0]]
  np.testing.assert_array_equal(np.bincount(tab, minlength=4), [20, 40, 60, 80])
  assert len(task.eval_domains["test"]) == len(task.examples["test"])
