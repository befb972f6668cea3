"""``outlast ui``: a local web console of runs, legs, steps, tokens and the restart tax.

It reads through ``statestore``'s and ``outlast``'s public names and acts through ``App``
methods; the core runtime never imports it (an import-linter contract keeps it so).
"""
