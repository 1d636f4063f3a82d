"""Running a selected test list under pytest and reporting it. runner (pytest child processes, the
watchdog, progress), pytest_plugin (inside each child: timeouts, waives, results as tests end),
results (results.jsonl, JUnit, the results folder) and report (rich, Markdown and JSON renderings,
merged shards, baselines)."""
