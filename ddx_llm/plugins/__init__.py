"""Built-in plugins.  Each module is one plugin, written only against the public hook API."""
