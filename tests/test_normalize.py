from llava.eval.normalize import exact_match, normalize_answer


def test_normalisation_of_short_answers():
    assert normalize_answer("Two.") == "2"
    assert normalize_answer("The top left") == "top left"
    assert normalize_answer("  Yes!\n") == "yes"
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer("red, circle") == "red circle"


def test_exact_match_against_any_answer():
    assert exact_match("two", ["2", "two"])
    assert exact_match("Grey.", ["gray", "grey"])
    assert not exact_match("top right", ["top left"])
    assert not exact_match("red circle", ["red"])
