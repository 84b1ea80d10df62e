"""loupe-hmi: the operator screen of a station (``hmi: {listen: HOST:PORT}`` / ``loupe serve --hmi``)."""
