"""The repository's tests, a package so that every tier imports its helpers as tests.helpers.* (pytest
puts the repository root on the import path for it). tests/integration is no part of the package:
`trtx run` runs it as a pytest root of its own. README's "Tests" section describes the tiers."""
