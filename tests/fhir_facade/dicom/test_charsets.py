"""Tests for repairing ISO 2022 JIS X 0208 names a PACS decoded without their escapes."""
import pytest

from fhir_facade.dicom.charsets import repair_jis_group, repair_person_name

H32 = ["ISO 2022 IR 13", "ISO 2022 IR 87"]


@pytest.mark.parametrize("broken, fixed", [
    (";3ED^B@O:", "山田^太郎"),
    ("$d$^$@^$?$m$&", "やまだ^たろう"),   # '^' (0x5E) inside a kana is not a separator
    (";3ED", "山田"),
    ("^B@O:", "^太郎"),
])
def test_jis_x0208_bytes_decode_again(broken, fixed):
    assert repair_jis_group(broken) == fixed


@pytest.mark.parametrize("group", ["abc", "Yamada^Tarou!", "~~", ";3E"])
def test_groups_that_do_not_decode_completely_are_kept(group):
    assert repair_jis_group(group) == group


def test_only_the_mishandled_character_set_combination_is_repaired():
    pn = {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": ";3ED^B@O:", "Phonetic": "$d$^$@^$?$m$&"}
    assert repair_person_name(pn, H32) == {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎",
                                          "Phonetic": "やまだ^たろう"}
    assert repair_person_name(pn, ["ISO 2022 IR 87"]) == pn
    assert repair_person_name(pn, ["ISO_IR 192"]) == pn
    good = {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}
    assert repair_person_name(good, H32) == good
