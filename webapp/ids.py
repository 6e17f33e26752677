"""Database ids in URLs and bodies: positive integers that fit a 64-bit signed column. A larger
number can name no row, and SQLite refuses to even compare with it."""
from werkzeug.routing import IntegerConverter

MAX_ID = 2 ** 63 - 1


def is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


class IdConverter(IntegerConverter):
    """``<id:run_id>``: like ``<int:...>`` but only 1 to MAX_ID; anything else is a 404."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_ID)
