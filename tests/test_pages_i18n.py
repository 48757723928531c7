"""The pages' language follows the browser's Accept-Language, by its q weights."""

from __future__ import annotations

import pytest

from api.pages.i18n import MESSAGES, language


@pytest.mark.parametrize(("header", "expected"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("en;q=0.5, zh-TW", "zh"),
    ("fr-FR, de;q=0.9", "en"),
    ("zh;q=0, en;q=0.1", "en"),
    ("zh;q=bogus, en", "en"),
    (None, "en"),
])
def test_the_language_is_the_most_wanted_of_english_and_chinese(header, expected):
    assert language(header) == expected


def test_every_message_has_both_languages():
    assert [key for key, (en, zh) in MESSAGES.items() if not en or not zh] == []
