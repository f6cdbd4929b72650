"""Implementation: the offline tools (compact, fsck, stats), which take a store for themselves."""
