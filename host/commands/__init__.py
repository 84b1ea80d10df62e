"""The host's own ``loupe`` sub-commands, registered as internal plugins (``loupe_commands``)."""
