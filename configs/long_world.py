"""The long-history synthetic world (issue 18, papers.md §2): presets for `data.world`.

Not a runnable config itself: `configs/long_sequences_hstu_rank.py` and the study's arms
(`configs/long_sequences.py`) use these. The world is the
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

# The CPU-sized world of the study (configs/long_sequences.py `cpu`): the same structure and rates at
# 384 users, histories 512-4,096 (mean ~1.2k). The dormant gap (30%-90% of a history) is still
# ~300-2,400 events, so the early phase lies far beyond the newest 256 events when the topic returns.
# Measured as WORLD (build_world + synthetic_signal, nice'd on the loaded 2-core box: 0.6 s to build,
# 3.5 s for the signal, 0.8 GB peak RSS): 459,995 events (457,531 in the standard logs), per-user
# standard history min 504 / median 1,001 / mean 1,192 / max 4,077; 16,205 planted events (2,339 of
# the return phase). Expected NE (mean of the 8 feedbacks), oracle / full history / newest 256 /
# no history: on the 7,422 planted events past position 256 (both phases) 0.8497 / 0.8547 / 0.8716 /
# 0.9658; on the 2,339 return-phase events 0.8469 / 0.8516 / 0.8991 / 0.9637; on the 1,233
# return-phase events among the test split's candidates (each user's last 64 events: what the
# ranking task's `planted.` metrics cover) 0.8424 / 0.8480 / 0.8920 / 0.9605; over all 359,227
# events past position 256: 0.85042 / 0.85052 / 0.85085. (WORLD for comparison, same measure:
# return phase 0.8526 / 0.8540 / 0.8817 / 0.9667 on 4,968 events; test-split return phase 0.8591 /
# 0.8613 / 0.8779 / 0.9724 on 796.) The newest 256 events know less here than in WORLD because the
# return phase (the last 10% of a history) is shorter: fewer returned events precede a target inside
# the window, and no early one does in either world.
# What a model can learn from (scripts/long_world_split_signal.py, results/long_sequences/summary/
# world_split_signal_cpu.json): under the study's split only 452 of the 98,304 training candidates are
# return-phase events (the return phase is the last 10% and the last 128 events are valid + test), so no
# arm of the study learned the planted signal (README, the long-sequence study). Starting the return
# phase earlier gives 8-19x more of them but shrinks the full-vs-newest-256 gap on the test ones from
# 0.044 to 0.004-0.010 NE. hstu_newest256 trained on the variant with the return phase from 60% at rate 0.1
# reaches planted NE 0.895 (1.01-1.02 on this world; results/long_sequences/world_variants/): the signal
# is learned once training holds it.
CPU_WORLD = dict(WORLD, num_users=384, mean_seq_len=1200.0, seq_len_sigma=0.6, min_seq_len=512,
                 max_seq_len=4096)

# The CPU world with its planted signal in the training split (issue 18's verdict 1). In CPU_WORLD
# only 452 of the study's 98,304 training candidates are return-phase events; starting the return
# earlier adds training examples but lets return events inside the newest 256 reveal the same old
# affinity, which closes the full-vs-newest gap. Here each user has five dormant topics (the five of
# least base interest, each its own old affinity; `dormant_topics`), 40% of the events of the first
# 30% of a history are on one of them, and 8% of the events from 60% on: each topic returns five
# times more sparsely than one would, so the newest 256 events reveal less of the affinity a
# returned event follows. Tab noise is lower than CPU_WORLD's (2-20% uniformly random items instead
# of 5-80%): a random item on a dormant topic carries the base world's low affinity, and with ten
# dormant topics at CPU_WORLD's noise only 25% of the training candidates on a dormant topic were
# planted (summary/world_split_signal_cpu_multi_first_version.json), so a model had little to tell
# which dormant-topic events follow the old affinity (an hstu_newest256 run on that first version,
# e8, one seed, read planted NE 1.041). Here 63% are. Counted with
# scripts/long_world_split_signal.py --preset cpu_multi (the study's split, no training): 6,242
# training / 1,942 validation / 1,932 test candidates are return-phase events; on the test ones the
# Bayes NE is 0.8438 oracle / 0.8503 full history / 0.8856 newest 256 / 0.9645 no history
# (CPU_WORLD: 452 / 651 / 1,233 and 0.8424 / 0.8480 / 0.8920 / 0.9605). Lengths, users and items
# are CPU_WORLD's, so every arm costs what it costs there.
CPU_MULTI_WORLD = dict(CPU_WORLD, tab_noise=(0.02, 0.05, 0.1, 0.2), dormant_topics=5, dormant_early_rate=0.4,
                       dormant_early_until=0.3, dormant_return_from=0.6, dormant_return_rate=0.08)
