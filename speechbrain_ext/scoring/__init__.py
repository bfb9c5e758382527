"""speechbrain_ext.scoring."""
