"""trtx command-line harness."""
