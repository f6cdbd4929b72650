"""Programs built on filestore, run by the tests (``examples.runner``: a webhook flow runner)."""
