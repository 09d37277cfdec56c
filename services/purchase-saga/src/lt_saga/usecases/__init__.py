"""The purchase saga's use cases: starting and reading purchases, running sagas (runner, steps and the
persisted transitions) and applying quota's replies."""
