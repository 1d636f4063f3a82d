"""The `trtx` commands as a user runs them: the installed console script, real files, and `trtx run`
with real pytest children over the fixture trees here."""
