"""The stop-string matcher on synthetic token texts (no model needed)."""

from __future__ import annotations

import pytest

from ddx_llm.stop_strings import StopMatcher, held_suffix


def run(pieces: list[str], stops: list[str]) -> tuple[list[str], bool, str]:
    """Feed ``pieces``; return what was released piece by piece, whether a stop fired, and what
    a final flush releases."""
    matcher = StopMatcher(stops)
    released = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        released.append(text)
        if stopped:
            return released, True, ""
    return released, False, matcher.flush()


def test_without_stops_every_piece_passes_through():
    assert run(["The", " capital", " is"], []) == (["The", " capital", " is"], False, "")


def test_stop_split_across_pieces_is_held_back_and_never_leaks():
    released, stopped, _ = run(["The capital", " of", " Fr", "ance is"], [" of France"])
    assert stopped
    assert released == ["The capital", "", "", ""]
    assert "".join(released) == "The capital"


def test_text_after_a_stop_in_the_same_piece_is_dropped():
    released, stopped, _ = run(["Hello", " wor", "ld.\nUser: hi"], ["\nUser:"])
    assert stopped
    assert "".join(released) == "Hello world."


def test_a_false_start_is_released_once_it_cannot_match():
    released, stopped, flushed = run(["a ST", "OR", "Y"], ["STOP"])
    assert not stopped
    assert released == ["a ", "STOR", "Y"]
    assert flushed == ""


def test_held_prefix_is_flushed_when_the_generation_ends_otherwise():
    released, stopped, flushed = run(["The end", " ST"], ["STOP"])
    assert not stopped
    assert released == ["The end", " "]
    assert flushed == "ST"


def test_earliest_of_several_stops_wins():
    released, stopped, _ = run(["one, two. three"], [".", ","])
    assert stopped
    assert released == ["one"]


def test_stop_at_the_very_start_releases_nothing():
    assert run(["###", " rest"], ["###"]) == ([""], True, "")


def test_repeated_prefix_characters_keep_only_a_possible_start():
    # "aab" contains the stop "ab" starting at index 1; before "b" arrives only one "a" is held.
    released, stopped, _ = run(["a", "a", "b"], ["ab"])
    assert stopped
    assert "".join(released) == "a"


def test_multibyte_text_is_matched_by_characters():
    released, stopped, _ = run(["Grüß", "e ", "\u2014", " Ende"], ["\u2014 Ende"])
    assert stopped
    assert "".join(released) == "Grüße "


@pytest.mark.parametrize(
    ("text", "needles", "held"),
    [
        ("abc", ["cd"], 1),
        ("abc", ["bcd"], 2),
        ("abc", ["abc"], 0),  # a full match is not a prefix to hold: the caller finds it
        ("abc", ["x"], 0),
        ("", ["ab"], 0),
        ("xab", ["abc", "b"], 2),
    ],
)
def test_held_suffix(text, needles, held):
    assert held_suffix(text, needles) == held
