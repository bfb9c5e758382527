"""speechbrain_ext.data."""
