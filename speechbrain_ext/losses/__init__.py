"""speechbrain_ext.losses."""
