"""speechbrain_ext.lobes."""
