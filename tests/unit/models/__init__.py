"""The bundled model, tiny-arith, as the harness relies on it."""
