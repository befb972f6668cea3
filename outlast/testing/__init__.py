"""Test doubles and fault injection: never armed on the production path.

``store_faults`` wraps a real store in tiers that fail on purpose (the chaos suite's store); it is
test infrastructure only, and nothing outside the tests imports it.

``faults`` holds the emulator's kill points inside a commit (armed only from the leg subprocess's
command line, never from the environment); ``offline_model`` is the scripted model that tests,
benchmarks and the offline demo pass in explicitly; ``replay`` rebuilds a context from a journal.
Only the local emulator (``outlast.emulator``, ``outlast.leg_main``) imports this package from
``outlast``; the import-linter contracts in pyproject.toml keep it so.
"""
