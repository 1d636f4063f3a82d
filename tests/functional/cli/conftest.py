import os

collect_ignore = ["fixture_tree"]   # a test tree that trtx runs, not part of this suite
# The trtx runs of these tests must not write into the step summary of the CI that runs them.
os.environ.pop("GITHUB_STEP_SUMMARY", None)
