"""Benchmark filestore against what a user would pick instead, and against the floors (issue 7).

Run from the repository root (``pip install -e '.[bench]'`` adds diskcache and matplotlib)::

    python tools/bench --profile --plot docs/benchmarks.png --json docs/benchmarks.json

prints a table and writes JSON (``--json``, default ``bench-results/latest.json``).
``--quick`` is a small smoke run; ``--only`` picks contenders of the main table
by name or glob; ``--sections`` picks sections; ``--big`` adds 1M sessions to
the scale and latency sections; ``--profile`` adds a cProfile of filestore's calls;
``--report FILE`` prints (and ``--plot``s) the JSON of an earlier run.

Sections:

- ``steps``: single steps (decode, pread, dict, fdatasync) as p50 microseconds;
- ``decode``: ``SessionData.from_cbor``/``from_json``/``to_cbor``/``to_json``
  against ``cbor2.loads``/``json.loads``/``cbor2.dumps``/``json.dumps`` of the
  same bytes or object, as ratios (issue 15's targets);
- ``writepath``: CPU time per update of filestore with ``durability="none"``
  and of the no-sync floor, less the system calls each makes and
  ``to_cbor``: the Python per write (issue 15's target: at most 10 µs);
- ``main``: per payload, every contender loads N sessions, runs the mixed
  phase (50% get, 30% update, 10% find_by_user, 5% create, 5% remove),
  reopens (timed up to the first read), then disk bytes against live bytes
  (the CBOR of the live sessions), before and after compaction if it has one;
  one contender after another;
- ``interleaved``: the main table again, every contender open at once and
  each call of the plans sent to all of them in a turn shuffled per call
  (seeded), so they share the machine's noise; throughput is calls over the
  sum of the contender's own call times;
- ``concurrency``: filestore group commit with 1, 2, 4, 8 threads, fsync with
  1 and 4 threads, SQLite FULL with 1, 4 and 8 threads, group commit and
  SQLite FULL again on updates alone, and 2 and 4 processes on one store;
- ``scale``: reopen with a fresh snapshot and by full replay, and Python heap
  per session, at 10k and 100k sessions (and 1M with ``--big``), in the
  process that built the store and in fresh ones (``fresh_*``; issue 15);
- ``latency``: latency vs size (issue 15, part 5): a long stream of updates
  crossing several snapshot intervals, timed call by call on stores of 10k
  and 100k sessions (and 1M with ``--big``), with durability none and fsync;
  p50/p99/p99.9/max per size and the largest size's p99.9 over the
  smallest's (target <= 1.5).

JSON (``schema`` 1): ``machine``, ``config``, ``steps``, ``decode`` (``pairs``:
model call -> ``against``, ``model_us``, ``raw_us``, ``ratio``,
``ratio_quartiles``, ``ratio_of_best``, ``target``, ``holds``), ``write_path``
(``us_per_write``: filestore-none, floor-append-nosync, their system calls and
to_cbor; ``python_us``, ``floor_python_us``, ``ratio``, ``target``, ``holds``), ``main`` (payload ->
``contenders`` name -> ``load``/``mixed`` phases with ``ops_per_s`` and
``latency_us`` per kind {n, p50, p99, mean, max}, ``reopen_ms``,
``disk_bytes``, ``live_bytes``, ``disk_over_live``, ``compacted``,
``verified``, ``rounds_ops_per_s``; ``order``; and ``skipped`` name -> reason),
``main_interleaved`` (the same shape), ``concurrency`` (``threads`` and
``processes`` lists; thread runs name their ``workload``, mixed or updates,
and filestore's also give ``fdatasyncs``, ``writes_per_fdatasync``,
``sync_mean_us``, ``sync_cycle_us`` and ``sync_busy_fraction``), ``scale``
(list), ``latency`` (``rows``: sessions, durability, ``p50_us`` ... ``max_us``,
``max_without_full_gc_us``, ``full_gcs``, medians of ``rounds``; ``ratios``),
``profile``, ``ratios``, ``ratios_group`` (issue 15's group-commit
targets) and ``ratios_info`` (lists of {id, what, target, measured, holds}),
``ratios_by_order`` ({id, what, sequential, interleaved}),
``ratios_group_by_threads`` ({workload, threads, ratio, writes_per_fdatasync,
sync_busy_fraction}: filestore-group over sqlite-full at every thread count), ``notes``.

Main and concurrency runs are repeated ``--rounds`` times (default 5), the
contenders taking turns; each reports its median round by mixed throughput,
with every round's throughput in ``rounds_ops_per_s``. Timings are noisy on
shared machines: compare ratios from one run, never absolute times across
runs. Nothing here asserts a timing.

Modules: ``cli`` (options, entry point), ``run`` (the sections in order, the
main table, the JSON document), ``machine`` (what it ran on), ``workload``
(sessions, plans, the timed loop), ``contenders`` (the base class every
contender shares, and filestore), ``alternatives`` (SQLite with the contract's
checks and lean, diskcache, a file per session), ``floors``, ``registry``
(every contender by name), ``sections`` (steps, threads, processes, scale,
profile), ``decode`` (the codecs against the raw encoders), ``writepath`` (the
Python per write), ``latency`` (latency vs size), ``syncs`` (sync
occupancy, group-commit ratios), ``orders`` (the two main tables side by
side), ``report`` (ratios and text), ``text`` and ``plot``.
"""
