"""The lists: what to run and what to waive on this system. testline (the entry grammar test-db
lines and waive lines share), testdb (test-db YAML: contexts, blocks, conditions), waives (the
waive file, read and edited losslessly), sysinfo (the detected system keys and platform names),
collect (which tests exist) and selection (a context's entries for this system: explained,
sharded, planned with their timeouts and waives)."""
