"""The long-history synthetic world (issue 18, papers.md §2): presets for `data.world`.

Not a runnable config itself: `configs/long_sequences_hstu_rank.py` uses these. The world is the
KuaiRand-format generator (recjax/data/synthetic.py) with long histories and planted long-range
structure (`WorldConfig.dormant_*`, generator version 3): per user one dormant topic, seen in the
first 30% of the history (10% of its events), absent for the next 60% (thousands of events at
these lengths), back in the last 10% (5% of its events); the feedback on it follows the user's
old affinity for it, which only the early events' feedback reveals. Interests also drift slowly
(linearly from the start mixture to the end mixture over the whole history, `interest_drift`).
How much signal lies beyond the newest 256 events is written with the world
(`world_signal.json`, recjax/data/synthetic_signal.py): oracle NE of a Bayes predictor reading
the newest 256 events vs the full history.

Size and signal of WORLD (measured with build_world + synthetic_signal.long_range_signal, nice'd
on the loaded 2-core box: 4 s to build, 18 s for the signal, 1.65 GB peak RSS): 1,007,030 events
(1,001,530 in the standard logs), per-user standard history min 1,015 / median 3,092 / max 16,057;
35,514 planted dormant-topic events. Expected NE (mean of the 8 feedbacks) on the planted events
past position 256: oracle 0.8521, full history 0.8549, newest 256 events 0.8635, no history 0.9642;
over all 935,994 events past position 256: 0.85042 / 0.85050 / 0.85075 (the planted events are 3.5%
of the world, so the gain from the full history is concentrated on them).
"""

# 256 users, histories 1k-16k (mean ~4k): ~1M events.
WORLD = dict(seed=0, variant="long", num_users=256, num_items=2000, num_topics=20,
             mean_seq_len=4096.0, seq_len_sigma=0.7, min_seq_len=1024, max_seq_len=16384,
             interest_drift=0.5, dormant_early_rate=0.1, dormant_return_rate=0.05,
             dormant_early_until=0.3, dormant_return_from=0.9, dormant_affinity_sigma=1.5)

# The quick-test world: the same structure at 32 users and histories of 300-1,200 events.
QUICK_WORLD = dict(WORLD, num_users=32, num_items=200, num_topics=8, mean_seq_len=600.0,
                   seq_len_sigma=0.3, min_seq_len=300, max_seq_len=1200)
