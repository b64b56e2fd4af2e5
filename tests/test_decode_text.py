"""What a streamed row hands out after each token (``Row.take_text``): settled text at
once, so the first chunk is not delayed by a token that later tokens cannot change."""

from __future__ import annotations

from blackbox.engine.decode import Row


def _row(text: str, hold_spaces: bool = True, stops: list[str] | None = None) -> Row:
    return Row(ids=[1], limit=8, text=text, hold_spaces=hold_spaces, stops=stops or [])


def test_a_newline_goes_out_at_once() -> None:
    # SmolLM2 answers many prompts with "\n\n" first: holding it back cost a decode step
    assert _row("\n\n").take_text() == "\n\n"
    assert _row(" it is good .\n", hold_spaces=False).take_text() == " it is good .\n"


def test_a_trailing_space_waits_only_where_the_tokenizer_cleans_up_spaces() -> None:
    held = _row(" it is")
    held.text = " it is "
    assert held.take_text() == " it is"
    held.text = " it is ."
    assert held.take_text() == " ."
    assert _row(" it is ", hold_spaces=False).take_text() == " it is "


def test_partial_characters_and_stop_prefixes_still_wait() -> None:
    assert _row("caf\ufffd", hold_spaces=False).take_text() == "caf"
    assert _row("the end. STO", hold_spaces=False, stops=["STOP"]).take_text() == "the end. "
