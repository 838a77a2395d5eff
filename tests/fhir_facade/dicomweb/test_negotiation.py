"""Tests for DICOMweb content negotiation (fhir_facade.dicomweb.negotiation, PS3.18 Section 8.7)."""
import pytest

from fhir_facade.dicomweb.negotiation import NotAcceptable, choices, choose, media_ranges, parse_media_type

OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.mark.parametrize("accept", [
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
    "multipart/related;type=application/octet-stream;transfer-syntax=*",
])
def test_field_case_dw3_quoting_does_not_matter(accept):
    choice = choose("frames", accept, frames=1)
    assert choice.upstream_accept == OCTET_ANY
    assert choice.multipart and not choice.unwrap


@pytest.mark.parametrize("kind, accept, upstream, unwrap", [
    # Instances in the default syntax (Explicit VR Little Endian) are asked for as stored and
    # transcoded by the facade (fhir_facade.dicomweb.transcoded).
    ("instance", "application/dicom", DICOM_ANY, True),
    ("instance", None, DICOM_ANY, False),
    ("instance", "*/*", DICOM_ANY, False),
    ("study", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.70',
     'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.70', False),
    ("series", 'multipart/related; type="*/*"', DICOM_ANY, False),
    ("frames", 'multipart/related; type="*/*"', OCTET_ANY, False),
    ("frames", "application/octet-stream", 'multipart/related; type="application/octet-stream"', True),
    # No transfer-syntax: image/jpeg means JPEG Baseline (PS3.18 Table 8.7.3-5), asked for by name.
    ("frames", 'multipart/related; type="image/jpeg"',
     'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50', False),
    ("frames", "image/jp2", 'multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90', True),
    # As stored: the PACS is asked for the stored pixel data, the type is checked on the answer.
    ("frames", 'multipart/related; type="image/jpeg"; transfer-syntax=*', OCTET_ANY, False),
    ("frames", "image/jls", OCTET_ANY, True),
    ("rendered", "image/png", "image/png", False),
    ("rendered", "*/*", "image/jpeg", False),
    ("json", "application/dicom+json", "application/dicom+json", False),
    ("json", "application/json", "application/dicom+json", False),
])
def test_choices(kind, accept, upstream, unwrap):
    choice = choose(kind, accept, frames=1)
    assert (choice.upstream_accept, choice.unwrap) == (upstream, unwrap)


@pytest.mark.parametrize("kind, accept", [
    ("instance", "image/jpeg"), ("instance", "text/html"), ("study", "application/dicom"),
    ("rendered", "application/dicom"), ("json", "application/dicom+xml"), ("frames", "text/plain"),
    ("instance", 'multipart/related; type="application/dicom"; transfer-syntax=bogus'),
    ("instance", "application/dicom;q=0"),
])
def test_field_case_dw5_not_acceptable(kind, accept):
    with pytest.raises(NotAcceptable):
        choose(kind, accept, frames=1)


def test_single_part_frames_need_exactly_one_frame():
    with pytest.raises(NotAcceptable):
        choose("frames", "application/octet-stream", frames=3)


def test_q_values_order_the_choice():
    choice = choose("rendered", "image/jpeg;q=0.5, image/png", frames=0)
    assert choice.upstream_accept == "image/png"
    assert [m for m, _, _ in media_ranges("a/b;q=0.1, c/d, e/f;q=0.9")] == ["c/d", "e/f", "a/b"]


def test_parse_media_type_splits_only_outside_quotes():
    assert parse_media_type('multipart/related; type="image/jpeg; transfer-syntax=1.2"; boundary=x') == (
        "multipart/related", {"type": "image/jpeg; transfer-syntax=1.2", "boundary": "x"})


def _split_by_characters(text, separator):
    """Reference: the character-by-character reading of RFC 9110 quoted strings."""
    parts, current, quoted, escaped = [], "", False, False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\" and quoted:
            current, escaped = current + char, True
        elif char == '"':
            current, quoted = current + char, not quoted
        elif char == separator and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


@pytest.mark.parametrize("text, pieces", [
    ('a; b="x;y"; c', ["a", ' b="x;y"', " c"]),
    ('a; b="x\\";y"; c', ["a", ' b="x\\";y"', " c"]),  # escaped quote stays inside
    ('a; b="unclosed; c', ["a", ' b="unclosed; c']),
    ('a; b="ends in \\', ["a", ' b="ends in \\']),
    ('a\\;b', ["a\\", "b"]),  # a backslash escapes only inside quotes
    ('"";;""', ['""', "", '""']),
])
def test_split_quoted_cases(text, pieces):
    from fhir_facade.dicomweb.negotiation import _split_quoted
    assert _split_quoted(text, ";") == pieces == _split_by_characters(text, ";")


def test_split_quoted_agrees_with_the_character_reading_on_random_text():
    import random
    from fhir_facade.dicomweb.negotiation import _split_quoted
    rng = random.Random(5)
    for _ in range(20000):
        text = "".join(rng.choice('ab;,"\\ =\n') for _ in range(rng.randrange(0, 24)))
        for separator in ";,":
            assert _split_quoted(text, separator) == _split_by_characters(text, separator), text


def test_as_stored_choices_name_the_type_to_check():
    from fhir_facade.dicomweb.negotiation import choices
    jls, octet = choices("frames", 'image/jls, multipart/related; type="application/octet-stream"; q=0.5', frames=1)
    assert (jls.stored_type, jls.transfer_syntax, jls.unwrap) == ("image/jls", "1.2.840.10008.1.2.4.80", True)
    assert octet.stored_type is None and octet.upstream_accept == 'multipart/related; type="application/octet-stream"'


def test_octet_stream_as_stored_falls_back_to_explicit_vr_little_endian():
    """Big Endian or Deflated frames cannot be sent as stored; "*" admits the uncompressed default next."""
    found = choices("frames", 'multipart/related; type="application/octet-stream"; transfer-syntax=*', frames=1)
    assert [(c.upstream_accept, c.transfer_syntax) for c in found] == [
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', "*"),
        ('multipart/related; type="application/octet-stream"', None)]
    [stored, native] = choices("frames", "application/octet-stream; transfer-syntax=*", frames=1)
    assert stored.unwrap and native.unwrap and native.transfer_syntax is None


@pytest.mark.parametrize("kind, accept, target", [
    ("study", None, "1.2.840.10008.1.2.1"),
    ("series", 'multipart/related; type="application/dicom"', "1.2.840.10008.1.2.1"),
    ("study", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2', "1.2.840.10008.1.2"),
    ("instance", "application/dicom; transfer-syntax=1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.1.99"),
])
def test_uncompressed_instances_are_transcoded_by_the_facade(kind, accept, target):
    """PS3.18 Section 8.7.3.5.2: no transfer-syntax means Explicit VR Little Endian; the facade asks
    for the instances as stored and writes that (or another uncompressed syntax asked for) itself."""
    choice = choose(kind, accept)
    assert (choice.upstream_accept, choice.transcode, choice.target_syntax) == (DICOM_ANY, True, target)


@pytest.mark.parametrize("accept", [
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.2',
])
def test_as_stored_and_compressed_targets_are_left_to_the_pacs(accept):
    choice = choose("study", accept)
    assert not choice.transcode
    assert choice.upstream_accept == accept
