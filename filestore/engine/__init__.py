"""Implementation: the file-backed engine (log, index, snapshot, locks); users import ``filestore``."""
