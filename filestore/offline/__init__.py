"""Implementation: the offline tools (compact, fsck, stats); users import them from ``filestore``.

``compact`` and ``fsck`` take the store for themselves; ``stats`` reads it without any lock.
"""
