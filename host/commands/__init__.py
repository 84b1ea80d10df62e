"""The host's own sub-commands beyond the core ones (``bench``, ``demo``, ``bundle``),
registered as an internal plugin (``host.commands.plugin``) exactly like a third party's."""
