"""speechbrain_ext.augment."""
