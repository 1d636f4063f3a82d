collect_ignore = ["fixture_tree"]   # a test tree that trtx runs, not part of this suite
