"""Structured output, shared by the backends that honour it (``mock``, ``mlx``): not a plugin.

- :mod:`.requested`: what a chat request asks for — ``response_format`` (``json_schema``,
  ``json_object``) or a forced tool call (``tool_choice`` ``required`` or a named function) —
  as one :class:`~.requested.Constraint`, and its llguidance grammar, compiled once per schema;
  a schema the engine cannot compile is 422 ``request_invalid`` naming the problem, never
  silently unconstrained.
- :mod:`.instance`: a deterministic, schema-valid instance of a grammar (what the ``mock``
  backend answers), walked with llguidance over a byte-level vocabulary.

llguidance (a dependency-free grammar engine used by vLLM, SGLang and llama.cpp) is imported
only when a request asks for structure.
"""
