"""An example third-party Loupe plugin (copy this folder to start your own)."""
