"""The curated catalog, packaged as `ollamalike.registry` (pyproject maps this directory to it):
`catalog.json` is the data, `README.md` its schema, `verify.py` checks it against the Hub.
`ollamalike.hub.catalog` reads and validates it."""
