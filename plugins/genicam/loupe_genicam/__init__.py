"""loupe-genicam: GenICam cameras through GenTL producers (harvesters), and ``loupe cameras``."""
