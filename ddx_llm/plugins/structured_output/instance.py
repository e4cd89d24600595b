"""A deterministic, schema-valid instance of a grammar, for the ``mock`` backend.

The grammar is walked with llguidance over a byte-level vocabulary (256 one-byte tokens and an
end token): at every step llguidance says which bytes keep the text valid, and a fixed order of
preference picks one — close a string, an object or an array as soon as the schema allows,
then ``0`` for numbers, then lower-case letters — until the text is complete.  The same schema
always gives the same instance: short, valid, and easy to assert on in a client's tests.
"""

from __future__ import annotations

import functools

END = 256
MAX_BYTES = 16_384
OUTSIDE_STRINGS = b'}]",:1tfn-023456789.[{' + b"abcdefghijklmnopqrstuvwxyz"
INSIDE_STRINGS = b'"' + b"abcdefghijklmnopqrstuvwxyz0123456789 -_"


class ByteVocabulary:
    """A tokenizer whose tokens are the 256 bytes (and an end token), for llguidance."""

    eos_token_id = END
    bos_token_id = None
    tokens = [bytes([value]) for value in range(256)] + [b""]
    special_token_ids = [END]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


@functools.cache
def _tokenizer():
    import llguidance

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(ByteVocabulary()), slices=[])


def _order(preferred: bytes) -> list[int]:
    return [*preferred, *(value for value in range(256) if value not in preferred)]


ORDERS = {False: _order(OUTSIDE_STRINGS), True: _order(INSIDE_STRINGS)}


def instance(grammar: str) -> str:
    """The instance of ``grammar`` (see the module docstring).  Raises ValueError when the walk
    finds no way on or exceeds ``MAX_BYTES`` (a schema whose smallest instance is that large)."""
    import llguidance

    matcher = llguidance.LLMatcher(_tokenizer(), grammar)
    if matcher.is_error():
        raise ValueError(matcher.get_error())
    text = bytearray()
    in_string = escaped = False
    while not matcher.is_accepting():
        if len(text) >= MAX_BYTES:
            raise ValueError(f"no instance shorter than {MAX_BYTES} bytes: {text[:80]!r}")
        mask = matcher.compute_bitmask()
        pick = next((b for b in ORDERS[in_string] if mask[b // 8] >> (b % 8) & 1), None)
        if pick is None or not matcher.consume_token(pick):
            raise ValueError(matcher.get_error() or "the grammar allows no way on")
        text.append(pick)
        if in_string and not escaped and pick == ord('"'):
            in_string = False
        elif not in_string and pick == ord('"'):
            in_string = True
        escaped = in_string and not escaped and pick == ord("\\")
    return text.decode("utf-8")
