"""Built-in plugins.  Each is one module or one package named after it, written only against the
public hook API (``plugins/README.md``): ``request_id``, ``cors``, ``metrics``, ``auth``,
``mock``, ``mlx``, ``omni``.  ``mlx_models`` is not a plugin: it is the model-source library the
two MLX backends share (registry entry → folder, the bundled model, GGUF conversion, memory)."""
