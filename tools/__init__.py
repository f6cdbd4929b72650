"""Developer tools kept beside the package and never shipped with it (see ``tools/bench``)."""
