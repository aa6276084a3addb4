"""Generators of committed files (the CRD, docs/reference.md, the chart README, the OLM bundle); never imported
at run time (tests/unit/test_import_graph.py)."""
