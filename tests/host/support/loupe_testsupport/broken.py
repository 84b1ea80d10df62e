"""A plugin whose import fails: the host must report it and load the others."""
raise ImportError("this plugin is broken on purpose (missing dependency 'unobtainium')")
