"""The host's own ``loupe`` sub-commands beyond the core ones (``bench``, ``demo``, ``bundle``, ``serve``),
registered as internal plugins (``loupe_commands``) exactly like a third party's."""
